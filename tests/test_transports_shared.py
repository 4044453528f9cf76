"""The same core scenarios against both transports, so Telegram and Discord cannot drift apart;
then the runner (both bots in one process, graceful shutdown) and the shared pieces."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import random
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar, Protocol

import discord
import discord.ext.test as dpytest
import pytest

from bot.catalogue import TRACK_URL
from bot.core import MoodService, history_limit
from bot.history import AsyncHistory
from bot.music import MusicRecommender
from bot.ratelimit import RateLimiter
from bot.redact import REDACTED, redact_secrets
from bot.runner import TransportStopped, run_transports, serve
from bot.settings import SettingsError, load_settings
from bot.transports import fit
from bot.transports.discord_bot import MoodBot
from ml.engine import EmotionEngine
from tests.fakes.telegram import FakeTelegram, TgUser, running_bot
from tests.test_discord import FakeInteraction, attachment, invoke

GROUP_ID = -1002
HAPPY = "You look happy 😄 ("
PNG = b"\x89PNG"


@dataclass
class Seen:
    """What a person sees: the text, the music links, and a chart if one came."""

    text: str
    urls: list[str]
    chart: bytes | None = None


class Driver(Protocol):
    """Plays a person on one platform."""

    platform: str

    async def selfie(
        self,
        user: int,
        data: bytes,
        *,
        mime: str = "image/jpeg",
        size: int | None = None,
        lang: str = "en",
        group: bool = False,
    ) -> Seen: ...

    async def command(
        self, user: int, name: str, arg: str = "", *, group: bool = False, chart: bool = False
    ) -> Seen: ...


class TelegramDriver:
    """A person writing to the Telegram bot through the fake Bot API server."""

    platform = "telegram"

    def __init__(self, fake: FakeTelegram) -> None:
        self.fake = fake

    async def selfie(self, user, data, *, mime="image/jpeg", size=None, lang="en", group=False):
        person = TgUser(user, f"user{user}", language_code=lang)
        chat = FakeTelegram.group(GROUP_ID) if group else FakeTelegram.private(person)
        self.fake.send_document(
            person,
            chat,
            data,
            file_name="selfie.jpg" if mime.startswith("image/") else "notes.txt",
            mime_type=mime,
            declared_size=size,
            caption="/mood" if group else None,
        )
        return await self._seen(chat.id, chart=False)

    async def command(self, user, name, arg="", *, group=False, chart=False):
        person = TgUser(user, f"user{user}")
        chat = FakeTelegram.group(GROUP_ID) if group else FakeTelegram.private(person)
        self.fake.send_text(person, chat, f"/{name} {arg}".strip())
        return await self._seen(chat.id, chart=chart)

    async def _seen(self, chat_id: int, *, chart: bool) -> Seen:
        message = await self.fake.wait_for("sendMessage", chat_id=chat_id)
        urls = [button["url"] for button in message.buttons if "url" in button]
        photo = await self.fake.wait_for("sendPhoto", chat_id=chat_id) if chart else None
        return Seen(message.text, urls, photo.files["photo"] if photo else None)


class DiscordDriver:
    """A person using the Discord bot's slash commands (fake interactions, dpytest state)."""

    platform = "discord"
    OPTIONS: ClassVar[dict[str, str]] = {"history": "count", "mode": "mode", "genre": "words"}

    def __init__(self, bot: MoodBot, folder: Path) -> None:
        self.bot = bot
        self.folder = folder
        self.channel_id = dpytest.get_config().channels[0].id

    def _interaction(self, user: int, lang: str = "en") -> FakeInteraction:
        locale = discord.Locale.korean if lang == "ko" else discord.Locale.american_english
        return FakeInteraction(SimpleNamespace(id=user), self.channel_id, locale=locale)

    async def selfie(self, user, data, *, mime="image/jpeg", size=None, lang="en", group=False):
        path = self.folder / f"upload-{user}-{len(data)}"
        path.write_bytes(data)
        interaction = self._interaction(user, lang)
        await invoke(self.bot, "mood", interaction, image=attachment(self.bot, path, mime, size))
        return self._seen(interaction)

    async def command(self, user, name, arg="", *, group=False, chart=False):
        interaction = self._interaction(user)
        options = {}
        if name in self.OPTIONS:
            options[self.OPTIONS[name]] = int(arg) if name == "history" else arg
        await invoke(self.bot, name, interaction, **options)
        return self._seen(interaction)

    @staticmethod
    def _seen(interaction: FakeInteraction) -> Seen:
        (sent,) = interaction.answers
        return Seen(sent.text, sent.urls, sent.chart)


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def service(engine: EmotionEngine, history: AsyncHistory) -> MoodService:
    music = MusicRecommender(None, rng=random.Random(11))
    return MoodService(engine, music, history, limiter=RateLimiter(burst=50, per_minute=600))


