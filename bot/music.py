"""Music for a mood: emotion -> keywords -> Spotify search, or Spotify search links."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
import spotipy
from requests.adapters import HTTPAdapter
from spotipy.cache_handler import MemoryCacheHandler
from spotipy.exceptions import SpotifyException, SpotifyOauthError
from spotipy.oauth2 import SpotifyClientCredentials

from bot.redact import redact_authorization
from ml.labels import EMOTIONS, MODES, emotion_for

logger = logging.getLogger(__name__)

# --- Emotions and keywords -------------------------------------------------------------------

# The first six rows are the seed's table ("exiting" fixed to "exciting"); "calm" is a music
# mood only (used by the calm mode), never a detected emotion.
KEYWORDS: dict[str, tuple[str, ...]] = {
    "happy": (
        "happy", "delighted", "glad", "exciting", "pleased",
        "energetic", "cheerful", "satisfied", "fulfilled", "overjoyed",
    ),
    "sad": (
        "sad", "unhappy", "tearful", "gloomy", "depressed",
        "dejected", "heartbroken", "sorrowful", "hurt", "disappointed",
    ),
    "angry": (
        "angry", "mad", "upset", "furious", "livid",
        "irritated", "enraged", "incensed", "outburst", "resentful",
    ),
    "anxious": (
        "anxious", "nervous", "uneasy", "tense", "worried",
        "apprehensive", "edgy", "restless", "uncertain", "shaky",
    ),
    "hurt": (
        "hurt", "injured", "damaged", "wounded", "scarred",
        "sore", "bruised", "painful", "aching", "afflicted",
    ),
    "neutral": (
        "neutral", "emotionless", "unfeeling", "cold", "unresponsive",
        "impassive", "apathetic", "stoic", "indifferent", "unbiased",
    ),
    "fear": (
        "fear", "scared", "afraid", "frightened", "terrified",
        "dread", "panic", "haunted", "alarmed", "spooked",
    ),
    "disgust": (
        "disgust", "disgusted", "repulsed", "revolted", "sickened",
        "nauseated", "appalled", "loathing", "contempt", "bitter",
    ),
    "surprise": (
        "surprise", "surprised", "amazed", "astonished", "shocked",
        "stunned", "startled", "astounded", "unexpected", "speechless",
    ),
    "embarrassed": (
        "embarrassed", "awkward", "flustered", "shy", "blushing",
        "sheepish", "bashful", "self-conscious", "mortified", "timid",
    ),
    "calm": (
        "calm", "peaceful", "relaxed", "serene", "soothing",
        "gentle", "tranquil", "mellow", "soft", "chill",
    ),
}  # fmt: skip


class UnknownEmotion(ValueError):
    """Unknown emotion"""


def normalize_emotion(name: str) -> str:
    """Return the canonical English emotion for an English, Korean or alias name."""
    emotion = emotion_for(name)
    if emotion is None:
        raise UnknownEmotion(f"{UnknownEmotion.__doc__}: {name!r} (known: {', '.join(EMOTIONS)})")
    return emotion


# --- Modes -----------------------------------------------------------------------------------


# match: music for the mood you are in.
# lift: negative moods get uplifting (happy) music; happy and surprise already feel bright and
#   stay; neutral gets a push towards happy.
# calm: every mood gets calm music; for sad and hurt that means gentle songs rather than more
#   sadness, for the aroused moods (angry, anxious, fear, surprise, happy) it settles them.
_MODE_MOODS: dict[str, dict[str, str]] = {
    "match": {name: name for name in EMOTIONS},
    "lift": {
        "happy": "happy",
        "sad": "happy",
        "angry": "happy",
        "anxious": "happy",
        "hurt": "happy",
        "neutral": "happy",
        "fear": "happy",
        "disgust": "happy",
        "surprise": "surprise",
        "embarrassed": "happy",
    },
    "calm": dict.fromkeys(EMOTIONS, "calm"),
}


def music_mood(emotion: str, mode: str) -> str:
    """Return the mood the music should be for, given the user's emotion and a mode."""
    if mode not in _MODE_MOODS:
        raise ValueError(f"Unknown music mode: {mode!r} (known: {', '.join(MODES)})")
    return _MODE_MOODS[mode][normalize_emotion(emotion)]


