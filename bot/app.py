"""Wiring: build the engine, music and history once from the settings, and close them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from bot.core import MoodService, utc_now
from bot.history import History, HistoryUnavailable, open_history
from bot.music import MusicRecommender, SpotifySearch, shipped_catalogue
from bot.settings import Settings
from ml.engine import EmotionEngine

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 3600.0  # the retention purge runs at start-up, then hourly


def build_music(settings: Settings) -> MusicRecommender:
    """The catalogue picker, with Spotify playlists when credentials are set.

    Raises CatalogueError for a missing or damaged catalogue (start-up stops with one line).
    """
    catalogue = shipped_catalogue(settings.catalogue_path)
    spotify = None
    if settings.spotify_configured:
        assert settings.spotify_client_id and settings.spotify_client_secret
        spotify = SpotifySearch(
            settings.spotify_client_id,
            settings.spotify_client_secret.get_secret_value(),
            api_url=settings.spotify_api_url,
            token_url=settings.spotify_token_url,
            timeout_s=settings.music_deadline_s,
            market=settings.spotify_market,
        )
    music = MusicRecommender(
        spotify,
        catalogue=catalogue,
        deadline_s=settings.music_deadline_s,
        count=settings.music_count,
        allow_explicit=settings.allow_explicit,
    )
    log.info(
        "Music: %d catalogue tracks%s",
        len(catalogue),
        ", Spotify playlists" if spotify else " (no Spotify credentials: no playlists)",
    )
    return music


def button_secret(settings: Settings) -> bytes | None:
    """The key that signs correction buttons: MOODBOT_BUTTON_SECRET, else None (random)."""
    secret = settings.button_secret
    return secret.get_secret_value().encode() if secret else None


def load_engine(settings: Settings) -> EmotionEngine:
    """The engine MOODBOT_MODEL names, or the test-only stub (MOODBOT_ENGINE=stub)."""
    if settings.engine == "stub":
        from ml.stub import stub_engine

        log.warning("MOODBOT_ENGINE=stub: every photo is answered 'happy' unseen (tests only)")
        return stub_engine(settings.engine_config())
    return EmotionEngine.load(settings.model, settings.engine_config())


@asynccontextmanager
async def open_service(settings: Settings) -> AsyncIterator[MoodService]:
    """The core with its resources, loaded once; everything is closed on the way out."""
    # First: a bad catalogue or MOODBOT_GENRE fails in a fraction of a second.
    music = build_music(settings)
    genre = music.resolve_genre(settings.default_genre) if settings.default_genre else None
    engine = await asyncio.to_thread(load_engine, settings)
    try:
        history = await open_history(settings.database)
        try:
            async with retention_purge(history, settings.retention_days):
                yield MoodService(
                    engine,
                    music,
                    history,
                    group_window=timedelta(hours=settings.group_window_hours),
                    default_genre=genre,
                    retention_days=settings.retention_days,
                    button_secret=button_secret(settings),
                    music_memory=settings.music_memory,
                )
        finally:
            music.close()
            await history.aclose()
    finally:
        await engine.aclose()


async def purge_old_moods(
    history: History, retention_days: int, *, clock: Callable[[], datetime] = utc_now
) -> int:
    """Delete the moods older than `retention_days` days; returns how many went."""
    deleted = await history.delete_older_than(clock() - timedelta(days=retention_days))
    log.info("Retention: deleted %d moods older than %d days", deleted, retention_days)
    return deleted


async def _keep_purging(
    history: History, retention_days: int, every_s: float, clock: Callable[[], datetime]
) -> None:
    while True:
        try:
            await purge_old_moods(history, retention_days, clock=clock)
        except HistoryUnavailable as exc:
            # A full or read-only disk must not stop the bot; the next round tries again.
            log.warning("Retention purge skipped: %s", exc)
        await asyncio.sleep(every_s)


@asynccontextmanager
async def retention_purge(
    history: History,
    retention_days: int,
    *,
    every_s: float = RETENTION_EVERY_S,
    clock: Callable[[], datetime] = utc_now,
) -> AsyncIterator[asyncio.Task[None] | None]:
    """Purge old moods now and every `every_s` seconds while the block runs (0 days: never).

    The purge task is cancelled and awaited on the way out, before the history closes.
    """
    if retention_days <= 0:
        log.info("Retention: moods are kept until their owner runs /forget")
        yield None
        return
    task = asyncio.create_task(
        _keep_purging(history, retention_days, every_s, clock), name="moodbot-retention"
    )
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