@pytest.fixture(params=["telegram", "discord"])
async def driver(
    request: pytest.FixtureRequest,
    service: MoodService,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Driver]:
    if request.param == "telegram":
        async with FakeTelegram() as fake, running_bot(service, fake):
            yield TelegramDriver(fake)
        return
    monkeypatch.chdir(tmp_path)
    bot = MoodBot(service, intents=discord.Intents.default())
    await bot._async_setup_hook()
    dpytest.configure(bot, members=1)
    await bot.setup_hook()
    yield DiscordDriver(bot, tmp_path)
    await dpytest.empty_queue()


async def stored(history: AsyncHistory, driver: Driver, user: int) -> list[str]:
    return [e.emotion for e in await history.recent(driver.platform, str(user))]


# --- the same scenarios on both platforms ---------------------------------------------------------


@pytest.mark.slow
async def test_selfie(driver: Driver, history: AsyncHistory, astronaut_jpeg: bytes) -> None:
    seen = await driver.selfie(1, astronaut_jpeg)
    assert seen.text.startswith(HAPPY)
    assert len(seen.urls) == 5 and all(u.startswith(TRACK_URL) for u in seen.urls)
    assert await stored(history, driver, 1) == ["happy"]


@pytest.mark.slow
async def test_korean(driver: Driver, astronaut_jpeg: bytes) -> None:
    seen = await driver.selfie(2, astronaut_jpeg, lang="ko")
    assert seen.text.startswith("기쁨 😄 표정이에요")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("photo", "mime", "size", "answer"),
    [
        ("no_face_png", "image/png", None, "Sorry, I can't recognize a face in this photo."),
        (b"dear diary", "text/plain", None, "I couldn't read that file as a photo."),
        (b"\xff\xd8 tiny", "image/jpeg", 25 * 10**6, "That image is too large for me"),
    ],
    ids=["no-face", "not-an-image", "too-large"],
)
async def test_bad_photos(
    driver: Driver, history: AsyncHistory, request, photo, mime: str, size, answer: str
) -> None:
    data = request.getfixturevalue(photo) if isinstance(photo, str) else photo
    seen = await driver.selfie(3, data, mime=mime, size=size)
    assert seen.text.startswith(answer) and seen.urls == []
    assert await stored(history, driver, 3) == []


@pytest.mark.slow
async def test_history_text_and_chart(driver: Driver, astronaut_jpeg: bytes) -> None:
    assert (await driver.command(4, "history", "5")).text == "No moods yet. Send me a selfie!"
    await driver.selfie(4, astronaut_jpeg)
    seen = await driver.command(4, "history", "5", chart=True)
    assert seen.text.splitlines()[0] == "Your last 1 moods:"
    assert seen.chart and seen.chart.startswith(PNG)


@pytest.mark.slow
async def test_group_mix(driver: Driver, astronaut_jpeg: bytes) -> None:
    for user in (5, 6):
        await driver.selfie(user, astronaut_jpeg, group=True)
    seen = await driver.command(7, "groupmix", group=True)
    assert seen.text.startswith("Group mix for 2 people: happy 😄 100%.")
    assert seen.urls


@pytest.mark.slow
async def test_preferences(driver: Driver) -> None:
    assert (await driver.command(8, "mode", "lift")).text == "Music mode set to lift."
    seen = await driver.command(8, "genre", "k-pop")
    assert seen.text == "From now on I'll pick k-pop songs."


