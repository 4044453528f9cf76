"""Music for a mood: real tracks from the shipped catalogue, chosen by how they sound.

emotion -> a place in valence x energy (bot/moodspace.py), moved by the mode -> the nearest
catalogue tracks (bot/picker.py). That answer needs no network and no account. With Spotify
credentials a playlist found by searching for mood words is added when Spotify answers within
the deadline; a Spotify failure never costs the catalogue answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import requests
import spotipy
from requests.adapters import HTTPAdapter
from spotipy.cache_handler import MemoryCacheHandler
from spotipy.exceptions import SpotifyException, SpotifyOauthError
from spotipy.oauth2 import SpotifyClientCredentials

from bot.catalogue import DEFAULT_PATH, TRACK_URL, Catalogue, Track
from bot.moodspace import Target, describing_mood, target_for
from bot.picker import DEFAULT_COUNT, MAX_COUNT, Pick, Picker
from bot.redact import redact_authorization
from ml.labels import EMOTIONS, MODES, emotion_for

logger = logging.getLogger(__name__)

# --- Emotions and keywords -------------------------------------------------------------------

# Only the Spotify extra uses these words: a playlist search for mood words is what the API can
# still do for an app (2026), and playlists named for a mood are made by people who listened.
# Tracks are never searched by these words any more (that found titles, not sounds).
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


# --- Spotify playlist words ------------------------------------------------------------------

# The mood whose words name the playlist: lift looks for happy playlists (surprise and happy
# stay), calm for calm ones.
_MODE_MOODS: dict[str, dict[str, str]] = {
    "match": {name: name for name in EMOTIONS},
    "lift": {name: "surprise" if name == "surprise" else "happy" for name in EMOTIONS},
    "calm": dict.fromkeys(EMOTIONS, "calm"),
}


def music_mood(emotion: str, mode: str) -> str:
    """The mood whose words the Spotify playlist search uses, for an emotion and a mode."""
    if mode not in _MODE_MOODS:
        raise ValueError(f"Unknown music mode: {mode!r} (known: {', '.join(MODES)})")
    return _MODE_MOODS[mode][normalize_emotion(emotion)]


def playlist_query(mood: str, genre: str | None, rng: random.Random) -> str:
    """The mood's own name and one more of its words, after the genre: 'k-pop sad gloomy'."""
    words = KEYWORDS[mood]
    return " ".join([*([genre] if genre else []), words[0], rng.choice(words[1:])])


# --- Data model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    """One link to listen to: a catalogue track, or a Spotify playlist."""

    title: str
    url: str
    kind: str  # "track" | "playlist"
    artists: tuple[str, ...] = ()
    genre: str | None = None
    valence: float | None = None
    energy: float | None = None

    @property
    def label(self) -> str:
        """What a button or a list shows: 'Title — Artist, Artist'."""
        return f"{self.title} — {', '.join(self.artists)}" if self.artists else self.title

    def as_json(self) -> dict[str, Any]:
        """The JSON of `moodbot music --json` and of `analyze --json`'s recommendations."""
        return {
            "title": self.title,
            "artists": list(self.artists),
            "url": self.url,
            "kind": self.kind,
            "genre": self.genre,
            "valence": self.valence,
            "energy": self.energy,
        }


def track_recommendation(track: Track, genre: str | None = None) -> Recommendation:
    """A catalogue track as a link; `genre` is the one asked for, else all of the track's."""
    return Recommendation(
        title=track.title,
        url=track.url,
        kind="track",
        artists=track.artists,
        genre=genre or ", ".join(track.genres),
        valence=track.valence,
        energy=track.energy,
    )


class MusicSource(StrEnum):
    """Where a suggestion's links come from."""

    CATALOGUE = "catalogue"  # Spotify added nothing (fallback_reason says why)
    CATALOGUE_AND_SPOTIFY = "catalogue+spotify"  # the tracks and a Spotify playlist


