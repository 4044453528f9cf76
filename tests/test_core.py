"""The core use cases with the real engine, a real SQLite file and offline music."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.core import MoodService, Sender, blend_moods
from bot.history import AsyncHistory, HistoryStore, MoodEntry
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
    assert "For a happy mood, searched with" in reply.text
    assert reply.links and all(
        link.url.startswith("https://open.spotify.com/search/") for link in reply.links
    )
    assert reply.music and reply.music.source == "search-links"
    rows = await history.recent("telegram", "alice")
    assert [(r.emotion, r.face_count, r.created_at) for r in rows] == [("happy", 1, NOW)]


async def test_korean_user_gets_korean_reply(service: MoodService, astronaut_jpeg: bytes) -> None:
    reply = await service.analyze_selfie(MINJI, astronaut_jpeg)
    assert reply.text.startswith("기쁨 😄 표정이에요")


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
    assert reply.music and reply.music.music_mood == "happy"


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
    assert (
        await service.set_genre(ALICE, "  k-pop ")
    ).text == "I'll add “k-pop” to your music searches."
    reply = await service.analyze_selfie(ALICE, astronaut_jpeg)
    assert reply.music and (reply.music.mode, reply.music.music_mood) == ("calm", "calm")
    assert reply.music.genre == "k-pop"
    assert "in calm mode I picked calm music" in reply.text
    assert (await service.set_genre(ALICE, "off")).text.startswith("No genre any more")
    assert (await history.get_preferences("telegram", "alice")).genre is None


async def test_bad_preferences_are_refused(service: MoodService) -> None:
    assert (await service.set_mode(ALICE, "loud")).error_code == "bad_argument"
    assert (await service.set_genre(ALICE, "x" * 41)).error_code == "bad_argument"
    assert (await service.set_genre(ALICE, "   ")).error_code == "bad_argument"


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
