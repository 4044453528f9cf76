"""Secrets never reach the logs or the chat: a full Telegram + Spotify scenario with every logger
of the process at DEBUG (httpx, telegram, spotipy, urllib3, aiohttp included), searched for
the bot token, its part after the bot id, the Spotify client secret and its Basic-auth form."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.app import build_music
from bot.core import MoodService
from bot.history import AsyncHistory
from bot.redact import REDACTED
from bot.runner import StartupError, serve
from bot.settings import Settings, load_settings
from ml.engine import EmotionEngine
from tests.fakes.spotify import FakeSpotify
from tests.fakes.telegram import FakeTelegram, TgUser

pytestmark = pytest.mark.slow

TOKEN = "7081234567:AAHk-s3cretPart_ofTheBotToken-4tests"
SPOTIFY_ID = "moodbot-client-id-1234"
SPOTIFY_SECRET = "spotify-client-secret-zq81x"
LOUD_LOGGERS = (
    "",
    "httpx",
    "httpcore",
    "telegram",
    "telegram.ext",
    "spotipy",
    "urllib3",
    "requests",
    "aiohttp",
    "asyncio",
    "bot",
    "ml",
)
ALICE = TgUser(3001, "Alice")
BOB = TgUser(3002, "Bob")
GROUP = FakeTelegram.group(-3001)


def secret_values(token: str = TOKEN) -> list[str]:
    basic = base64.b64encode(f"{SPOTIFY_ID}:{SPOTIFY_SECRET}".encode()).decode()
    return [token, token.partition(":")[2], SPOTIFY_SECRET, basic]


@pytest.fixture
def all_logs() -> Iterator[io.StringIO]:
    """Every record of every logger at DEBUG, formatted with tracebacks, as the CLI's handler."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in LOUD_LOGGERS}
    root.addHandler(handler)
    loud()
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def loud() -> None:
    for name in LOUD_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as fake:
        yield fake


@pytest.fixture
def fake_spotify() -> Iterator[FakeSpotify]:
    with FakeSpotify(client_id=SPOTIFY_ID, client_secret=SPOTIFY_SECRET) as fake:
        yield fake


def settings_for(
    tmp_path: Path, telegram: FakeTelegram, spotify: FakeSpotify, token: str = TOKEN
) -> Settings:
    return load_settings(
        TELEGRAM_BOT_TOKEN=token,
        TELEGRAM_BASE_URL=telegram.base_url,
        TELEGRAM_BASE_FILE_URL=telegram.base_file_url,
        SPOTIFY_CLIENT_ID=SPOTIFY_ID,
        SPOTIFY_CLIENT_SECRET=SPOTIFY_SECRET,
        SPOTIFY_API_URL=spotify.api_url,
        SPOTIFY_TOKEN_URL=spotify.token_url,
        MOODBOT_DB=tmp_path / "moods.db",
        MOODBOT_LOG_LEVEL="DEBUG",
        MOODBOT_MUSIC_DEADLINE_S=3,
    )


@pytest.mark.parametrize(
    "httpx_loud",
    [
        pytest.param(False, id="moodbot-log-levels"),
        pytest.param(True, id="httpx-forced-to-debug"),
    ],
)
async def test_a_full_scenario_leaks_no_secret(
    httpx_loud: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    all_logs: io.StringIO,
    fake_telegram: FakeTelegram,
    fake_spotify: FakeSpotify,
    engine: EmotionEngine,
    history: AsyncHistory,
    astronaut_jpeg: bytes,
    grace_hopper_jpeg: bytes,
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    settings = settings_for(tmp_path, fake_telegram, fake_spotify)
    service = MoodService(engine, build_music(settings), history)
    stop = asyncio.Event()
    running = asyncio.create_task(serve(settings, service=service, stop=stop))
    fake = fake_telegram
    try:
        await fake.wait_for("setMyCommands", timeout=30)
        if httpx_loud:
            loud()  # the runner quietens httpx, whose URLs carry the token; an operator may not

        fake.send_photo(ALICE, fake.private(ALICE), astronaut_jpeg)
        selfie = await fake.wait_for("sendMessage", chat_id=ALICE.id)
        assert selfie.text.startswith("You look happy") and fake_spotify.searches()

        fake_spotify.search_behaviour = "server_error"  # Spotify fails: tracks, no playlist
        fake.send_photo(BOB, GROUP, grace_hopper_jpeg, caption="/mood")
        fallback = await fake.wait_for("sendMessage", chat_id=GROUP.id)
        assert [b["url"].split("/")[3] for b in fallback.link_buttons] == ["track"] * 5

        fake.send_text(ALICE, fake.private(ALICE), "/history")
        await fake.wait_for("sendMessage", chat_id=ALICE.id)
        await fake.wait_for("sendPhoto", chat_id=ALICE.id)
        fake.send_text(BOB, GROUP, "/groupmix")
        await fake.wait_for("sendMessage", chat_id=GROUP.id)

        fake.send_document(
            ALICE, fake.private(ALICE), b"\x00garbage", file_name="x.jpg", mime_type=None
        )
        bad = await fake.wait_for("sendMessage", chat_id=ALICE.id)
        assert bad.text.startswith("I couldn't read that file")

        fake.fail("getFile", status=502, description="Bad Gateway")
        fake.send_photo(ALICE, fake.private(ALICE), astronaut_jpeg)
        await fake.wait_for("sendMessage", chat_id=ALICE.id)

        fake.fail("sendMessage", status=400, description="Bad Request: something odd")
        fake.send_text(ALICE, fake.private(ALICE), "/help")
        await fake.wait_for("sendMessage", chat_id=ALICE.id)  # the one that failed
        kind = await fake.wait_for("sendMessage", chat_id=ALICE.id)
        assert kind.text.startswith("Sorry, something went wrong on my side")
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)

    logs = all_logs.getvalue()
    replies = json.dumps([call.params for call in fake.calls], ensure_ascii=False)
    assert "Telegram update failed" in logs and "Traceback" in logs  # errors were logged
    if httpx_loud:
        assert "HTTP Request" in logs  # httpx logged its requests, whose URLs hold the token ...
        assert REDACTED in logs  # ... and the redactor had work to do
    else:
        assert "DEBUG telegram" in logs and "DEBUG spotipy" in logs  # the libraries were heard
    for secret in secret_values():
        assert secret not in logs
        assert secret not in replies


async def test_a_refused_token_leaks_nothing_at_start_up(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    all_logs: io.StringIO,
    fake_telegram: FakeTelegram,
    fake_spotify: FakeSpotify,
    engine: EmotionEngine,
    history: AsyncHistory,
) -> None:
    monkeypatch.chdir(tmp_path)
    wrong = "7081234567:AAWrong-but-still-secret-token_x9"
    settings = settings_for(tmp_path, fake_telegram, fake_spotify, token=wrong)
    service = MoodService(engine, build_music(settings), history)
    with pytest.raises(StartupError) as refused:
        await asyncio.wait_for(serve(settings, service=service, stop=asyncio.Event()), 60)
    assert "TELEGRAM_BOT_TOKEN" in str(refused.value)
    logs = all_logs.getvalue()
    for secret in secret_values(wrong):
        assert secret not in str(refused.value)
        assert secret not in logs