@pytest.mark.slow
async def test_rate_limit_says_slow_down(
    driver: Driver, service: MoodService, astronaut_jpeg: bytes
) -> None:
    # A stopped clock: however long the reading takes, the wait quoted is the full minute.
    service.limiter = RateLimiter(burst=1, per_minute=1, clock=lambda: 0.0)
    assert (await driver.selfie(9, astronaut_jpeg)).text.startswith(HAPPY)
    seen = await driver.command(9, "mode", "calm")
    assert seen.text == "Slow down a little 🙂 Try again in 60 s."


@pytest.mark.slow
async def test_busy_engine_says_try_again(
    driver: Driver, service: MoodService, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    config = service.engine.config
    service.engine = SimpleNamespace(config=config, queue_depth=config.queue_size)  # type: ignore[assignment]
    seen = await driver.selfie(10, astronaut_jpeg)
    assert seen.text == "I'm busy with other photos right now. Try again in a moment."
    assert await stored(history, driver, 10) == []


@pytest.mark.slow
async def test_shutting_down_says_restarting(
    driver: Driver, service: MoodService, astronaut_jpeg: bytes
) -> None:
    service.stop_accepting()
    seen = await driver.selfie(11, astronaut_jpeg)
    assert seen.text == "I'm restarting. Try again in a moment."


# --- the runner -----------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("TELEGRAM_", "DISCORD_", "MOODBOT_", "SPOTIFY_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


@pytest.mark.slow
async def test_runner_finishes_the_analysis_in_flight_before_it_stops(
    clean_env: None,
    service: MoodService,
    history: AsyncHistory,
    astronaut_jpeg: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    alice = TgUser(21, "Alice")
    async with FakeTelegram() as fake:
        settings = load_settings(
            TELEGRAM_BOT_TOKEN=fake.token,
            TELEGRAM_BASE_URL=fake.base_url,
            MOODBOT_SHUTDOWN_GRACE_S=20,
        )
        stop = asyncio.Event()
        running = asyncio.create_task(serve(settings, service=service, stop=stop))
        await fake.wait_for("deleteWebhook")  # polling is starting
        fake.send_photo(alice, fake.private(alice), astronaut_jpeg)
        await fake.wait_for("sendChatAction", chat_id=alice.id)  # the analysis is under way
        stop.set()
        await asyncio.wait_for(running, 30)
        (answer,) = [c for c in fake.calls_to("sendMessage") if c.chat_id == alice.id]
    assert answer.text.startswith(HAPPY)
    assert await stored(history, TelegramDriver(fake), alice.id) == ["happy"]
    logged = [r.getMessage() for r in caplog.records]
    assert "Telegram is up: @moodbot_test_bot (long polling)" in logged
    assert "Stopped: Telegram" in logged
    assert not service.accepting


@pytest.mark.slow
async def test_moodbot_run_serves_telegram_and_stops_on_sigterm(
    clean_env: None, tmp_path: Path, astronaut_jpeg: bytes
) -> None:
    """The installed command with a token: no console, Telegram up, SIGTERM, clean exit."""
    alice = TgUser(31, "Alice")
    async with FakeTelegram() as fake:
        env = {
            **os.environ,
            "TELEGRAM_BOT_TOKEN": fake.token,
            "TELEGRAM_BASE_URL": fake.base_url,
            "MOODBOT_DB": str(tmp_path / "moods.db"),
            "MOODBOT_LOG_LEVEL": "DEBUG",  # the chattiest level must still hide the token
        }
        moodbot = str(Path(sys.executable).with_name("moodbot"))
        process = await asyncio.create_subprocess_exec(
            moodbot, "run", env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            await fake.wait_for("deleteWebhook", timeout=120)
            fake.send_photo(alice, fake.private(alice), astronaut_jpeg)
            answer = await fake.wait_for("sendMessage", chat_id=alice.id, timeout=60)
            process.send_signal(signal.SIGTERM)
            stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    log = stderr.decode()
    assert answer.text.startswith(HAPPY)
    assert process.returncode == 0, log[-3000:]
    assert "Telegram is up: @moodbot_test_bot (long polling)" in log
    assert "SIGTERM received: shutting down gracefully" in log and "Stopped: Telegram" in log
    assert fake.token not in log and fake.token.split(":")[1] not in log
    assert "moodbot console" not in stdout.decode()
    assert "Traceback" not in log


class DyingTransport:
    """A transport whose connection gives up on its own after start-up."""

    name = "Dummy"

    def __init__(self) -> None:
        self.steps: list[str] = []

    async def start(self) -> str:
        return "testing"

    async def stop_intake(self) -> None:
        self.steps.append("stop_intake")

    async def close(self, timeout: float) -> None:
        self.steps.append("close")

    async def wait_closed(self) -> None:
        raise ConnectionError("gateway gone")


async def test_a_transport_that_dies_takes_the_process_down_cleanly(
    service: MoodService,
) -> None:
    dying = DyingTransport()
    with pytest.raises(TransportStopped, match="Dummy stopped unexpectedly: gateway gone"):
        await run_transports([dying], service, stop=asyncio.Event(), grace_s=1)
    assert dying.steps == ["stop_intake", "close"]


# --- shared pieces --------------------------------------------------------------------------------


def test_rate_limiter_allows_a_burst_then_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(burst=2, per_minute=6, clock=lambda: now[0])  # one token per 10 s
    assert [limiter.check("a").allowed for _ in range(3)] == [True, True, False]
    refused = limiter.check("a")
    assert (refused.allowed, refused.first_refusal, refused.retry_after_s) == (False, False, 10)
    assert limiter.check("b").allowed  # buckets are per key
    now[0] = 10.0
    assert limiter.check("a").allowed and not limiter.check("a").allowed
    assert limiter.check("a").first_refusal is False


def test_rate_limiter_warns_once_per_streak_and_keeps_memory_bounded() -> None:
    now = [0.0]
    limiter = RateLimiter(burst=1, per_minute=60, clock=lambda: now[0], max_keys=100)
    limiter.check("a")
    assert limiter.check("a").first_refusal and not limiter.check("a").first_refusal
    now[0] = 1.0
    assert limiter.check("a").allowed
    assert limiter.check("a").first_refusal  # a new streak is worth one more warning
    for user in range(1000):
        limiter.check(user)
    assert len(limiter._buckets) <= 100


def test_secrets_are_redacted_in_messages_and_tracebacks() -> None:
    token = "123456:very-secret-token"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    redact_secrets([token], handlers=[handler])
    logger = logging.getLogger("moodbot.test.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("POST https://api.telegram.org/bot%s/getMe", token)
        try:
            raise RuntimeError(f"failed at /bot{token}/getUpdates")
        except RuntimeError:
            logger.exception("polling failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert token not in text
    assert f"/bot{REDACTED}/getMe" in text and f"/bot{REDACTED}/getUpdates" in text


def test_telegram_urls_from_settings(clean_env: None) -> None:
    default = load_settings()
    assert (default.telegram_base_url, default.telegram_file_url) == (
        "https://api.telegram.org/bot",
        "https://api.telegram.org/file/bot",
    )
    local = load_settings(TELEGRAM_BASE_URL="http://localhost:8081/bot/")
    assert local.telegram_file_url == "http://localhost:8081/file/bot"
    explicit = load_settings(
        TELEGRAM_BASE_URL="http://proxy/api", TELEGRAM_BASE_FILE_URL="http://proxy/files"
    )
    assert explicit.telegram_file_url == "http://proxy/files"
    with pytest.raises(SettingsError, match="TELEGRAM_BASE_FILE_URL must be set"):
        load_settings(TELEGRAM_BASE_URL="http://proxy/api")
    with pytest.raises(SettingsError, match="only to https:// URLs"):
        load_settings(TELEGRAM_WEBHOOK_URL="http://example.org/hook")


def test_env_example_lists_every_setting() -> None:
    from bot.settings import Settings

    example = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    names = [field.alias for field in Settings.model_fields.values()]
    missing = [name for name in names if f"{name}=" not in example]
    assert missing == []


def test_small_helpers() -> None:
    assert [history_limit(a) for a in (None, "", "5", "0", "-3", "x", "500")] == [
        10, 10, 5, 10, 10, 10, 50,
    ]  # fmt: skip
    assert fit("short", 10) == "short"
    assert fit("line one\nline two\nline three", 20) == "line one\nline two…"
    assert len(fit("x" * 50, 10)) == 10
