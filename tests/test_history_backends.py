"""The same history behaviour on both backends: a SQLite file and a real PostgreSQL server.

Every test here takes `history` (one backend per parametrization) and goes through the async
`History` interface the core uses. SQLite-only matters (WAL, file modes, threads) stay in
tests/test_history.py; PostgreSQL-only ones (migrations under a lock, retention lock, outages)
in tests/test_history_pg.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.history import History, MoodEntry, Preferences, open_history

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def mood(
    emotion: str = "happy",
    *,
    minutes: int = 0,
    user_id: str = "u1",
    chat_id: str = "c1",
    platform: str = "telegram",
) -> MoodEntry:
    return MoodEntry(platform, chat_id, user_id, emotion, 0.9, 1, T0 + timedelta(minutes=minutes))


@pytest.fixture(params=["sqlite", "postgres"])
async def history(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[History]:
    """The history on a fresh SQLite file, then on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        target = str(tmp_path / "moods.db")
    else:
        target = request.getfixturevalue("postgres_url")
    history = await open_history(target)
    yield history
    await history.aclose()


async def test_record_then_read_back_exactly(history: History) -> None:
    berlin = timezone(timedelta(hours=2))
    entry = MoodEntry(
        "discord", "g1", "42", "sad", 0.25, 2, datetime(2026, 5, 1, 14, tzinfo=berlin)
    )
    first = await history.record(entry)
    assert await history.record(mood()) > first
    [back] = await history.recent("discord", "42")
    assert back == MoodEntry(
        "discord", "g1", "42", "sad", 0.25, 2, datetime(2026, 5, 1, 12, tzinfo=UTC)
    )
    assert back.created_at.tzinfo == UTC


async def test_recent_newest_first_per_user_and_capped(history: History) -> None:
    for emotion, minutes in [("sad", 10), ("happy", 30), ("angry", 20)]:
        await history.record(mood(emotion, minutes=minutes))
    await history.record(mood("fear", minutes=40, user_id="u2"))
    await history.record(mood("calm", minutes=50, platform="discord"))
    assert [e.emotion for e in await history.recent("telegram", "u1")] == ["happy", "angry", "sad"]
    assert [e.emotion for e in await history.recent("telegram", "u1", limit=1)] == ["happy"]
    assert await history.recent("telegram", "nobody") == []
    for minute in range(101):
        await history.record(mood(minutes=100 + minute, user_id="u3"))
    assert len(await history.recent("telegram", "u3", limit=1000)) == 100


async def test_same_instant_keeps_insertion_order(history: History) -> None:
    await history.record(mood("sad"))
    await history.record(mood("happy"))
    assert [e.emotion for e in await history.recent("telegram", "u1")] == ["happy", "sad"]


@pytest.mark.parametrize("limit", [0, -3, 2.5, True])
async def test_bad_limit_is_refused(history: History, limit: object) -> None:
    with pytest.raises(ValueError, match=f"got {limit!r}"):
        await history.recent("telegram", "u1", limit=limit)  # type: ignore[arg-type]


async def test_bad_entries_are_refused_and_nothing_is_stored(history: History) -> None:
    for bad in [
        vars(mood()) | {"confidence": float("nan")},
        vars(mood()) | {"face_count": 0},
        vars(mood()) | {"created_at": datetime(2026, 5, 1)},
        vars(mood()) | {"platform": "Telegram"},
    ]:
        with pytest.raises(ValueError):
            await history.record(MoodEntry(**bad))
    assert await history.recent("telegram", "u1") == []
    with pytest.raises(ValueError, match="since must be a timezone-aware"):
        await history.mood_counts("telegram", "u1", since=datetime(2026, 5, 1))


async def test_mood_counts_by_count_then_name_with_inclusive_start(history: History) -> None:
    for emotion, minutes in [
        ("sad", 0), ("happy", 11), ("angry", 12), ("happy", 13), ("sad", 14), ("sad", 16),
        ("fear", -60),
    ]:  # fmt: skip
        await history.record(mood(emotion, minutes=minutes))
    await history.record(mood("calm", minutes=20, user_id="u2"))
    counts = await history.mood_counts("telegram", "u1", since=T0)
    assert list(counts.items()) == [("sad", 3), ("happy", 2), ("angry", 1)]
    later = T0 + timedelta(microseconds=1)
    assert (await history.mood_counts("telegram", "u1", since=later))["sad"] == 2
    assert await history.mood_counts("telegram", "u1", since=T0 + timedelta(days=1)) == {}


