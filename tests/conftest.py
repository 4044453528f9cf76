"""Shared fixtures: real face photos from installed packages, and one real engine per session."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import matplotlib
import numpy as np
import pytest
from PIL import Image

from bot.history import AsyncHistory
from ml.engine import EmotionEngine, EngineConfig
from ml.models import FER_LABELS
from tests.fakes.telegram import FakeTelegram
from tests.servers import PostgresServer, RedisServer, postgres_server, redis_server

GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def encode(image: Image.Image | np.ndarray, fmt: str = "JPEG", **options: object) -> bytes:
    """Encode an image as a chat app would deliver it."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """Eileen Collins, smiling (scikit-image ships it)."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def astronaut_jpeg(astronaut: np.ndarray) -> bytes:
    return encode(astronaut, quality=92)


@pytest.fixture(scope="session")
def grace_hopper_jpeg() -> bytes:
    """Grace Hopper's portrait (matplotlib ships it)."""
    return GRACE_HOPPER.read_bytes()


@pytest.fixture(scope="session")
def no_face_png() -> bytes:
    """A smooth colour gradient: nothing resembling a face."""
    y, x = np.mgrid[0:360, 0:480]
    pixels = np.stack([x * 255 // 480, y * 255 // 360, (x + y) * 255 // 840], axis=2)
    return encode(pixels.astype(np.uint8), "PNG")


@pytest.fixture(scope="session")
def group_photo(astronaut: np.ndarray, grace_hopper_jpeg: bytes) -> bytes:
    """Two people side by side: the astronaut's face is the larger one."""
    hopper = Image.open(io.BytesIO(grace_hopper_jpeg)).convert("RGB").resize((192, 225))
    canvas = Image.new("RGB", (512 + 256, 512), (240, 240, 240))
    canvas.paste(Image.fromarray(astronaut), (0, 0))
    canvas.paste(hopper, (512, 100))
    return encode(canvas)


@pytest.fixture(scope="session")
def engine() -> Iterator[EmotionEngine]:
    """The real detector and the default model, loaded once for the whole session."""
    engine = EmotionEngine.load(config=EngineConfig())
    yield engine
    engine.close()


@pytest.fixture
async def history(tmp_path: Path) -> AsyncIterator[AsyncHistory]:
    """A real mood history in a fresh SQLite file."""
    history = await AsyncHistory.open(tmp_path / "moods.db")
    yield history
    await history.aclose()


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    """A fake Telegram Bot API server on 127.0.0.1 (tests/fakes/telegram.py)."""
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def write_file(tmp_path: Path):
    """Write bytes to a named file in tmp_path and return its path."""

    def write(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return write


@pytest.fixture
def tiny_recipe():
    """Make CompactRecipes small enough to train on tiny_fer in seconds, with `changes`."""
    from training.train import CompactRecipe

    def make(**changes):
        small = {"epochs": 1, "batch_size": 8, "width": 8, "warmup_epochs": 0, "patience": 1}
        return CompactRecipe(**{**small, **changes})

    return make


@pytest.fixture(scope="session")
def tiny_fer(tmp_path_factory) -> Path:
    """Seven class folders of small grey faces-to-be (noise with a class-specific brightness)."""
    root = tmp_path_factory.mktemp("fer")
    rng = np.random.default_rng(0)
    for index, label in enumerate(FER_LABELS):
        (root / label).mkdir()
        for i in range(6):
            pixels = rng.normal(30 + index * 30, 10, (48, 48)).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    (root / "happy" / "broken.png").write_bytes(b"not a png")
    return root


# --- real servers (tests/servers.py) -------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (private, or MOODBOT_TEST_POSTGRES_URL)."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty database of its own for each test."""
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisServer]:
    """One Redis server for the session (private, or MOODBOT_TEST_REDIS_URL)."""
    with redis_server() as server:
        yield server


@pytest.fixture
def redis_url(redis_session: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    if redis_session.private and not redis_session.ping():
        redis_session.start()  # a test before this one killed it
    redis_session.flush()
    return redis_session.url
