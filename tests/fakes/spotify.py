"""A fake Spotify Web API (client-credentials token + search) on 127.0.0.1 for offline tests.

Use the `fake_spotify` fixture (import it into a test module or conftest), or
`with FakeSpotify() as fake:`. Point a client at `fake.api_url` and `fake.token_url` with
`fake.client_id` / `fake.client_secret`, pick a behaviour, then read `fake.requests`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

BEHAVIOURS = (
    "normal",  # realistic answers
    "empty",  # search finds nothing
    "sparse",  # null items, missing fields, foreign links, a duplicate
    "rate_limited",  # 429 with Retry-After: <retry_after>
    "server_error",  # 500
    "forbidden",  # 403
    "garbage",  # 200 whose body is not JSON
    "wrong_shape",  # 200 with JSON of the wrong shape
    "hang",  # no answer until the fake closes (or hang_s passes)
    "slow",  # the normal answer, but only after slow_s (or when released)
)

_SPOTIFY = "https://open.spotify.com"


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received; header names are lower-case."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: str


class FakeSpotify:
    """A fake Spotify API server with switchable behaviours."""

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret-9f3k",
        hang_s: float = 30.0,
        slow_s: float = 5.0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.retry_after = 30  # seconds, sent with rate_limited answers
        self.hang_s = hang_s
        self.slow_s = slow_s
        self.requests: list[RecordedRequest] = []
        self.tokens: list[str] = []  # access tokens handed out
        self._search_behaviour = "normal"
        self._token_behaviour = "normal"
        self._script: deque[str] = deque()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        # A short poll interval keeps shutdown (once per test) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name="fake-spotify", daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        """Web API prefix (what spotipy calls `prefix`)."""
        return f"{self.url}/v1/"

    @property
    def token_url(self) -> str:
        """Client-credentials token endpoint."""
        return f"{self.url}/api/token"

    @property
    def search_behaviour(self) -> str:
        """How GET /v1/search answers once any scripted behaviours are used up."""
        return self._search_behaviour

    @search_behaviour.setter
    def search_behaviour(self, value: str) -> None:
        self._search_behaviour = _checked(value)

    @property
    def token_behaviour(self) -> str:
        """How POST /api/token answers."""
        return self._token_behaviour

    @token_behaviour.setter
    def token_behaviour(self, value: str) -> None:
        self._token_behaviour = _checked(value)

    def script_search(self, *behaviours: str) -> None:
        """Answer the next searches with these behaviours, in order, then `search_behaviour`."""
        with self._lock:
            self._script.extend(_checked(b) for b in behaviours)

    def searches(self) -> list[RecordedRequest]:
        """The search requests received so far."""
        return [r for r in self.requests if r.path == "/v1/search"]

    def token_requests(self) -> list[RecordedRequest]:
        """The token requests received so far."""
        return [r for r in self.requests if r.path == "/api/token"]

    def start(self) -> FakeSpotify:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def release(self) -> None:
        """Let hanging requests go; they end without an answer."""
        self._release.set()

    def close(self) -> None:
        """Release hanging requests, stop serving and wait for handler threads."""
        self.release()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> FakeSpotify:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Called from handler threads.

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_search_behaviour(self) -> str:
        with self._lock:
            return self._script.popleft() if self._script else self._search_behaviour

    def _issue_token(self) -> str:
        with self._lock:
            token = f"fake-access-token-{len(self.tokens) + 1}"
            self.tokens.append(token)
            return token

    def _wait_for_release(self) -> None:
        self._release.wait(self.hang_s)


def _checked(behaviour: str) -> str:
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"Unknown fake Spotify behaviour: {behaviour!r}")
    return behaviour


class _Server(ThreadingHTTPServer):
    # Join handler threads on close so nothing outlives the test.
    daemon_threads = False
    block_on_close = True
    fake: FakeSpotify


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # socket timeout: a silent client cannot pin a handler thread
    # HTTP/1.0: one request per connection, so handler threads end after each answer.
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def do_POST(self) -> None:
        request = self._recorded()
        if request.path == "/api/token":
            self._token(request)
        else:
            self._not_found()

    def do_GET(self) -> None:
        request = self._recorded()
        if request.path == "/v1/search":
            self._search(request)
        else:
            self._not_found()

    def _recorded(self) -> RecordedRequest:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        request = RecordedRequest(
            method=self.command,
            path=split.path,
            params=dict(parse_qsl(split.query)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        self.server.fake._record(request)
        return request

    # Endpoints

    def _token(self, request: RecordedRequest) -> None:
        fake = self.server.fake
        if self._misbehaved(fake.token_behaviour, {"token_type": "Bearer"}):
            return
        expected = base64.b64encode(f"{fake.client_id}:{fake.client_secret}".encode()).decode()
        if dict(parse_qsl(request.body)).get("grant_type") != "client_credentials":
            self._json(400, {"error": "unsupported_grant_type"})
        elif request.headers.get("authorization") != f"Basic {expected}":
            self._json(400, {"error": "invalid_client", "error_description": "Invalid client"})
        else:
            token = fake._issue_token()
            self._json(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    def _search(self, request: RecordedRequest) -> None:
        fake = self.server.fake
        behaviour = fake._next_search_behaviour()
        if self._misbehaved(behaviour, {"tracks": {"items": "not a list"}}):
            return
        if request.headers.get("authorization") not in {f"Bearer {t}" for t in fake.tokens}:
            self._error(401, "Invalid access token")
            return
        params = request.params
        kinds = params.get("type", "").split(",")
        limit = params.get("limit", "10")
        if not params.get("q"):
            self._error(400, "No search query")
        elif not kinds or not set(kinds) <= {"track", "playlist"}:
            self._error(400, "Bad search type field")
        elif not limit.isdigit() or not 1 <= int(limit) <= 10:
            # Development-mode apps get at most 10 results per call (2026).
            self._error(400, "Invalid limit")
        else:
            pages = {f"{k}s": _page(k, params["q"], int(limit), behaviour) for k in kinds}
            self._json(200, pages)

    # Answers

    def _misbehaved(self, behaviour: str, wrong_shape: object) -> bool:
        fake = self.server.fake
        if behaviour == "rate_limited":
            headers = {"Retry-After": str(fake.retry_after)}
            self._error(429, "API rate limit exceeded", headers)
        elif behaviour == "server_error":
            self._error(500, "Server error.")
        elif behaviour == "forbidden":
            self._error(403, "Forbidden.")
        elif behaviour == "garbage":
            self._raw(200, b"<html>upstream hiccup</html>", "application/json")
        elif behaviour == "wrong_shape":
            self._json(200, wrong_shape)
        elif behaviour == "hang":
            fake._wait_for_release()  # then close without answering
        elif behaviour == "slow":
            fake._release.wait(fake.slow_s)
            return False  # then answer as usual
        else:
            return False
        return True

    def _not_found(self) -> None:
        self._error(404, "Service not found")

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._json(status, {"error": {"status": status, "message": message}}, headers)

    def _json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        self._raw(status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers)

    def _raw(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


# Realistic JSON (shapes as the 2026 Web API returns them to development-mode apps:
# no `popularity`, nulls among playlist items).


def _fake_id(*parts: object) -> str:
    return hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()[:22]


def _linked(kind: str, id_: str, **fields: Any) -> dict[str, Any]:
    return {
        **fields,
        "external_urls": {"spotify": f"{_SPOTIFY}/{kind}/{id_}"},
        "href": f"https://api.spotify.com/v1/{kind}s/{id_}",
        "id": id_,
        "type": kind,
        "uri": f"spotify:{kind}:{id_}",
    }


def track_item(query: str, index: int) -> dict[str, Any]:
    """The fake's track number `index` (0-based) for a query."""
    words = query.split() or ["untitled"]
    word = words[index % len(words)].title()
    album = _linked("album", _fake_id("album", query, index), name=f"{word} Album")
    artist = _linked("artist", _fake_id("artist", word), name=f"The {word}s")
    return _linked(
        "track",
        _fake_id("track", query, index),
        album={**album, "album_type": "album", "images": [], "release_date": "2024-05-01"},
        artists=[artist],
        disc_number=1,
        duration_ms=180_000 + 1_000 * index,
        explicit=False,
        is_local=False,
        name=f"{word} Song {index + 1}",
        track_number=index + 1,
    )