class FallbackReason(StrEnum):
    """Why Spotify added nothing; `fallback_reason` starts with one (a refusal adds its HTTP
    status: "refused (403)"), and /metrics counts them by these names."""

    NOT_CONFIGURED = "not configured"
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate limited"
    REFUSED = "refused"
    SERVICE_ERROR = "service error"
    SERVER_ERROR = "server error"
    UNREACHABLE = "unreachable"
    REQUEST_FAILED = "request failed"
    BAD_RESPONSE = "bad response"
    NO_RESULTS = "no results"
    UNEXPECTED_ERROR = "unexpected error"


@dataclass(frozen=True)
class MusicSuggestion:
    """What we suggest for one emotion, and how we got there."""

    emotion: str  # the mood read (for a group: the leading one)
    mode: str
    target: Target
    sound: str  # the mood whose place describes the target (the emotion itself in match mode)
    genre: str | None
    widened: bool  # the genre (or the catalogue) had too few tracks inside the target's region
    recommendations: tuple[Recommendation, ...]
    source: MusicSource
    fallback_reason: str | None  # why Spotify added nothing: a FallbackReason (None when it did)

    @property
    def track_ids(self) -> tuple[str, ...]:
        """The Spotify ids of the catalogue tracks suggested (remembered against repeats)."""
        return tuple(
            r.url.removeprefix(TRACK_URL) for r in self.recommendations if r.kind == "track"
        )


# --- Errors ----------------------------------------------------------------------------------


class MusicServiceError(Exception):
    """The music service could not answer"""

    reason: str = FallbackReason.SERVICE_ERROR

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(f"{self.__doc__} ({detail})" if detail else self.__doc__)


class RateLimited(MusicServiceError):
    """Spotify rate limit reached"""

    reason = FallbackReason.RATE_LIMITED

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"retry after {retry_after:g} s")


class ServiceRefused(MusicServiceError):
    """Spotify refused the request"""

    def __init__(self, status: int) -> None:
        self.status = status
        self.reason = f"{FallbackReason.REFUSED} ({status})"
        super().__init__(f"HTTP {status}")


class ServiceUnavailable(MusicServiceError):
    """Spotify is unavailable"""

    def __init__(self, reason: FallbackReason) -> None:
        self.reason = reason
        super().__init__(reason)


class BadResponse(MusicServiceError):
    """Spotify answered with something unexpected"""

    reason = FallbackReason.BAD_RESPONSE


# --- Spotify client --------------------------------------------------------------------------

_OPEN_SPOTIFY = "https://open.spotify.com/"


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
        return ServiceUnavailable(FallbackReason.SERVER_ERROR)
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
    """A thin synchronous Spotify playlist search (client-credentials flow, no retries)."""

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
            raise ServiceUnavailable(FallbackReason.TIMEOUT) from exc
        except requests.ConnectionError as exc:
            raise ServiceUnavailable(FallbackReason.UNREACHABLE) from exc
        except (ValueError, KeyError, TypeError) as exc:  # e.g. a token answer that isn't JSON
            raise BadResponse() from exc
        except requests.RequestException as exc:
            raise ServiceUnavailable(FallbackReason.REQUEST_FAILED) from exc
        # spotipy turns a 200 whose body is not JSON into None.
        return _items(data, kind)


# --- Recommender -----------------------------------------------------------------------------

NOT_CONFIGURED = FallbackReason.NOT_CONFIGURED
FALLBACK_REASONS: tuple[str, ...] = tuple(FallbackReason)

# Spotify calls run on their own few threads. A call abandoned at the deadline keeps its thread
# until the HTTP timeout ends it; on the loop's default executor (min(32, cores + 4) threads) a
# slow Spotify would soon hold every thread and stall unrelated `to_thread` work (charts, file
# reads, DNS lookups). Here it can only hold these; later calls wait for a free one, and the
# deadline turns that wait into "no playlist this time".
SPOTIFY_THREADS = 4


@cache
def shipped_catalogue(path: Path = DEFAULT_PATH) -> Catalogue:
    """The catalogue file, loaded once per process (CatalogueError when missing or damaged)."""
    return Catalogue.load(path)