def choose_keywords(mood: str, rng: random.Random) -> tuple[str, ...]:
    """Pick half of a mood's keywords at random, kept in table order."""
    words = KEYWORDS[mood]
    chosen = set(rng.sample(words, k=len(words) // 2))
    return tuple(word for word in words if word in chosen)


def _clean_genre(genre: str | None) -> str | None:
    return (genre or "").strip() or None


def build_query(keywords: Iterable[str], genre: str | None = None) -> str:
    """Join an optional genre and keywords into one search query."""
    return " ".join([genre, *keywords] if genre else keywords)


# --- Data model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    """One link to listen to."""

    title: str
    url: str
    kind: str  # "track" | "playlist" | "search"


@dataclass(frozen=True)
class MusicSuggestion:
    """What we suggest for one emotion, and how we got there."""

    emotion: str
    music_mood: str
    mode: str
    keywords: tuple[str, ...]
    genre: str | None
    recommendations: tuple[Recommendation, ...]
    source: str  # "spotify" | "search-links"
    fallback_reason: str | None  # None when Spotify answered


SEARCH_URL = "https://open.spotify.com/search/"
_OPEN_SPOTIFY = "https://open.spotify.com/"


def search_link(query: str) -> Recommendation:
    """Return an open.spotify.com search link; it works without any account."""
    return Recommendation(f"Spotify search: {query}", SEARCH_URL + quote(query, safe=""), "search")


def search_links(keywords: tuple[str, ...], genre: str | None = None) -> tuple[Recommendation, ...]:
    """Return a link for all keywords, then one for each of the first two keyword pairs."""
    queries = [build_query(keywords, genre)]
    queries += [build_query(keywords[i : i + 2], genre) for i in range(0, min(len(keywords), 4), 2)]
    return _dedupe(search_link(query) for query in queries)


def _dedupe(recommendations: Iterable[Recommendation]) -> tuple[Recommendation, ...]:
    by_url: dict[str, Recommendation] = {}
    for rec in recommendations:
        by_url.setdefault(rec.url, rec)
    return tuple(by_url.values())


# --- Errors ----------------------------------------------------------------------------------


class MusicServiceError(Exception):
    """The music service could not answer"""

    reason = "service error"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(f"{self.__doc__} ({detail})" if detail else self.__doc__)


class RateLimited(MusicServiceError):
    """Spotify rate limit reached"""

    reason = "rate limited"

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"retry after {retry_after:g} s")


class ServiceRefused(MusicServiceError):
    """Spotify refused the request"""

    def __init__(self, status: int) -> None:
        self.status = status
        self.reason = f"refused ({status})"
        super().__init__(f"HTTP {status}")


class ServiceUnavailable(MusicServiceError):
    """Spotify is unavailable"""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class BadResponse(MusicServiceError):
    """Spotify answered with something unexpected"""

    reason = "bad response"


# --- Spotify client --------------------------------------------------------------------------


def _session_without_retries() -> requests.Session:
    # With spotipy's own Retry, a 429 becomes a RetryError that loses Retry-After, or a
    # thread asleep for the whole Retry-After. We retry ourselves, with a cap.
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class _ClientCredentials(SpotifyClientCredentials):
    """Client-credentials flow against a configurable token URL, token kept in memory."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        token_url: str,
        timeout_s: float,
        session: requests.Session,
    ) -> None:
        super().__init__(
            client_id,
            client_secret,
            requests_session=session,
            requests_timeout=timeout_s,
            cache_handler=MemoryCacheHandler(),  # the default writes a .cache file in the cwd
        )
        # spotipy 2.26 reads the token URL from this attribute when it posts the request.
        self.OAUTH_TOKEN_URL = token_url


def _retry_after(headers: Any) -> float:
    try:
        return max(0.0, float(headers.get("Retry-After")))
    except (AttributeError, TypeError, ValueError):
        return 1.0  # no usable header: a short, conservative guess


def _from_status(status: int, headers: Any = None) -> MusicServiceError:
    if status == 429:
        return RateLimited(_retry_after(headers))
    if status >= 500:
        return ServiceUnavailable("server error")
    if status >= 400:
        return ServiceRefused(status)
    return BadResponse(f"HTTP {status}")


def _from_token_error(exc: SpotifyOauthError) -> MusicServiceError:
    # spotipy raises SpotifyOauthError while handling the HTTPError, which keeps the status.
    context = exc.__context__
    response = getattr(context, "response", None)
    if response is None:
        return BadResponse("token request failed")
    return _from_status(response.status_code, response.headers)


def _external_url(item: dict[str, Any]) -> str | None:
    urls = item.get("external_urls")
    url = urls.get("spotify") if isinstance(urls, dict) else None
    # Only links to Spotify itself reach the chat.
    return url if isinstance(url, str) and url.startswith(_OPEN_SPOTIFY) else None


def _track(item: Any) -> Recommendation | None:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        return None
    url = _external_url(item)
    if url is None:
        return None
    artists = item.get("artists") if isinstance(item.get("artists"), list) else []
    names = [a["name"] for a in artists if isinstance(a, dict) and isinstance(a.get("name"), str)]
    title = f"{item['name']} — {', '.join(names)}" if names else item["name"]
    return Recommendation(title, url, "track")


def _playlist(item: Any) -> Recommendation | None:
    # Spotify returns null items in playlist results.
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        return None
    url = _external_url(item)
    return Recommendation(item["name"], url, "playlist") if url else None


def _items(data: Any, kind: str) -> list[Any]:
    page = data.get(f"{kind}s") if isinstance(data, dict) else None
    items = page.get("items") if isinstance(page, dict) else None
    if not isinstance(items, list):
        raise BadResponse(f"no {kind}s.items")
    return items


class SpotifySearch:
    """A thin synchronous Spotify search client (client-credentials flow, no retries)."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        api_url: str = "https://api.spotify.com/v1/",
        token_url: str = "https://accounts.spotify.com/api/token",
        timeout_s: float = 3.0,
        market: str | None = None,
    ) -> None:
        if not client_id or not client_secret:
            # spotipy would silently fall back to SPOTIPY_* environment variables.
            raise ValueError("SpotifySearch needs a client id and a client secret")
        # spotipy logs whole request headers (Basic id:secret, Bearer token) at DEBUG.
        redact_authorization(["spotipy.client", "spotipy.oauth2"])
        self._market = market
        self._sessions = (_session_without_retries(), _session_without_retries())
        auth = _ClientCredentials(
            client_id,
            client_secret,
            token_url=token_url,
            timeout_s=timeout_s,
            session=self._sessions[0],
        )
        self._client = spotipy.Spotify(
            auth_manager=auth,
            requests_session=self._sessions[1],
            requests_timeout=timeout_s,
            # Unused with our own session; kept at zero in case spotipy builds one anyway.
            retries=0,
            status_retries=0,
            backoff_factor=0,
        )
        self._client.prefix = api_url if api_url.endswith("/") else api_url + "/"

    def search_tracks(self, query: str, limit: int = 3) -> list[Recommendation]:
        """Return up to `limit` (at most 10) tracks for a query."""
        return [rec for rec in map(_track, self._search(query, "track", limit)) if rec]

    def search_playlists(self, query: str, limit: int = 3) -> list[Recommendation]:
        """Return up to `limit` (at most 10) playlists for a query."""
        return [rec for rec in map(_playlist, self._search(query, "playlist", limit)) if rec]

    def close(self) -> None:
        """Close the HTTP sessions."""
        for session in self._sessions:
            session.close()

    def _search(self, query: str, kind: str, limit: int) -> list[Any]:
        # Development-mode apps get at most 10 results per call; more is a 400.
        if not 1 <= limit <= 10:
            raise ValueError(f"limit must be between 1 and 10, got {limit!r}")
        try:
            data = self._client.search(q=query, limit=limit, type=kind, market=self._market)
        except SpotifyException as exc:
            raise _from_status(exc.http_status, exc.headers) from exc
        except SpotifyOauthError as exc:
            raise _from_token_error(exc) from exc
        except requests.Timeout as exc:
            raise ServiceUnavailable("timeout") from exc
        except requests.ConnectionError as exc:
            raise ServiceUnavailable("unreachable") from exc
        except (ValueError, KeyError, TypeError) as exc:  # e.g. a token answer that isn't JSON
            raise BadResponse() from exc
        except requests.RequestException as exc:
            raise ServiceUnavailable("request failed") from exc
        # spotipy turns a 200 whose body is not JSON into None.
        return _items(data, kind)


