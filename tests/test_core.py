"""The core use cases with the real engine, a real SQLite file and offline music."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.core import MoodService, Sender, blend_moods
from bot.history import AsyncHistory, HistoryStore, MoodEntry
from bot.moodspace import Target
from bot.music import MusicRecommender
from ml.engine import EmotionEngine, EngineConfig

pytestmark = pytest.mark.slow

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ALICE = Sender(platform="telegram", chat_id="group-1", user_id="alice")
BOB = Sender(platform="telegram", chat_id="group-1", user_id="bob")
MINJI = Sender(platform="telegram", chat_id="group-1", user_id="minji", language="ko")


@pytest.fixture
def service(engine: EmotionEngine, history: AsyncHistory) -> MoodService:
    music = MusicRecommender(None, rng=random.Random(3))
    return MoodService(engine, music, history, clock=lambda: NOW)


def entry(user: str, emotion: str, confidence: float, minutes_ago: int, chat: str = "group-1"):
    return MoodEntry(
        platform="telegram",
        chat_id=chat,
        user_id=user,
        emotion=emotion,
        confidence=confidence,
        face_count=1,
        created_at=NOW - timedelta(minutes=minutes_ago),
    )


async def test_selfie_gets_emotion_music_and_one_history_row(
    service: MoodService, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    reply = await service.analyze_selfie(ALICE, astronaut_jpeg)
    assert reply.ok and reply.error_code is None
    assert reply.text.startswith("You look happy 😄 (")
    assert "\n🎵 happy → bright, upbeat songs: valence 0.7-0.9, energy 0.6-0.8." in reply.text
    assert len(reply.links) == 5 and all(
        link.kind == "track" and link.url.startswith("https://open.spotify.com/track/")
        for link in reply.links
    )
    assert all(0.7 <= link.valence <= 0.9 and 0.6 <= link.energy <= 0.8 for link in reply.links)
    assert reply.music and reply.music.source == "catalogue"
    rows = await history.recent("telegram", "alice")
    assert [(r.emotion, r.face_count, r.created_at) for r in rows] == [("happy", 1, NOW)]


async def test_korean_user_gets_korean_reply(service: MoodService, astronaut_jpeg: bytes) -> None:
    reply = await service.analyze_selfie(MINJI, astronaut_jpeg)
    assert reply.text.startswith("기쁨 😄 표정이에요")
    assert (
        "🎵 기쁨 → 밝고 신나는 노래: 밝기(valence) 0.7-0.9, 에너지(energy) 0.6-0.8." in reply.text
    )


@pytest.mark.parametrize(
    ("photo", "code", "text"),
    [
        ("no_face_png", "no_face", "can't recognize a face"),
        (b"not an image", "unreadable", "couldn't read that file"),
        (b"", "unreadable", "couldn't read that file"),
    ],
)
async def test_failed_analysis_writes_nothing(
    service: MoodService, history: AsyncHistory, request, photo, code: str, text: str
) -> None:
    data = request.getfixturevalue(photo) if isinstance(photo, str) else photo
    reply = await service.analyze_selfie(ALICE, data)
    assert (reply.ok, reply.error_code, reply.links) == (False, code, ())
    assert text in reply.text
    assert await history.recent("telegram", "alice") == []


async def test_group_photo_lists_every_face(service: MoodService, group_photo: bytes) -> None:
    reply = await service.analyze_selfie(ALICE, group_photo)
    assert reply.text.startswith("I see 2 faces: happy 😄")
    assert reply.analysis and len(reply.analysis.faces) == 2


async def test_unsure_reply_names_the_top_two(
    engine: EmotionEngine, history: AsyncHistory, grace_hopper_jpeg: bytes
) -> None:
    doubtful = EmotionEngine(engine.model, engine.detector, EngineConfig(unsure_below=1.0))
    doubtful.start()
    try:
        service = MoodService(doubtful, MusicRecommender(None), history, clock=lambda: NOW)
        reply = await service.analyze_selfie(ALICE, grace_hopper_jpeg)
    finally:
        doubtful.close()
    face = reply.analysis.faces[0]
    (first, _), (second, _) = face.ranked()[:2]
    assert reply.text.startswith(f"I'm not sure: maybe {first}")
    assert f" or {second}" in reply.text


async def test_history_lists_recent_moods_with_a_chart(
    service: MoodService, history: AsyncHistory
) -> None:
    await history.record(entry("alice", "sad", 0.61, minutes_ago=90))
    await history.record(entry("alice", "happy", 0.93, minutes_ago=5))
    await history.record(entry("bob", "angry", 0.80, minutes_ago=5))
    reply = await service.show_history(ALICE)
    assert reply.text.splitlines() == [
        "Your last 2 moods:",
        "2026-11-23 11:55 UTC — happy 😄 93%",
        "2026-11-23 10:30 UTC — sad 😢 61%",
        "Last 30 days: happy 😄 × 1, sad 😢 × 1",
    ]
    assert reply.chart_png and reply.chart_png.startswith(b"\x89PNG")


async def test_empty_history_invites_a_selfie(service: MoodService) -> None:
    reply = await service.show_history(BOB)
    assert (reply.text, reply.chart_png) == ("No moods yet. Send me a selfie!", None)


async def test_group_mix_blends_members_latest_moods(
    service: MoodService, history: AsyncHistory
) -> None:
    await history.record(entry("alice", "sad", 0.9, minutes_ago=600))  # replaced by her newer one
    await history.record(entry("alice", "happy", 0.9, minutes_ago=10))
    await history.record(entry("bob", "happy", 0.7, minutes_ago=20))
    await history.record(entry("minji", "sad", 0.8, minutes_ago=30))
    await history.record(entry("old", "angry", 0.9, minutes_ago=60 * 30))  # outside the window
    await history.record(entry("elsewhere", "angry", 0.9, minutes_ago=5, chat="other"))
    reply = await service.group_mix(ALICE)
    assert reply.text.splitlines()[0] == "Group mix for 3 people: happy 😄 67%, sad 😢 33%."
    # The places blended by confidence x recency: happy (0.8, 0.7) two thirds, sad (0.3, 0.3).
    # Weights 0.9 x 0.98 + 0.7 x 0.96 for happy (10 and 20 min ago), 0.8 x 0.94 for sad.
    assert reply.music and reply.music.target == Target(0.637, 0.569)
    assert reply.text.splitlines()[1] == (
        "🎵 Your moods blended → light, easy-going songs: valence 0.54-0.74, energy 0.47-0.67."
    )
    assert all(abs(link.valence - 0.637) <= 0.1 for link in reply.links)


async def test_group_mix_without_recent_moods(service: MoodService) -> None:
    reply = await service.group_mix(ALICE)
    assert reply.error_code == "group_empty"
    assert "last 24 hours" in reply.text


async def test_group_photo_mix_stores_nothing(
    service: MoodService, history: AsyncHistory, group_photo: bytes
) -> None:
    reply = await service.group_photo_mix(ALICE, group_photo)
    assert reply.text.startswith("Group photo with 2 people: ")
    assert await history.recent("telegram", "alice") == []


async def test_forget_deletes_only_that_user(service: MoodService, history: AsyncHistory) -> None:
    await history.record(entry("alice", "happy", 0.9, minutes_ago=1))
    await history.record(entry("alice", "sad", 0.9, minutes_ago=2, chat="dm-alice"))
    await history.record(entry("bob", "sad", 0.9, minutes_ago=3))
    reply = await service.forget(ALICE)
    assert reply.text.startswith("Done: I deleted 2 mood records")
    assert await history.recent("telegram", "alice") == []
    assert len(await history.recent("telegram", "bob")) == 1


async def test_mode_and_genre_shape_the_music(
    service: MoodService, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    assert (await service.set_mode(ALICE, "calm")).text == "Music mode set to calm."
    genre_set = await service.set_genre(ALICE, "  케이팝 ")
    assert genre_set.text == "From now on I'll pick k-pop songs."
    reply = await service.analyze_selfie(ALICE, astronaut_jpeg)
    assert reply.music and (reply.music.mode, reply.music.genre) == ("calm", "k-pop")
    why = "🎵 happy, calmed a step → soft, relaxed k-pop songs: valence 0.6-0.8, energy 0.3-0.5."
    assert why in reply.text
    assert all(link.genre == "k-pop" and link.energy <= 0.5 for link in reply.links)
    assert (await service.set_genre(ALICE, "off")).text.startswith("No genre any more")
    assert (await history.get_preferences("telegram", "alice")).genre is None


async def test_bad_preferences_are_refused(service: MoodService) -> None:
    assert (await service.set_mode(ALICE, "loud")).error_code == "bad_argument"
    assert (await service.set_genre(ALICE, "x" * 41)).error_code == "bad_argument"
    assert (await service.set_genre(ALICE, "   ")).error_code == "bad_argument"


async def test_unknown_genre_gets_the_closest_known_ones(
    service: MoodService, history: AsyncHistory
) -> None:
    reply = await service.set_genre(ALICE, "kpopp")
    assert (reply.error_code, reply.text) == (
        "bad_argument",
        "I don't know the genre “kpopp”. Closest: k-pop, pop, j-pop.",
    )
    far = await service.set_genre(MINJI, "zzzqqq")
    assert far.text.startswith("“zzzqqq” 장르는 몰라요. k-pop, j-pop")
    assert (await history.get_preferences("telegram", "alice")).genre is None


async def test_a_thin_genre_widens_and_says_so(service: MoodService, history: AsyncHistory) -> None:
    await history.set_preferences("telegram", "alice", genre="classical")
    music = await service.recommend(ALICE, "angry")
    assert music.widened and music.genre == "classical"
    assert service._why(ALICE, music).endswith(
        " Few classical songs sound just like that, so some are a little further off."
    )


async def test_a_genre_saved_before_genres_were_checked_is_left_out(
    service: MoodService, history: AsyncHistory
) -> None:
    await history.set_preferences("telegram", "alice", genre="lo-fi beats to study to")
    music = await service.recommend(ALICE, "sad")
    assert music.genre is None and len(music.track_ids) == 5


async def test_nobody_gets_a_track_twice_within_their_memory(
    engine: EmotionEngine, history: AsyncHistory
) -> None:
    service = MoodService(engine, MusicRecommender(None), history, music_memory=10)
    first = await service.recommend(ALICE, "sad")
    second = await service.recommend(ALICE, "sad")
    third = await service.recommend(ALICE, "sad")
    assert not set(first.track_ids) & set(second.track_ids)
    # Ten remembered: the first five may come back once ten others came after them.
    assert not set(second.track_ids) & set(third.track_ids)
    assert await history.recent_track_ids("telegram", "alice", 10) == [
        *reversed(third.track_ids),
        *reversed(second.track_ids),
    ]
    # Bob has his own memory; an answer that is not remembered leaves none.
    await service.recommend(BOB, "sad", remember=False)
    assert await history.recent_track_ids("telegram", "bob", 10) == []


async def test_forget_clears_the_recommendation_memory(
    service: MoodService, history: AsyncHistory
) -> None:
    await service.recommend(ALICE, "happy")
    assert len(await history.recent_track_ids("telegram", "alice", 50)) == 5
    await service.forget(ALICE)
    assert await history.recent_track_ids("telegram", "alice", 50) == []


async def test_analysis_still_answers_when_history_is_read_only(
    engine: EmotionEngine, tmp_path: Path, astronaut_jpeg: bytes
) -> None:
    HistoryStore(tmp_path / "ro.db").close()  # create the schema first
    history = await AsyncHistory.open(tmp_path / "ro.db", read_only=True)
    try:
        service = MoodService(engine, MusicRecommender(None), history, clock=lambda: NOW)
        reply = await service.analyze_selfie(ALICE, astronaut_jpeg)
    finally:
        await history.aclose()
    assert reply.ok and reply.text.startswith("You look happy")
    assert reply.text.endswith("(I couldn't save this to your history just now.)")


def test_blend_weighs_by_confidence() -> None:
    blend = blend_moods([("happy", 0.9), ("sad", 0.3), ("happy", 0.6)])
    assert blend.dominant == "happy" and blend.people == 3
    assert blend.shares == pytest.approx({"happy": 0.8333, "sad": 0.1667}, abs=1e-3)
    with pytest.raises(ValueError, match="at least one mood"):
        blend_moods([])


@pytest.mark.parametrize(
    ("days", "who", "promise"),
    [
        (30, ALICE, "Moods older than 30 days are deleted automatically."),
        (0, ALICE, "Moods are kept until you delete them."),
        (7, MINJI, "7일이 지난 감정 기록은 자동으로 지워져요."),
    ],
)
def test_privacy_says_how_long_moods_are_kept(
    engine: EmotionEngine, history: AsyncHistory, days: int, who: Sender, promise: str
) -> None:
    service = MoodService(engine, MusicRecommender(None), history, retention_days=days)
    assert promise in service.privacy(who).text
