""" "Not quite?": the core's correction use case, its signed refs, the console's /fix and
`moodbot stats`, with the real engine and a real SQLite file."""

from __future__ import annotations

import io
import json
import logging
import random
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.chart import render_mood_chart
from bot.console import ConsoleChat
from bot.core import MoodService, Reply, Sender
from bot.correction import MAX_DATA_BYTES, MORE, RefSigner, button_data, parse_button
from bot.history import AsyncHistory, HistoryStore, MoodEntry
from bot.music import MusicRecommender
from ml.engine import EmotionEngine
from ml.labels import EMOTIONS

pytestmark = pytest.mark.slow

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ALICE = Sender(platform="telegram", chat_id="group-1", user_id="alice")
BOB = Sender(platform="telegram", chat_id="group-1", user_id="bob")
MINJI = Sender(platform="telegram", chat_id="group-1", user_id="minji", language="ko")


class Clock:
    """A clock the test moves on."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Counted:
    """An observer that remembers the corrections it was told about."""

    def __init__(self) -> None:
        self.corrections: list[tuple[str, str, str]] = []

    def photo_done(self, who: Sender, use: str, reply: Reply, seconds: float) -> None:
        pass

    def correction_done(self, who: Sender, predicted: str, corrected: str) -> None:
        self.corrections.append((who.platform, predicted, corrected))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def counted() -> Counted:
    return Counted()


@pytest.fixture
def service(
    engine: EmotionEngine, history: AsyncHistory, clock: Clock, counted: Counted
) -> MoodService:
    music = MusicRecommender(None, rng=random.Random(3))
    return MoodService(engine, music, history, clock=clock, observer=counted)


async def moods(history: AsyncHistory, user: str = "alice") -> list[tuple[str, str | None]]:
    return [(e.emotion, e.predicted) for e in await history.recent("telegram", user, limit=50)]


# --- the signed refs ------------------------------------------------------------------------------


def test_refs_are_bound_to_user_platform_and_secret() -> None:
    signer = RefSigner(b"k" * 32)
    ref = signer.sign("telegram", "alice", 12345, T0)
    verified = signer.verify("telegram", "alice", ref)
    assert verified is not None and (verified.row_id, verified.issued_at) == (12345, T0)
    assert signer.verify("telegram", "bob", ref) is None
    assert signer.verify("discord", "alice", ref) is None
    assert RefSigner(b"x" * 32).verify("telegram", "alice", ref) is None
    row, minute, mac = ref.split(".")
    tampered = [
        f"{row}1.{minute}.{mac}",  # another row
        f"{row}.{int(minute, 36) + 1:x}.{mac}",  # another time
        f"{row}.{minute}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",
        f"{row.upper()}X.{minute}.{mac}",
        f"{row}.{minute}",
        "",
        "..",
        "💥.1.abc",
        "9" * 40 + f".{minute}.{mac}",
    ]
    assert [signer.verify("telegram", "alice", t) for t in tampered] == [None] * len(tampered)


def test_button_data_fits_telegram_and_parses_back() -> None:
    ref = RefSigner().sign("telegram", "9" * 19, 10**12, T0 + timedelta(days=365 * 50))
    for choice in (*EMOTIONS, MORE):
        data = button_data(ref, choice)
        assert len(data.encode()) <= MAX_DATA_BYTES
        assert parse_button(data) == (ref, choice)
    for bad in ("", "fix", "fix::sad", "fix:abc:", "forget:yes:1", "fix:a:b:c", "fix:" + "a" * 70):
        assert parse_button(bad) is None


# --- correcting a stored analysis -------------------------------------------------------------


async def test_a_selfie_offers_the_next_likely_emotions(
    service: MoodService, astronaut_jpeg: bytes
) -> None:
    reply = await service.analyze_selfie(ALICE, astronaut_jpeg)
    offer = reply.correction
    assert offer is not None and offer.current == "happy"
    assert reply.analysis and reply.analysis.primary
    ranked = [e for e, _ in reply.analysis.primary.ranked() if e != "happy"]
    assert offer.suggestions == tuple(ranked[:3])
    assert offer.choices == EMOTIONS


async def test_correction_replaces_the_stored_mood_and_picks_music_again(
    service: MoodService, history: AsyncHistory, counted: Counted, astronaut_jpeg: bytes
) -> None:
    reply = await service.analyze_selfie(ALICE, astronaut_jpeg)
    assert reply.correction
    fixed = await service.correct(ALICE, reply.correction.ref, "sad")
    assert fixed.ok, fixed.text
    assert fixed.text.startswith("Got it: you feel sad 😢. I changed it in your history.")
    assert "\n🎵 sad → gentle, slow songs: valence 0.2-0.4, energy 0.2-0.4." in fixed.text
    assert fixed.links and all(0.2 <= link.valence <= 0.4 for link in fixed.links)
    assert fixed.music and fixed.music.emotion == "sad" and fixed.links
    assert fixed.correction and fixed.correction.current == "sad"
    assert await moods(history) == [("sad", "happy")]  # the same row, never a second one
    assert counted.corrections == [("telegram", "happy", "sad")]
    # /history and the group mix use the corrected mood.
    shown = await service.show_history(ALICE)
    assert "sad 😢 (your correction)" in shown.text and "Last 30 days: sad 😢 × 1" in shown.text
    mix = await service.group_mix(BOB)
    assert mix.text.startswith("Group mix for 1 person: sad 😢 100%.")


async def test_correction_follows_the_persons_mode_and_language(
    service: MoodService, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    await service.set_mode(MINJI, "lift")
    reply = await service.analyze_selfie(MINJI, astronaut_jpeg)
    assert reply.correction
    fixed = await service.correct(MINJI, reply.correction.ref, "슬픔")  # Korean names work too
    assert fixed.text.startswith("알겠어요: 슬픔 😢 기분이군요.")
    # Lift mode: sad's place (0.30, 0.30) a step up in valence.
    assert fixed.music and (fixed.music.emotion, fixed.music.mode) == ("sad", "lift")
    assert (fixed.music.target.valence, fixed.music.target.energy) == (0.55, 0.39)
    assert "🎵 슬픔, 한 걸음 밝게 → " in fixed.text
    assert await moods(history, "minji") == [("sad", "happy")]
    # /history in Korean: the corrected mood, and a chart labelled in Korean.
    shown = await service.show_history(MINJI)
    assert "슬픔 😢 (직접 고침)" in shown.text
    entries = await history.recent("telegram", "minji")
    assert shown.chart_png == render_mood_chart(entries, lang="ko")
    assert shown.chart_png != render_mood_chart(entries)


async def test_corrections_that_may_not_happen_change_nothing(
    service: MoodService,
    history: AsyncHistory,
    clock: Clock,
    counted: Counted,
    astronaut_jpeg: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reply = await service.analyze_selfie(ALICE, astronaut_jpeg)
    assert reply.correction
    ref = reply.correction.ref
    caplog.set_level(logging.INFO, logger="bot.core")

    other = await service.correct(BOB, ref, "sad")  # someone else's button
    forged = await service.correct(ALICE, ref[:-1] + ("x" if ref[-1] != "x" else "y"), "sad")
    unknown = await service.correct(ALICE, ref, "ecstatic")
    more = await service.correct(ALICE, ref, MORE)
    assert [r.error_code for r in (other, forged, unknown, more)] == [
        "correction_invalid",
        "correction_invalid",
        "bad_argument",
        "bad_argument",
    ]
    assert other.text == "That button isn't valid for you, so I changed nothing."
    assert unknown.text.startswith("I don't know that mood. Moods: happy, sad, angry")

    clock.now = T0 + timedelta(hours=24, minutes=1)
    late = await service.correct(ALICE, ref, "sad")
    assert late.error_code == "correction_expired"
    assert late.text == "Moods can be changed only within 24 hours, so I kept this one as it is."

    assert await moods(history) == [("happy", None)]
    assert counted.corrections == []
    # Logged at INFO, without the ref, the user or the chat.
    refusals = [r.getMessage() for r in caplog.records if "Refused a correction" in r.getMessage()]
    assert len(refusals) == 5
    assert not any(ref in m or "alice" in m or "group-1" in m for m in refusals)


async def test_a_forgotten_mood_cannot_be_corrected(
    service: MoodService, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    reply = await service.analyze_selfie(ALICE, astronaut_jpeg)
    assert reply.correction
    await service.forget(ALICE)
    gone = await service.correct(ALICE, reply.correction.ref, "sad")
    assert gone.error_code == "correction_gone"
    assert gone.text == "That mood is no longer in your history, so there is nothing to change."
    assert await moods(history) == []


async def test_correcting_someone_elses_photo_changes_only_the_music(
    service: MoodService, history: AsyncHistory, counted: Counted, astronaut_jpeg: bytes
) -> None:
    # /mood in reply to someone else's photo: answered, stored nowhere.
    reply = await service.analyze_selfie(BOB, astronaut_jpeg, remember=False)
    assert reply.correction
    fixed = await service.correct(BOB, reply.correction.ref, "angry")
    assert fixed.ok
    assert fixed.text.startswith("Got it: angry 😠. Here is music for that (nothing was saved).")
    assert fixed.music and fixed.music.emotion == "angry"
    assert await moods(history, "bob") == [] and await moods(history, "alice") == []
    assert counted.corrections == []
    # The asker's button is still theirs alone.
    assert (await service.correct(ALICE, reply.correction.ref, "sad")).error_code == (
        "correction_invalid"
    )


async def test_correcting_back_to_the_reading_unmarks_the_row(
    service: MoodService, history: AsyncHistory, counted: Counted, astronaut_jpeg: bytes
) -> None:
    reply = await service.analyze_selfie(ALICE, astronaut_jpeg)
    assert reply.correction
    ref = reply.correction.ref
    await service.correct(ALICE, ref, "sad")
    await service.correct(ALICE, ref, "fear")
    await service.correct(ALICE, ref, "happy")
    assert await moods(history) == [("happy", None)]
    assert counted.corrections == [("telegram", "happy", "sad"), ("telegram", "happy", "fear")]


# --- the console ----------------------------------------------------------------------------------


async def test_console_fix_corrects_the_last_analysis(
    service: MoodService, history: AsyncHistory, tmp_path: Path, astronaut_jpeg: bytes
) -> None:
    (tmp_path / "me.jpg").write_bytes(astronaut_jpeg)
    who = Sender(platform="console", chat_id="console", user_id="me")
    out = io.StringIO()
    chat = ConsoleChat(service, sender=who, max_bytes=10**7, chart_dir=tmp_path, out=out)
    lines = io.StringIO(f"/fix sad\n{tmp_path / 'me.jpg'}\n/fix\n/fix meh\n/fix sad\n/history\n")
    await chat.run(lines, interactive=False)
    text = out.getvalue()
    assert "There is nothing to fix yet: send me a selfie first." in text
    assert "Type /fix and the mood you really feel, e.g. /fix sad." in text
    assert "I don't know that mood. Moods: happy, sad" in text
    assert "Got it: you feel sad 😢. I changed it in your history." in text
    assert "sad 😢 (your correction)" in text
    assert [(e.emotion, e.predicted) for e in await history.recent("console", "me")] == [
        ("sad", "happy")
    ]


# --- moodbot stats --------------------------------------------------------------------------------


def known_database(path: Path) -> None:
    """Ten analyses, three corrected; one analysis 40 days old (corrected too)."""
    now = datetime.now(UTC)
    with HistoryStore(path) as store:
        readings = ["happy"] * 5 + ["sad"] * 3 + ["neutral", "angry"]
        rows = [
            store.record(MoodEntry("telegram", "c", f"u{i}", e, 0.8, 1, now - timedelta(hours=i)))
            for i, e in enumerate(readings)
        ]
        old = store.record(MoodEntry("discord", "c", "x", "fear", 0.5, 1, now - timedelta(days=40)))
        day = now - timedelta(days=1)
        for row, user, chosen in [(rows[0], "u0", "sad"), (rows[1], "u1", "sad")]:
            store.correct_mood(row, "telegram", user, chosen, since=day, at=now)
        store.correct_mood(rows[5], "telegram", "u5", "neutral", since=day, at=now)
    # A correction made back then (the 24-hour window applies when it is made, not now).
    conn = sqlite3.connect(path)
    conn.execute("UPDATE moods SET emotion = 'surprise', predicted = 'fear' WHERE id = ?", [old])
    conn.commit()
    conn.close()


def stats_cli(*args: str, db: Path) -> subprocess.CompletedProcess:
    moodbot = str(Path(sys.executable).with_name("moodbot"))
    return subprocess.run(
        [moodbot, "stats", "--db", str(db), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_stats_cli_reports_analyses_corrections_and_the_matrix(tmp_path: Path) -> None:
    db = tmp_path / "moods.db"
    known_database(db)
    recent = stats_cli("--days", "30", "--json", db=db)
    assert recent.returncode == 0, recent.stderr
    assert json.loads(recent.stdout) == {
        "days": 30,
        "analyses": 10,
        "corrections": 3,
        "correction_rate": 0.3,
        "predicted": {"happy": 5, "sad": 3, "angry": 1, "neutral": 1},
        "matrix": {"happy": {"sad": 2}, "sad": {"neutral": 1}},
    }
    every = stats_cli(db=db)
    assert every.returncode == 0, every.stderr
    assert every.stdout.splitlines() == [
        "Analyses (all time): 11",
        "Corrections: 4 (36.4%)",
        "",
        "Predicted (rows) vs corrected (columns):",
        "read \\ chosen  neutral  sad  surprise",
        "fear                 ·    ·         1",
        "happy                ·    2         ·",
        "sad                  1    ·         ·",
    ]


def test_stats_cli_without_a_database_says_so(tmp_path: Path) -> None:
    result = stats_cli(db=tmp_path / "none.db")
    assert result.returncode == 1
    assert "no history database at" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "none.db").exists()


def test_privacy_says_that_corrections_are_stored(service: MoodService) -> None:
    english = service.privacy(ALICE).text
    assert "When you correct a mood with the buttons, I store your choice" in english
    assert "버튼으로 감정을 고치면" in service.privacy(MINJI).text
    privacy_doc = (Path(__file__).resolve().parents[1] / "docs" / "PRIVACY.md").read_text()
    assert "`predicted`" in privacy_doc and "`corrected_at`" in privacy_doc