def playlist_item(query: str, index: int) -> dict[str, Any]:
    """The fake's playlist number `index` (0-based) for a query."""
    id_ = _fake_id("playlist", query, index)
    return _linked(
        "playlist",
        id_,
        collaborative=False,
        description=f"Songs for {query}",
        images=[],
        name=f"{query.title()} Mix {index + 1}",
        owner={"display_name": "Fake Curator", "id": "fakecurator", "type": "user"},
        public=True,
        snapshot_id=_fake_id("snapshot", id_),
        tracks={"href": f"https://api.spotify.com/v1/playlists/{id_}/tracks", "total": 50},
    )


def _sparse_items(kind: str, query: str) -> list[Any]:
    good = track_item(query, 0) if kind == "track" else playlist_item(query, 0)
    no_artists = {k: v for k, v in track_item(query, 1).items() if k != "artists"}
    return [
        None,
        {"name": "No Link"},
        {"name": "Elsewhere", "external_urls": {"spotify": "https://example.com/x"}},
        {"external_urls": good["external_urls"]},  # no name
        no_artists if kind == "track" else playlist_item(query, 1),
        good,
        good,  # Spotify sometimes repeats an item
    ]


def _page(kind: str, query: str, limit: int, behaviour: str) -> dict[str, Any]:
    if behaviour == "empty":
        items: list[Any] = []
    elif behaviour == "sparse":
        items = _sparse_items(kind, query)[:limit]
    elif kind == "playlist":
        items = [None, *(playlist_item(query, i) for i in range(limit - 1))]
    else:
        items = [track_item(query, i) for i in range(limit)]
    return {
        "href": f"https://api.spotify.com/v1/search?offset=0&limit={limit}&type={kind}",
        "items": items,
        "limit": limit,
        "next": None,
        "offset": 0,
        "previous": None,
        "total": len(items),
    }


@pytest.fixture
def fake_spotify() -> Iterator[FakeSpotify]:
    """A running fake Spotify API, closed (hanging requests released) after the test."""
    with FakeSpotify() as fake:
        yield fake
