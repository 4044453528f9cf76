"""Property-based fuzzing (hypothesis) of what strangers control: image bytes and command words.

Every test is bounded and derandomized, so CI runs the same few hundred examples each time in
a few seconds: decoding returns a valid RGB array within the limits or raises MLError, and
command parsing answers or refuses, never raises.
"""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from telegram import Chat, Message, MessageEntity
from typer.testing import CliRunner

from bot import cli
from bot.core import MAX_HISTORY, MoodService, Sender, history_limit
from bot.history import AsyncHistory
from bot.music import MusicRecommender
from bot.transports.telegram_bot import _commands_in, _is_command, caption_command
from ml.decode import DecodeLimits, decode_image
from ml.engine import EmotionEngine
from ml.errors import MLError

# Small limits keep every example cheap while exercising the same guards as production.
LIMITS = DecodeLimits(max_bytes=200_000, max_pixels=2_000_000, max_side=256)
BOUNDED = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# --- image decoding -------------------------------------------------------------------------------


def _seed(fmt: str, mode: str = "RGB", **options: Any) -> bytes:
    y, x = np.mgrid[0:24, 0:32]
    pixels = np.stack([x * 8, y * 10, (x + y) * 4], axis=2).astype(np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _gif_animation() -> bytes:
    frames = [Image.new("P", (16, 16), colour) for colour in (1, 2, 3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


SEEDS = {
    "jpeg": _seed("JPEG", quality=80),
    "jpeg-progressive": _seed("JPEG", quality=80, progressive=True),
    "jpeg-cmyk": _seed("JPEG", "CMYK"),
    "png": _seed("PNG"),
    "png-rgba": _seed("PNG", "RGBA"),
    "png-palette": _seed("PNG", "P"),
    "gif": _seed("GIF", "P"),
    "gif-animated": _gif_animation(),
    "webp": _seed("WEBP", quality=80),
    "bmp": _seed("BMP"),
}


def assert_decodes_safely(data: bytes) -> None:
    """The property: a valid RGB array within LIMITS, or MLError; nothing else."""
    try:
        decoded = decode_image(data, LIMITS)
    except MLError as exc:
        assert exc.code in ("unreadable", "too_large") and exc.message
        return
    pixels = decoded.pixels
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    assert pixels.shape[0] >= 1 and pixels.shape[1] >= 1
    width, height = decoded.original_size
    assert width * height <= LIMITS.max_pixels
    assert max(pixels.shape[:2]) <= 2 * LIMITS.max_side or max(width, height) <= 2 * LIMITS.max_side


@BOUNDED
@given(st.binary(max_size=2048))
def test_random_bytes_decode_or_raise_mlerror(data: bytes) -> None:
    assert_decodes_safely(data)


@BOUNDED
@given(
    name=st.sampled_from(sorted(SEEDS)),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8),
)
def test_mutated_images_decode_or_raise_mlerror(name: str, edits: list[tuple[float, int]]) -> None:
    data = bytearray(SEEDS[name])
    for where, value in edits:
        data[int(where * len(data))] = value
    assert_decodes_safely(bytes(data))


@BOUNDED
@given(
    name=st.sampled_from(sorted(SEEDS)),
    header_bytes=st.integers(0, 64),
    edits=st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.floats(0.05, 1.0),
)
def test_mutated_headers_and_cuts_decode_or_raise_mlerror(
    name: str, header_bytes: int, edits: list[tuple[int, int]], cut: float
) -> None:
    """Headers hold sizes, modes and offsets: mutate them, then maybe cut the file short."""
    data = bytearray(SEEDS[name])
    for position, value in edits:
        data[min(position, header_bytes, len(data) - 1)] = value
    assert_decodes_safely(bytes(data[: max(1, int(len(data) * cut))]))


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


@BOUNDED
@given(
    width=st.integers(0, 2**31 - 1),
    height=st.integers(0, 2**31 - 1),
    depth=st.sampled_from([1, 2, 4, 8, 16, 3, 0, 255]),
    colour=st.sampled_from([0, 2, 3, 4, 6, 1, 7]),
    body=st.binary(max_size=256),
)
def test_png_headers_with_valid_checksums_decode_or_raise_mlerror(
    width: int, height: int, depth: int, colour: int, body: bytes
) -> None:
    """Well-formed chunks with hostile values get past the CRC checks to the real parsing."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(body))
        + _png_chunk(b"IEND", b"")
    )
    assert_decodes_safely(data)


# --- chat command arguments -----------------------------------------------------------------------

USERNAME = "moodbot_test_bot"
TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from("/@ _:\n"),
    max_size=80,
)


@BOUNDED
@given(TEXT | st.none())
@example("²")  # isdigit() is True for it, but int() refuses it
@example("9" * 5000)  # more digits than int() parses by default
@example("0")
@example("-3")
def test_history_limit_is_always_a_count_in_range(arg: str | None) -> None:
    assert 1 <= history_limit(arg) <= MAX_HISTORY


ENTITY = st.builds(
    MessageEntity,
    type=st.sampled_from([MessageEntity.BOT_COMMAND, MessageEntity.MENTION, MessageEntity.BOLD]),
    offset=st.integers(-5, 90),
    length=st.integers(-5, 90),
)


def _message(text: str | None, caption: str | None, entities: list, caption_entities: list):
    # Telegram sends entities only along with the text they point into.
    return Message(
        message_id=1,
        date=datetime(2026, 1, 1, tzinfo=UTC),
        chat=Chat(1, Chat.PRIVATE),
        text=text,
        caption=caption,
        entities=entities if text is not None else (),
        caption_entities=caption_entities if caption is not None else (),
    )


@BOUNDED
@given(
    text=TEXT | st.none(),
    caption=TEXT | st.none(),
    entities=st.lists(ENTITY, max_size=4),
    caption_entities=st.lists(ENTITY, max_size=4),
)
@example(text=None, caption="/mood@MoodBot_Test_Bot", entities=[], caption_entities=[])
def test_caption_commands_parse_any_text_and_entities(
    text: str | None, caption: str | None, entities: list, caption_entities: list
) -> None:
    message = _message(text, caption, entities, caption_entities)
    commands = _commands_in(message)
    assert all(command == command.lower() for command in commands)
    found = caption_command(message, USERNAME)
    assert found in (None, "mood", "groupmix")
    if found:  # only ever for this bot, or for no bot in particular
        assert any(_is_command(command, found, USERNAME) for command in commands)


@BOUNDED
@given(command=TEXT, name=st.sampled_from(["mood", "groupmix"]), username=TEXT)
def test_is_command_matches_only_the_exact_command(command: str, name: str, username: str) -> None:
    if _is_command(command, name, username):
        bare, _, target = command.partition("@")
        assert bare == f"/{name}" and target in ("", username.lower())


@pytest.fixture(scope="module")
def arguments_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """A core on a real SQLite file, on one event loop kept for the module's examples."""
    runner = asyncio.Runner()
    path = tmp_path_factory.mktemp("fuzz") / "moods.db"
    history = runner.run(AsyncHistory.open(path))
    # /mode and /genre never reach the engine: none is loaded.
    service = MoodService(None, MusicRecommender(None), history)  # type: ignore[arg-type]
    yield runner, service
    runner.run(history.aclose())
    runner.close()


@BOUNDED
@given(words=TEXT)
@example("'; DROP TABLE preferences; --")
@example("Robert'); DELETE FROM moods;--")
def test_genre_and_mode_arguments_answer_or_refuse(arguments_service, words: str) -> None:
    runner, service = arguments_service
    who = Sender("telegram", "1", "fuzz-user")
    genre = runner.run(service.set_genre(who, words))
    mode = runner.run(service.set_mode(who, words))
    assert genre.text and mode.text
    assert genre.error_code in (None, "bad_argument") and mode.error_code in (None, "bad_argument")
    stored = runner.run(service.history.get_preferences("telegram", "fuzz-user"))
    normalized = " ".join(words.split())
    if genre.ok and normalized.lower() not in ("off", "none", "clear"):
        # Stored as the catalogue genre the words name: parameters, never SQL.
        assert stored.genre == service.music.resolve_genre(normalized)
    assert stored.mode in ("match", "lift", "calm")


# --- the `moodbot analyze` command line ----------------------------------------------------------


class _BorrowedEngine:
    """The session engine, lent to `moodbot analyze`, which closes its engine when done."""

    def __init__(self, engine: EmotionEngine) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def close(self) -> None:
        """Leave the session's engine running."""


ARGUMENT = st.sampled_from(
    ["--json", "--model", "--help", "--db", "-j", "--", "-", "smile.jpg", "notes.jpg", ".", ""]
) | st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20
)


@pytest.mark.slow
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(args=st.lists(ARGUMENT, max_size=5))
@example(args=["--model"])
@example(args=["--json", "--model", "no-such-model", "smile.jpg"])
def test_moodbot_analyze_arguments_never_give_a_traceback(
    args: list[str],
    engine: EmotionEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    astronaut_jpeg: bytes,
) -> None:
    real_load = EmotionEngine.load

    def load(model: str = "moodnet", config: Any = None) -> Any:
        if model != "moodnet":  # only other names reach the real (failing fast) loader
            return real_load(model, config)
        return _BorrowedEngine(engine)

    monkeypatch.setattr(EmotionEngine, "load", staticmethod(load))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smile.jpg").write_bytes(astronaut_jpeg)
    (tmp_path / "notes.jpg").write_bytes(b"shopping list\n")
    monkeypatch.setenv("MOODBOT_DB", str(tmp_path / "moods.db"))
    monkeypatch.delenv("MOODBOT_MODEL", raising=False)
    result = CliRunner().invoke(cli.app, ["analyze", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code in (0, 1, 2, 3), result.output
    assert "Traceback" not in result.output
