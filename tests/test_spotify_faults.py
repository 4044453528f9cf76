"""Spotify failing while people wait: the whole reply still comes within 3 s, with search links.

tests/test_music.py covers the recommender alone (each failure, retries, Retry-After); here
the real engine reads a real selfie through MoodService, and through the real Telegram bot,
while the fake Spotify on 127.0.0.1 is down, slow, rate limited, forbidden or talking nonsense.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from bot.catalogue import TRACK_URL
from bot.core import MoodService, Reply, Sender
from bot.history import AsyncHistory
from bot.music import SPOTIFY_THREADS, MusicRecommender, SpotifySearch
from bot.ratelimit import RateLimiter
from ml.engine import EmotionEngine
from tests.fakes.spotify import FakeSpotify
from tests.fakes.telegram import FakeTelegram, TgUser, running_bot

pytestmark = pytest.mark.slow

PROMISE_S = 3.0  # the reply still arrives within 3 s, with all its catalogue tracks
ALICE = Sender("telegram", "1001", "1001")


@pytest.fixture
def fake_spotify() -> Iterator[FakeSpotify]:
    with FakeSpotify() as fake:
        yield fake


def spotify_at(api_url: str, token_url: str, fake: FakeSpotify | None = None) -> MusicRecommender:
    """Music as the bot builds it: real spotipy, the recommender's default deadline."""
    client_id, secret = (fake.client_id, fake.client_secret) if fake else ("id", "secret")
    search = SpotifySearch(client_id, secret, api_url=api_url, token_url=token_url)
    return MusicRecommender(search, rng=random.Random(5))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on return: nothing listens there


def assert_catalogue_reply(reply: Reply, reason: str) -> None:
    """Spotify failed: the reply has every catalogue track, only the playlist is missing."""
    assert reply.ok and reply.analysis and reply.analysis.primary
    assert reply.text.startswith("You look happy")
    assert "🎵 happy → bright, upbeat songs" in reply.text
    assert reply.music and reply.music.source == "catalogue"
    assert reply.music.fallback_reason == reason
    assert len(reply.links) == 5 and all(link.url.startswith(TRACK_URL) for link in reply.links)


FAULTS = {
    # name: (search behaviour, token behaviour, fallback reason)
    "slow-search": ("slow", "normal", "timeout"),
    "hanging-search": ("hang", "normal", "timeout"),
    "429-long-retry-after": ("rate_limited", "normal", "rate limited"),
    "403": ("forbidden", "normal", "refused (403)"),
    "5xx": ("server_error", "normal", "server error"),
    "garbage-body": ("garbage", "normal", "bad response"),
    "wrong-json-shape": ("wrong_shape", "normal", "bad response"),
    "token-5xx": ("normal", "server_error", "server error"),
    "token-garbage": ("normal", "garbage", "bad response"),
    "token-hangs": ("normal", "hang", "timeout"),
}


@pytest.mark.parametrize("fault", FAULTS)
async def test_full_reply_within_3_s_whatever_spotify_does(
    fault: str,
    fake_spotify: FakeSpotify,
    engine: EmotionEngine,
    history: AsyncHistory,
    astronaut_jpeg: bytes,
) -> None:
    search, token, reason = FAULTS[fault]
    fake_spotify.search_behaviour, fake_spotify.token_behaviour = search, token
    fake_spotify.retry_after = 3600  # an hour: waiting for it is not an option
    music = spotify_at(fake_spotify.api_url, fake_spotify.token_url, fake_spotify)
    service = MoodService(engine, music, history)

    started = time.monotonic()
    reply = await service.analyze_selfie(ALICE, astronaut_jpeg)
    elapsed = time.monotonic() - started
    fake_spotify.release()
    music.close()

    assert_catalogue_reply(reply, reason)
    assert elapsed < PROMISE_S
    assert len(await history.recent("telegram", "1001")) == 1  # the mood is kept all the same


async def test_spotify_down_connection_refused(
    engine: EmotionEngine, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    port = closed_port()
    music = spotify_at(f"http://127.0.0.1:{port}/v1/", f"http://127.0.0.1:{port}/api/token")
    started = time.monotonic()
    reply = await MoodService(engine, music, history).analyze_selfie(ALICE, astronaut_jpeg)
    assert time.monotonic() - started < PROMISE_S
    assert_catalogue_reply(reply, "unreachable")


async def test_slow_spotify_through_the_telegram_bot(
    fake_spotify: FakeSpotify, engine: EmotionEngine, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    fake_spotify.search_behaviour = "slow"
    music = spotify_at(fake_spotify.api_url, fake_spotify.token_url, fake_spotify)
    service = MoodService(engine, music, history, limiter=RateLimiter(burst=5, per_minute=60))
    user = TgUser(1001, "Alice")
    async with FakeTelegram() as fake, running_bot(service, fake):
        try:
            photo = fake.send_photo(user, fake.private(user), astronaut_jpeg, sides=(320, 640))
            sent = time.monotonic()
            answer = await fake.wait_for("sendMessage", chat_id=user.id, timeout=10)
        finally:
            fake_spotify.release()
            music.close()
    assert answer.at - sent < PROMISE_S
    assert answer.text.startswith("You look happy")
    assert len(answer.link_buttons) == 5
    assert all(b["url"].startswith(TRACK_URL) for b in answer.link_buttons)
    assert photo["photo"]


# --- a slow Spotify must not starve other threaded work ------------------------------------------


@pytest.fixture
async def hanging_spotify() -> AsyncIterator[FakeSpotify]:
    fake = FakeSpotify().start()
    fake.search_behaviour = "hang"
    yield fake
    fake.close()


async def test_many_slow_spotify_calls_leave_threads_for_other_work(
    hanging_spotify: FakeSpotify,
) -> None:
    # More stuck calls than the loop's default executor has threads (at most 32): were
    # spotipy run there, nothing else could get a thread until the HTTP timeouts end.
    music = spotify_at(hanging_spotify.api_url, hanging_spotify.token_url, hanging_spotify)
    suggestions = [asyncio.create_task(music.suggest("happy")) for _ in range(40)]
    try:
        while len(hanging_spotify.searches()) < SPOTIFY_THREADS:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await asyncio.wait_for(asyncio.to_thread(time.sleep, 0.01), timeout=1.0)
        other_work_s = time.monotonic() - started
        results = await asyncio.wait_for(asyncio.gather(*suggestions), timeout=PROMISE_S)
    finally:
        hanging_spotify.release()
        music.close()
    assert other_work_s < 1.0
    assert {r.fallback_reason for r in results} == {"timeout"}
    assert all(len(r.recommendations) == 5 for r in results)
    assert all(r.recommendations[0].url.startswith(TRACK_URL) for r in results)
    # Only the pool's threads ever reached Spotify; queued calls ended at the deadline unsent.
    assert len(hanging_spotify.searches()) == SPOTIFY_THREADS
