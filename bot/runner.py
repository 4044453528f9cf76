"""Runs the enabled chat transports (and the web server) in one asyncio process around one core.

Shutdown on SIGINT/SIGTERM is graceful: the transports stop taking updates, new requests are
answered "restarting", analyses in flight finish and get their replies, then the transports
disconnect and the core (engine, database) closes. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit

from bot.core import MoodService
from bot.ratelimit import Limiter, RateLimiter, RedisRateLimiter
from bot.redact import redact_secrets
from bot.settings import Settings
from bot.transports import (
    StartupError,
    Transport,
    TransportStates,
    TransportStopped,
)

log = logging.getLogger(__name__)

__all__ = [
    "StartupError",
    "TransportStopped",
    "build_transports",
    "build_web",
    "run_transports",
    "serve",
]


def build_transports(settings: Settings, service: MoodService) -> list[Transport]:
    """Telegram when TELEGRAM_BOT_TOKEN is set, Discord when DISCORD_BOT_TOKEN is set."""
    transports: list[Transport] = []
    if settings.telegram_bot_token:
        from bot.transports.telegram_bot import TelegramConfig, TelegramTransport

        transports.append(TelegramTransport(service, TelegramConfig.from_settings(settings)))
    if settings.discord_bot_token:
        from bot.transports.discord_bot import DiscordConfig, DiscordTransport

        transports.append(DiscordTransport(service, DiscordConfig.from_settings(settings)))
    return transports


def build_web(settings: Settings, service: MoodService, states: TransportStates) -> Transport:
    """The web server (demo page, /healthz, /metrics); its metrics see every transport's photos."""
    from bot.web import Metrics, WebServer

    metrics = Metrics(service)
    service.observer = metrics
    return WebServer(
        service,
        host=settings.web_host,
        port=settings.web_port,
        metrics=metrics,
        states=states,
        shutdown_timeout=settings.shutdown_grace_s,
    )


def build_limiter(settings: Settings) -> Limiter | None:
    """The per-user limit every transport shares (None when MOODBOT_RATE_LIMIT_PER_MINUTE=0).

    In Redis when MOODBOT_REDIS_URL is set (shared by the replicas), else in this process.
    """
    if settings.rate_limit_per_minute <= 0:
        return None
    burst, per_minute = settings.rate_limit_burst, settings.rate_limit_per_minute
    if settings.redis_url:
        log.info("Rate limits: in Redis, shared by every replica")
        return RedisRateLimiter(
            settings.redis_url, burst, per_minute, timeout_s=settings.redis_timeout_s
        )
    return RateLimiter(burst, per_minute)


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value in the settings, for the log redactor."""
    fields = (
        settings.telegram_bot_token,
        settings.discord_bot_token,
        settings.spotify_client_secret,
        settings.telegram_webhook_secret,
        settings.button_secret,
    )
    secrets = [value.get_secret_value() for value in fields if value is not None]
    # Passwords inside server URLs (postgresql://bot:PASSWORD@host/db).
    secrets += [password for url in settings.server_urls if (password := urlsplit(url).password)]
    if settings.telegram_bot_token is not None:
        # The part after "<bot id>:" is the real secret; hide it wherever it shows up alone.
        secrets.append(settings.telegram_bot_token.get_secret_value().partition(":")[2])
    return secrets


async def serve(
    settings: Settings,
    *,
    service: MoodService | None = None,
    stop: asyncio.Event | None = None,
    web: bool | None = None,
    bots: bool = True,
) -> None:
    """Run the chat bots and/or the web server until a signal (or `stop`).

    `web` defaults to MOODBOT_WEB; `bots=False` runs the web server alone. The core is
    opened here unless one is given.
    """
    redact_secrets(secrets_of(settings))
    with_web = settings.web_enabled if web is None else web
    if service is not None:
        await _serve(settings, service, stop or asyncio.Event(), web=with_web, bots=bots)
        return
    from bot.app import open_service

    async with open_service(settings) as opened:
        await _serve(settings, opened, stop or asyncio.Event(), web=with_web, bots=bots)


async def _serve(
    settings: Settings, service: MoodService, stop: asyncio.Event, *, web: bool, bots: bool
) -> None:
    built = None if service.limiter else build_limiter(settings)
    service.limiter = service.limiter or built
    states = TransportStates()
    transports = build_transports(settings, service) if bots else []
    if web:
        # First up and last down, so /healthz can say which bots are not connected yet.
        transports.insert(0, build_web(settings, service, states))
    try:
        with _signals_set(stop):
            await run_transports(
                transports, service, stop=stop, grace_s=settings.shutdown_grace_s, states=states
            )
    finally:
        if built is not None:
            await built.aclose()


async def run_transports(
    transports: Sequence[Transport],
    service: MoodService,
    *,
    stop: asyncio.Event,
    grace_s: float,
    states: TransportStates | None = None,
) -> None:
    """Start every transport, wait for `stop` (or one to die), then shut all down gracefully.

    `states` follows each transport: connected once started, not connected once it dies or
    the shutdown begins.
    """
    states = states or TransportStates()
    for transport in transports:
        states.expect(transport.name)
    started: list[Transport] = []
    try:
        for transport in transports:
            how = await transport.start()
            started.append(transport)
            states.mark(transport.name, True)
            log.info("%s is up: %s", transport.name, how)
        await _wait_for_stop(stop, started, states)
    finally:
        for transport in started:
            states.mark(transport.name, False)
        await _shut_down(started, service, grace_s)


async def _wait_for_stop(
    stop: asyncio.Event, transports: Sequence[Transport], states: TransportStates
) -> None:
    waiters = {asyncio.create_task(stop.wait(), name="stop")}
    deaths = {asyncio.create_task(t.wait_closed(), name=t.name): t for t in transports}
    try:
        done, _ = await asyncio.wait(waiters | set(deaths), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiters | set(deaths):
            task.cancel()
    for task in done & set(deaths):
        states.mark(deaths[task].name, False)
    for task in done & set(deaths):
        # A transport that stops on its own takes the process down: a supervisor restarts it.
        error = None if task.cancelled() else task.exception()
        raise TransportStopped(f"{deaths[task].name} stopped unexpectedly: {error or 'closed'}")


async def _shut_down(transports: Sequence[Transport], service: MoodService, grace_s: float) -> None:
    if not transports:
        return
    log.info("Shutting down: finishing the work in hand (up to %.0f s)", grace_s)
    await _each(transports, "stop taking updates", lambda t: t.stop_intake())
    service.stop_accepting()
    if not await service.drain(grace_s):
        log.warning("%d requests still running; closing anyway", service.in_flight.count)
    await _each(transports, "close", lambda t: t.close(grace_s))
    log.info("Stopped: %s", ", ".join(t.name for t in transports))


async def _each(
    transports: Sequence[Transport], what: str, step: Callable[[Transport], Awaitable[None]]
) -> None:
    results = await asyncio.gather(*(step(t) for t in transports), return_exceptions=True)
    for transport, result in zip(transports, results, strict=True):
        if isinstance(result, BaseException):
            log.error("%s could not %s", transport.name, what, exc_info=result)


@contextmanager
def _signals_set(stop: asyncio.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set `stop`; a second one cancels the running task (stop right now)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("%s again: stopping now", sig.name)
            if task:
                task.cancel()
            return
        log.info("%s received: shutting down gracefully", sig.name)
        stop.set()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # not the main thread, or no signals on this platform
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