class MusicRecommender:
    """Catalogue tracks for an emotion, plus a Spotify playlist when Spotify answers in time."""

    def __init__(
        self,
        spotify: SpotifySearch | None,
        *,
        catalogue: Catalogue | None = None,
        rng: random.Random | None = None,
        deadline_s: float = 2.0,
        max_retries: int = 2,
        max_backoff_s: float = 1.0,
        count: int = DEFAULT_COUNT,
        allow_explicit: bool = False,
    ) -> None:
        if deadline_s <= 0:
            raise ValueError(f"deadline_s must be positive, got {deadline_s!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
        if not 1 <= count <= MAX_COUNT:
            raise ValueError(f"count must be between 1 and {MAX_COUNT}, got {count!r}")
        self.picker = Picker(catalogue or shipped_catalogue())
        self._spotify = spotify
        self._rng = rng or random.Random()
        self._deadline_s = deadline_s
        self._max_retries = max_retries
        self._max_backoff_s = max_backoff_s
        self.count = count
        self.allow_explicit = allow_explicit
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

    def resolve_genre(self, name: str) -> str:
        """The catalogue genre for a name or alias (UnknownGenre lists the closest ones)."""
        return self.picker.resolve_genre(name)

    def pick(
        self,
        emotion: str,
        *,
        mode: str = "match",
        genre: str | None = None,
        exclude_ids: Iterable[str] = (),
        target: Target | None = None,
        count: int | None = None,
    ) -> Pick:
        """The catalogue's tracks for an emotion (or an explicit target); no network."""
        emotion = normalize_emotion(emotion)
        return self.picker.pick(
            target or target_for(emotion, mode),
            count=count or self.count,
            genre=self.resolve_genre(genre) if genre else None,
            allow_explicit=self.allow_explicit,
            exclude_ids=exclude_ids,
            rng=self._rng,
        )

    async def suggest(
        self,
        emotion: str,
        *,
        mode: str = "match",
        genre: str | None = None,
        exclude_ids: Iterable[str] = (),
        target: Target | None = None,
    ) -> MusicSuggestion:
        """Tracks for an emotion, plus a playlist when Spotify answers; never raises for Spotify.

        `target` replaces the emotion's own place (a group's blended one); `exclude_ids` are
        tracks not to offer again. UnknownEmotion and UnknownGenre are the caller's to handle.
        """
        emotion = normalize_emotion(emotion)
        if mode not in MODES:
            raise ValueError(f"Unknown music mode: {mode!r} (known: {', '.join(MODES)})")
        # ~1 ms of numpy: cheaper to run here than to hand to a thread.
        picked = self.pick(emotion, mode=mode, genre=genre, exclude_ids=exclude_ids, target=target)
        tracks = tuple(track_recommendation(t, picked.genre) for t in picked.tracks)
        query = playlist_query(music_mood(emotion, mode), picked.genre, self._rng)
        playlist, reason = await self._from_spotify(query)
        if reason is not None:
            logger.log(
                logging.DEBUG if reason == NOT_CONFIGURED else logging.WARNING,
                "No Spotify playlist for %s: %s",
                emotion,
                reason,
            )
        return MusicSuggestion(
            emotion=emotion,
            mode=mode,
            target=picked.target,
            sound=describing_mood(emotion, mode, picked.target, blended=target is not None),
            genre=picked.genre,
            widened=picked.widened,
            recommendations=tracks + playlist,
            source=MusicSource.CATALOGUE if reason else MusicSource.CATALOGUE_AND_SPOTIFY,
            fallback_reason=reason,
        )

    async def _from_spotify(self, query: str) -> tuple[tuple[Recommendation, ...], str | None]:
        if self._spotify is None:
            return (), NOT_CONFIGURED
        deadline = asyncio.get_running_loop().time() + self._deadline_s
        try:
            async with asyncio.timeout_at(deadline):
                # A few playlists, because Spotify pads playlist results with nulls.
                found = await self._call(self._spotify.search_playlists, query, 5, deadline)
        except TimeoutError:
            return (), FallbackReason.TIMEOUT
        except MusicServiceError as exc:
            return (), exc.reason
        except Exception:
            # A bug or an unforeseen spotipy failure must still leave the user with music.
            logger.exception("Unexpected failure while searching Spotify")
            return (), FallbackReason.UNEXPECTED_ERROR
        return (tuple(found[:1]), None) if found else ((), FallbackReason.NO_RESULTS)

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