async def test_group_window_one_latest_entry_per_member(history: History) -> None:
    await history.record(mood("sad", minutes=1, user_id="ann"))
    await history.record(mood("happy", minutes=5, user_id="ann"))
    await history.record(mood("angry", minutes=3, user_id="bob"))
    await history.record(mood("calm", minutes=-90, user_id="cyd"))  # outside the window
    await history.record(mood("fear", minutes=9, user_id="ann", chat_id="c2"))  # another chat
    latest = await history.chat_latest_moods("telegram", "c1", since=T0 - timedelta(hours=1))
    assert latest == {
        "ann": mood("happy", minutes=5, user_id="ann"),
        "bob": mood("angry", minutes=3, user_id="bob"),
    }
    assert list(latest) == ["ann", "bob"]  # newest first


async def test_forget_removes_moods_and_preferences_on_that_platform(history: History) -> None:
    await history.record(mood("sad", user_id="ann", chat_id="c1"))
    await history.record(mood("happy", user_id="ann", chat_id="c2"))
    await history.record(mood("calm", user_id="bob"))
    await history.record(mood("fear", user_id="ann", platform="discord"))
    await history.set_preferences("telegram", "ann", mode="lift", genre="jazz")
    await history.set_preferences("discord", "ann", mode="calm")
    assert await history.forget_user("telegram", "ann") == 2
    assert await history.recent("telegram", "ann") == []
    assert [e.emotion for e in await history.recent("telegram", "bob")] == ["calm"]
    assert [e.emotion for e in await history.recent("discord", "ann")] == ["fear"]
    assert await history.get_preferences("telegram", "ann") == Preferences()
    assert await history.get_preferences("discord", "ann") == Preferences("calm", None)
    assert await history.forget_user("telegram", "ann") == 0


async def test_retention_deletes_only_older_entries(history: History) -> None:
    for minutes in (-120, -61, -60, 0, 30):
        await history.record(mood(minutes=minutes))
    assert await history.delete_older_than(T0 - timedelta(minutes=60)) == 2
    remaining = [e.created_at for e in await history.recent("telegram", "u1")]
    assert remaining == [T0 + timedelta(minutes=30), T0, T0 - timedelta(minutes=60)]


async def test_preferences_default_then_partial_updates(history: History) -> None:
    assert await history.get_preferences("telegram", "u1") == Preferences("match", None)
    assert await history.set_preferences("telegram", "u1", genre=" k-pop ") == Preferences(
        "match", "k-pop"
    )
    assert await history.set_preferences("telegram", "u1", mode="lift") == Preferences(
        "lift", "k-pop"
    )
    assert await history.set_preferences("telegram", "u1", genre=None) == Preferences("lift")
    assert await history.set_preferences("telegram", "u1") == Preferences("lift")
    assert await history.get_preferences("telegram", "u1") == Preferences("lift")
    with pytest.raises(ValueError, match="mode must be one of"):
        await history.set_preferences("telegram", "u1", mode="happy")
    assert await history.get_preferences("discord", "u1") == Preferences()


async def test_concurrent_preference_changes_lose_nothing(history: History) -> None:
    # One coroutine sets the mode while another sets the genre: both must survive.
    await asyncio.gather(
        *(history.set_preferences("telegram", f"u{i}", mode="calm") for i in range(10)),
        *(history.set_preferences("telegram", f"u{i}", genre="jazz") for i in range(10)),
    )
    for i in range(10):
        assert await history.get_preferences("telegram", f"u{i}") == Preferences("calm", "jazz")


async def test_concurrent_records_are_all_kept(history: History) -> None:
    await asyncio.gather(*(history.record(mood(minutes=i)) for i in range(40)))
    assert len(await history.recent("telegram", "u1", limit=100)) == 40


async def test_probe_says_the_database_takes_writes(history: History) -> None:
    assert await history.probe() is None
    assert history.location


# --- corrections (issue 21) ----------------------------------------------------------------------

LATER = T0 + timedelta(hours=1)
DAY_BEFORE = T0 - timedelta(hours=24)


async def test_correct_mood_in_place_keeps_the_reading_and_back_clears_it(
    history: History,
) -> None:
    row = await history.record(mood("happy"))
    before = await history.correct_mood(row, "telegram", "u1", "sad", since=DAY_BEFORE, at=LATER)
    assert before == mood("happy") and before.id == row
    (entry,) = await history.recent("telegram", "u1")
    assert (entry.emotion, entry.predicted, entry.corrected, entry.id) == (
        "sad",
        "happy",
        True,
        row,
    )
    await history.correct_mood(row, "telegram", "u1", "angry", since=DAY_BEFORE, at=LATER)
    (entry,) = await history.recent("telegram", "u1")
    assert (entry.emotion, entry.predicted) == ("angry", "happy")
    await history.correct_mood(row, "telegram", "u1", "happy", since=DAY_BEFORE, at=LATER)
    (entry,) = await history.recent("telegram", "u1")
    assert (entry.emotion, entry.predicted, entry.corrected) == ("happy", None, False)