# --- Recommender -----------------------------------------------------------------------------

NOT_CONFIGURED = "not configured"
TIMEOUT = "timeout"
NO_RESULTS = "no results"

# Spotify calls run on their own few threads. A call abandoned at the deadline keeps its thread
# until the HTTP timeout ends it; on the loop's default executor (min(32, cores + 4) threads) a
# slow Spotify would soon hold every thread and stall unrelated `to_thread` work (charts, file
# reads, DNS lookups). Here it can only hold these; later calls wait for a free one, and the
# deadline turns that wait into search links.
SPOTIFY_THREADS = 4


class MusicRecommender:
    """Suggest music for an emotion: Spotify when it answers in time, search links otherwise."""

    def __init__(
        self,
        spotify: SpotifySearch | None,
        *,
        rng: random.Random | None = None,
        deadline_s: float = 2.0,
        max_retries: int = 2,
        max_backoff_s: float = 1.0,
        tracks: int = 3,
    ) -> None:
        if deadline_s <= 0:
            raise ValueError(f"deadline_s must be positive, got {deadline_s!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
        if not 1 <= tracks <= 10:
            raise ValueError(f"tracks must be between 1 and 10, got {tracks!r}")
        self._spotify = spotify
        self._rng = rng or random.Random()
        self._deadline_s = deadline_s
        self._max_retries = max_retries
        self._max_backoff_s = max_backoff_s
        self._tracks = tracks
        self._threads: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Let go of the Spotify threads without waiting for calls still stuck in them."""
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None

    def _spotify_threads(self) -> ThreadPoolExecutor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(SPOTIFY_THREADS, "moodbot-spotify")
        return self._threads

    async def suggest(
        self, emotion: str, *, mode: str = "match", genre: str | None = None
    ) -> MusicSuggestion:
        """Return music for an emotion; never raises for Spotify problems."""
        emotion = normalize_emotion(emotion)
        mood = music_mood(emotion, mode)
        keywords = choose_keywords(mood, self._rng)
        genre = _clean_genre(genre)
        found, reason = await self._from_spotify(build_query(keywords, genre))
        if reason is not None:
            logger.log(
                logging.DEBUG if reason == NOT_CONFIGURED else logging.WARNING,
                "Music for %s falls back to search links: %s",
                mood,
                reason,
            )
            found = search_links(keywords, genre)
        return MusicSuggestion(
            emotion=emotion,
            music_mood=mood,
            mode=mode,
            keywords=keywords,
            genre=genre,
            recommendations=found,
            source="search-links" if reason else "spotify",
            fallback_reason=reason,
        )

    async def _from_spotify(self, query: str) -> tuple[tuple[Recommendation, ...], str | None]:
        if self._spotify is None:
            return (), NOT_CONFIGURED
        deadline = asyncio.get_running_loop().time() + self._deadline_s
        try:
            async with asyncio.timeout_at(deadline):
                found = await self._search(self._spotify, query, deadline)
        except TimeoutError:
            return (), TIMEOUT
        except MusicServiceError as exc:
            return (), exc.reason
        except Exception:
            # A bug or an unforeseen spotipy failure must still leave the user with music.
            logger.exception("Unexpected failure while searching Spotify")
            return (), "unexpected error"
        return (found, None) if found else ((), NO_RESULTS)

    async def _search(
        self, spotify: SpotifySearch, query: str, deadline: float
    ) -> tuple[Recommendation, ...]:
        tracks = await self._call(spotify.search_tracks, query, self._tracks, deadline)
        try:
            # A few playlists, because Spotify pads playlist results with nulls.
            playlists = await self._call(spotify.search_playlists, query, 5, deadline)
        except MusicServiceError as exc:
            logger.info("Playlist search failed, keeping tracks only: %s", exc.reason)
            playlists = []
        return _dedupe([*tracks, *playlists[:1]])

    async def _call(
        self,
        search: Callable[[str, int], list[Recommendation]],
        query: str,
        limit: int,
        deadline: float,
    ) -> list[Recommendation]:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                # spotipy blocks (requests): keep it off the event loop, on our own threads.
                # A call still queued when the deadline cancels this await never starts.
                return await loop.run_in_executor(self._spotify_threads(), search, query, limit)
            except (RateLimited, ServiceUnavailable) as exc:
                delay = self._backoff(exc, attempt)
                if attempt >= self._max_retries or delay is None or loop.time() + delay > deadline:
                    raise
                logger.info("Spotify %s, retrying in %.2f s", exc.reason, delay)
                await asyncio.sleep(delay)
                attempt += 1

    def _backoff(self, exc: MusicServiceError, attempt: int) -> float | None:
        if isinstance(exc, RateLimited):
            # Never sleep longer than the cap; a long Retry-After means give up now.
            return exc.retry_after if exc.retry_after <= self._max_backoff_s else None
        return min(self._max_backoff_s, 0.2 * 2**attempt)
