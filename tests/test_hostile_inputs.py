"""Hostile files (tests/corpus) through every door: the decoder, the engine, `moodbot analyze`,
and uploads that declare more bytes than the limit.

Each file has its expected outcome in tests/corpus/expected.json: an error code from
ml/errors.py, or a result. Never a crash, never a hang, and bombs in bounded memory.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.analyze import analyze_path, exit_status
from bot.core import MoodService
from bot.history import AsyncHistory
from bot.music import MusicRecommender
from ml.decode import DecodeLimits, decode_image
from ml.engine import EmotionEngine
from ml.errors import MLError
from tests.fakes.telegram import FakeTelegram, TgUser, running_bot

CORPUS = Path(__file__).parent / "corpus"
FILES = CORPUS / "files"
EXPECTED: dict[str, dict[str, Any]] = {
    name: spec
    for name, spec in json.loads((CORPUS / "expected.json").read_text()).items()
    if not name.startswith("_")
}
NAMES = sorted(EXPECTED)
ERROR_CODES = ("unreadable", "too_large")
MOODBOT = str(Path(sys.executable).with_name("moodbot"))
ENGINE_TIMEOUT_S = 60.0


def outcome_of(name: str) -> str:
    return EXPECTED[name]["outcome"]


# --- the corpus itself ----------------------------------------------------------------------------


def test_corpus_files_and_expectations_match_and_stay_small() -> None:
    on_disk = {path.name for path in FILES.iterdir()}
    assert on_disk == set(EXPECTED)
    total = sum(path.stat().st_size for path in FILES.iterdir())
    assert total < 1_000_000
    # Every kind of hostile input the issue names is present.
    outcomes = {outcome_of(name) for name in NAMES}
    assert outcomes == {"unreadable", "too_large", "no_face", "face"}


def test_the_generator_knows_every_file() -> None:
    source = (CORPUS / "make_corpus.py").read_text()
    for name in NAMES:
        assert f'"{name}"' in source, name


# --- through the decoder --------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", NAMES)
def test_decoder_gives_the_expected_outcome(name: str) -> None:
    data = (FILES / name).read_bytes()
    limits = DecodeLimits()
    if outcome_of(name) in ERROR_CODES:
        with pytest.raises(MLError) as caught:
            decode_image(data, limits)
        assert caught.value.code == outcome_of(name), caught.value
        assert caught.value.message  # a sentence a person can read
        return
    decoded = decode_image(data, limits)
    assert decoded.pixels.dtype.name == "uint8" and decoded.pixels.ndim == 3
    assert decoded.pixels.shape[2] == 3
    assert decoded.original_size == tuple(EXPECTED[name]["size"])
    # Large images arrive shrunk: never more than twice the working size on the long side.
    assert max(decoded.pixels.shape[:2]) <= 2 * limits.max_side


def test_bombs_are_decoded_in_bounded_memory(tmp_path: Path) -> None:
    """Every bomb and giant header in a fresh process: its peak memory grows by < 200 MB."""
    bombs = [name for name in NAMES if name.startswith(("bomb_", "header_", "animated_"))]
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from ml.decode import decode_image\n"
        "from ml.errors import MLError\n"
        "def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\n"
        "before = peak()\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        decode_image(Path(name).read_bytes())\n"
        "    except MLError:\n"
        "        pass\n"
        "print(peak() - before)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *(str(FILES / name) for name in bombs)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
    )
    assert result.returncode == 0, result.stderr
    grown_mb = int(result.stdout.split()[-1])
    # Decoding the 49-megapixel bomb at full size and converting it took ~560 MB.
    assert grown_mb < 200, f"decoding {len(bombs)} bombs grew the process by {grown_mb} MB"


# --- through the engine and the analyze contract --------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", NAMES)
async def test_engine_gives_the_expected_outcome(engine: EmotionEngine, name: str) -> None:
    data = (FILES / name).read_bytes()
    expected = outcome_of(name)
    if expected in ERROR_CODES:
        with pytest.raises(MLError) as caught:
            await asyncio.wait_for(engine.analyze(data), ENGINE_TIMEOUT_S)
        assert caught.value.code == expected
        return
    analysis = await asyncio.wait_for(engine.analyze(data), ENGINE_TIMEOUT_S)
    assert analysis.image_size == tuple(EXPECTED[name]["size"])
    assert bool(analysis.faces) == (expected == "face")
    if expected == "face":  # CMYK and 16-bit are read, colours and all: the smile is seen
        assert analysis.faces[0].emotion == "happy"


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", NAMES)
async def test_analyze_contract_gives_the_expected_code(engine: EmotionEngine, name: str) -> None:
    music = MusicRecommender(None)
    result = await asyncio.wait_for(
        analyze_path(engine, music, FILES / name, 20 * 1024 * 1024), ENGINE_TIMEOUT_S
    )
    expected = outcome_of(name)
    if expected == "face":
        assert result["ok"] and result["error"] is None and result["faces"]
    else:
        assert not result["ok"] and result["error"]["code"] == expected
        assert result["error"]["message"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_moodbot_analyze_reads_the_whole_corpus_without_a_traceback(tmp_path: Path) -> None:
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("MOODBOT_", "SPOTIFY_"))
    }
    environment["MOODBOT_DB"] = str(tmp_path / "moods.db")
    result = subprocess.run(
        [MOODBOT, "analyze", "--json", *NAMES],
        capture_output=True,
        text=True,
        cwd=FILES,
        env=environment,
        timeout=280,
    )
    results = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in results] == NAMES
    codes = {r["path"]: (r["error"] or {}).get("code", "face") for r in results}
    assert codes == {name: outcome_of(name) for name in NAMES}
    assert result.returncode == exit_status(results) == 2
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(90)
def test_analyze_refuses_special_files_instead_of_hanging(tmp_path: Path) -> None:
    """/dev/zero never ends and a FIFO without a writer never opens: refused, not read."""
    fifo = tmp_path / "selfie.jpg"
    os.mkfifo(fifo)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from bot.analyze import _read\n"
        "from ml.errors import MLError\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        _read(Path(name), 1_000_000)\n"
        "        print('read', name)\n"
        "    except MLError as exc:\n"
        "        print(exc.code, name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "/dev/zero", str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,  # a regression hangs here instead of passing
        cwd=Path(__file__).parent.parent,
    )
    assert result.stdout.split("\n")[:2] == ["unreadable /dev/zero", f"unreadable {fifo}"]


# --- uploads above the size limit are refused before any download --------------------------------

ALICE = TgUser(2001, "Alice")


@pytest.fixture
async def telegram(
    engine: EmotionEngine, history: AsyncHistory
) -> AsyncIterator[tuple[FakeTelegram, MoodService]]:
    service = MoodService(engine, MusicRecommender(None), history)
    async with FakeTelegram() as fake, running_bot(service, fake):
        yield fake, service


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_telegram_photo_whose_every_size_is_too_large_is_never_downloaded(
    telegram: tuple[FakeTelegram, MoodService], astronaut_jpeg: bytes, history: AsyncHistory
) -> None:
    fake, service = telegram
    over = service.max_image_bytes + 1
    sides = (90, 320, 800)
    fake.send_photo(
        ALICE,
        fake.private(ALICE),
        astronaut_jpeg,
        sides=sides,
        declared_sizes={side: over + side for side in sides},
    )
    reply = await fake.wait_for("sendMessage", chat_id=ALICE.id, timeout=30)
    assert reply.text.startswith("That image is too large for me")
    assert fake.calls_to("getFile") == [] and fake.downloads == []
    assert await history.recent("telegram", str(ALICE.id)) == []


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_telegram_file_one_byte_over_the_limit_is_never_downloaded(
    telegram: tuple[FakeTelegram, MoodService], astronaut_jpeg: bytes
) -> None:
    fake, service = telegram
    fake.send_document(
        ALICE,
        fake.private(ALICE),
        astronaut_jpeg,
        file_name="me.png",
        mime_type="image/png",
        declared_size=service.max_image_bytes + 1,
    )
    reply = await fake.wait_for("sendMessage", chat_id=ALICE.id, timeout=30)
    assert reply.text.startswith("That image is too large for me")
    assert fake.calls_to("getFile") == [] and fake.downloads == []