@pytest.mark.parametrize(
    ("row_offset", "platform", "user_id", "since"),
    [
        (0, "telegram", "someone-else", DAY_BEFORE),
        (0, "discord", "u1", DAY_BEFORE),
        (1, "telegram", "u1", DAY_BEFORE),  # no such row
        (0, "telegram", "u1", T0 + timedelta(minutes=1)),  # too old
    ],
    ids=["other-user", "other-platform", "missing-row", "too-old"],
)
async def test_correct_mood_changes_nothing_it_may_not(
    history: History, row_offset: int, platform: str, user_id: str, since: datetime
) -> None:
    row = await history.record(mood("happy"))
    changed = await history.correct_mood(
        row + row_offset, platform, user_id, "sad", since=since, at=LATER
    )
    assert changed is None
    (entry,) = await history.recent("telegram", "u1")
    assert (entry.emotion, entry.predicted) == ("happy", None)


async def test_correction_stats_count_analyses_corrections_and_the_matrix(
    history: History,
) -> None:
    emotions = ["happy"] * 4 + ["sad"] * 2
    rows = [await history.record(mood(e, minutes=i)) for i, e in enumerate(emotions)]
    await history.record(mood("neutral", minutes=-3000))  # before the window
    for row, chosen in zip(rows[:3] + rows[4:5], ["sad", "sad", "neutral", "angry"], strict=True):
        await history.correct_mood(row, "telegram", "u1", chosen, since=DAY_BEFORE, at=LATER)
    stats = await history.correction_stats(since=T0 - timedelta(hours=1))
    assert (stats.analyses, stats.corrections) == (6, 4)
    assert stats.predicted == {"happy": 4, "sad": 2}
    assert stats.matrix == {("happy", "sad"): 2, ("happy", "neutral"): 1, ("sad", "angry"): 1}
    assert (await history.correction_stats()).analyses == 7


async def test_a_message_processed_twice_is_stored_once(history: History) -> None:
    from dataclasses import replace

    first = replace(mood("happy"), request_id="telegram:7")
    again = replace(mood("sad", minutes=1), request_id="telegram:7")  # a second analysis
    row = await history.record(first)
    assert await history.record(again) == row
    assert [e.emotion for e in await history.recent("telegram", "u1")] == ["happy"]
    # Moods without a request id never clash.
    await history.record(mood())
    await history.record(mood())
    assert len(await history.recent("telegram", "u1")) == 3


def test_both_backends_have_every_method_of_the_interface() -> None:
    """A method added to `History` must exist on both backends (PostgreSQL too)."""
    from bot.history import AsyncHistory
    from bot.history_pg import PostgresHistory

    members = {name for name in vars(History) if not name.startswith("_")}
    assert {"record", "location", "correct_mood", "probe"} <= members
    for backend in (AsyncHistory, PostgresHistory):
        missing = sorted(name for name in members if not hasattr(backend, name))
        assert missing == [], f"{backend.__name__} lacks {missing}"


# --- the tracks offered, against repeats -----------------------------------------------------


async def test_recent_track_ids_are_the_latest_n_of_that_user(history: History) -> None:
    await history.remember_tracks("telegram", "u1", ["a", "b"], T0)
    await history.remember_tracks("telegram", "u1", ["c"], T0 + timedelta(minutes=1))
    await history.remember_tracks("telegram", "u2", ["x"], T0 + timedelta(minutes=2))
    await history.remember_tracks("discord", "u1", ["y"], T0 + timedelta(minutes=2))

    assert await history.recent_track_ids("telegram", "u1", 10) == ["c", "b", "a"]
    assert await history.recent_track_ids("telegram", "u1", 2) == ["c", "b"]
    assert await history.recent_track_ids("telegram", "u1", 0) == []
    assert await history.recent_track_ids("telegram", "nobody", 5) == []


async def test_forget_and_retention_delete_the_track_memory(history: History) -> None:
    await history.remember_tracks("telegram", "u1", ["old"], T0 - timedelta(days=2))
    await history.remember_tracks("telegram", "u1", ["new"], T0)
    await history.remember_tracks("telegram", "u2", ["kept"], T0)
    await history.delete_older_than(T0 - timedelta(days=1))
    assert await history.recent_track_ids("telegram", "u1", 10) == ["new"]
    await history.forget_user("telegram", "u1")
    assert await history.recent_track_ids("telegram", "u1", 10) == []
    assert await history.recent_track_ids("telegram", "u2", 10) == ["kept"]


async def test_remember_tracks_checks_its_input(history: History) -> None:
    with pytest.raises(ValueError, match="platform"):
        await history.remember_tracks("myspace", "u1", ["a"], T0)
    with pytest.raises(ValueError, match="track_id"):
        await history.remember_tracks("telegram", "u1", ["a", ""], T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        await history.remember_tracks("telegram", "u1", ["a"], datetime(2026, 1, 1))
    assert await history.recent_track_ids("telegram", "u1", 10) == []
