"""Wiring: build the engine, music and history once from the settings, and close them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from bot.core import MoodService
from bot.history import AsyncHistory
from bot.music import MusicRecommender, SpotifySearch
from bot.settings import Settings
from ml.engine import EmotionEngine

log = logging.getLogger(__name__)


def build_music(settings: Settings) -> MusicRecommender:
    """Spotify search when credentials are set, search links otherwise."""
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
    log.info("Music: %s", "Spotify search" if spotify else "Spotify search links (no credentials)")
    return MusicRecommender(spotify, deadline_s=settings.music_deadline_s)


@asynccontextmanager
async def open_service(settings: Settings) -> AsyncIterator[MoodService]:
    """The core with its resources, loaded once; everything is closed on the way out."""
    engine = await asyncio.to_thread(EmotionEngine.load, settings.model, settings.engine_config())
    try:
        history = await AsyncHistory.open(settings.db_path)
        try:
            yield MoodService(
                engine,
                build_music(settings),
                history,
                group_window=timedelta(hours=settings.group_window_hours),
                default_genre=settings.default_genre,
            )
        finally:
            await history.aclose()
    finally:
        engine.close()
