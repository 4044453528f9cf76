"""The web front door: the demo page, /api/analyze, /healthz and /metrics, on aiohttp.

It runs in the same process and event loop as the chat bots and calls the same core, so a
photo from the page gets exactly the answers, errors and limits a photo from a chat gets.
Photos are read into memory and never written anywhere (multipart bodies are streamed by
hand: aiohttp's `request.post()` would spool file fields to a temporary file).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, hdrs, web

from bot.core import MoodService, Reply, Sender, Upload
from bot.texts import LANGUAGES, emotion_name, say
from bot.transports import StartupError, TransportStates
from bot.web.health import check_health
from bot.web.metrics import CONTENT_TYPE, Metrics
from bot.web.page import negotiate_language, page_texts
from ml.errors import ErrorCode, ImageTooLarge
from ml.labels import EMOJI

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
# Room for the multipart envelope (boundaries, part headers) around the photo itself.
ENVELOPE_BYTES = 64 * 1024
CHUNK_BYTES = 64 * 1024
PHOTO_FIELD = "photo"
# The HTTP status for each of the core's error codes; anything unknown is a server error.
STATUS: dict[ErrorCode | None, int] = {
    None: 200,
    ErrorCode.NO_FACE: 422,
    ErrorCode.UNREADABLE: 400,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.DOWNLOAD_FAILED: 400,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.BUSY: 503,
    ErrorCode.CLOSED: 503,
    ErrorCode.BAD_ARGUMENT: 400,
    ErrorCode.CORRECTION_INVALID: 403,
    ErrorCode.CORRECTION_EXPIRED: 410,
    ErrorCode.CORRECTION_GONE: 410,
}
MAX_CORRECTION_BYTES = 1024
# No IP addresses in the access log: the demo is anonymous.
ACCESS_LOG_FORMAT = '"%r" %s %b %Tfs'
# Everything comes from this server: the browser enforces "no CDN, no fonts, no trackers".
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

SERVICE = web.AppKey("service", MoodService)
METRICS = web.AppKey("metrics", Metrics)
STATES = web.AppKey("states", TransportStates)
MAX_BYTES = web.AppKey("max_bytes", int)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    service: MoodService,
    *,
    metrics: Metrics | None = None,
    states: TransportStates | None = None,
) -> web.Application:
    """The aiohttp application; `metrics` is made (and hooked into the core) when not given.

    Photos are limited to the engine's MOODBOT_MAX_IMAGE_BYTES, as on every transport.
    """
    limit = service.max_image_bytes
    if metrics is None:
        metrics = Metrics(service)
        service.observer = metrics
    app = web.Application(
        client_max_size=limit + ENVELOPE_BYTES, middlewares=[_security_headers, _json_errors]
    )
    app[SERVICE] = service
    app[METRICS] = metrics
    app[STATES] = states or TransportStates()
    app[MAX_BYTES] = limit
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
    app.router.add_get("/api/ui", ui)
    app.router.add_post("/api/analyze", analyze)
    app.router.add_post("/api/correct", correct)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    app.router.add_get("/metrics", metrics_page)
    return app


# --- middlewares ----------------------------------------------------------------------------


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.update(SECURITY_HEADERS)
    return response


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """API callers get JSON for every failure, never an HTML error page or a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        code = ErrorCode.TOO_LARGE if exc.status == 413 else ErrorCode.ERROR
        return _error(_language(request), code, exc.status, detail=exc.reason)
    except Exception:
        if not request.path.startswith("/api/"):
            raise
        log.exception("The web request %s failed", request.path)
        return _error(_language(request), ErrorCode.FAILED, 500)


# --- the page -------------------------------------------------------------------------------


async def index(request: web.Request) -> web.StreamResponse:
    """The demo page."""
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def ui(request: web.Request) -> web.Response:
    """The page's words in every language, which one to start with, and the size limit."""
    return web.json_response(
        {
            "lang": _language(request),
            "languages": list(LANGUAGES),
            "max_bytes": request.app[MAX_BYTES],
            "field": PHOTO_FIELD,
            "texts": {lang: page_texts(lang) for lang in LANGUAGES},
        },
        dumps=_dumps,
    )


# --- analysis -------------------------------------------------------------------------------


async def analyze(request: web.Request) -> web.Response:
    """A photo (multipart field `photo`, or the raw body) in, the core's answer out as JSON.

    Nothing is stored: the analysis is anonymous and goes to no history.
    """
    service = request.app[SERVICE]
    lang = _language(request)
    upload = await _upload(request, request.app[MAX_BYTES])
    reply = await service.analyze_selfie(_web_sender(request, lang), upload, remember=False)
    status = STATUS.get(reply.error_code, 500)
    response = web.json_response(reply_json(reply, lang), status=status, dumps=_dumps)
    if reply.error_code in (ErrorCode.BUSY, ErrorCode.CLOSED):
        response.headers["Retry-After"] = "5"
    return response


async def correct(request: web.Request) -> web.Response:
    """ "Not quite?" from the page: JSON {ref, emotion} in, music for that emotion out.

    Web analyses are stored nowhere, so this changes only the music on the page.
    """
    lang = _language(request)
    body = await _small_json(request)
    ref, emotion = body.get("ref"), body.get("emotion")
    if not isinstance(ref, str) or not isinstance(emotion, str):
        return _error(lang, ErrorCode.ERROR, 400, detail="ref and emotion are required")
    reply = await request.app[SERVICE].correct(_web_sender(request, lang), ref, emotion)
    return web.json_response(
        correction_json(reply, lang), status=STATUS.get(reply.error_code, 500), dumps=_dumps
    )


async def _small_json(request: web.Request) -> dict[str, Any]:
    """A JSON object body of at most MAX_CORRECTION_BYTES; {} for anything else."""
    if request.content_length is not None and request.content_length > MAX_CORRECTION_BYTES:
        return {}
    raw = await request.content.read(MAX_CORRECTION_BYTES + 1)
    try:
        body = json.loads(raw) if len(raw) <= MAX_CORRECTION_BYTES else None
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def _upload(request: web.Request, limit: int) -> Upload:
    """The photo as an `Upload`, so the core applies its own type, size and busy checks."""
    declared = request.content_length
    # Only a body that cannot fit even without its envelope is refused by its declared size;
    # otherwise the photo's real size is checked while it streams in.
    size = declared if declared is not None and declared > limit + ENVELOPE_BYTES else None
    if not request.content_type.startswith("multipart/"):
        fetch = functools.partial(_read_capped, request.content.read, limit)
        return Upload(fetch=fetch, size=size, mime_type=request.content_type)
    if size is not None:
        return Upload(fetch=_nothing, size=size)
    part = await _photo_part(request)
    if part is None:
        return Upload(fetch=_nothing)  # no photo in the form: the decoder calls it unreadable
    fetch = functools.partial(_read_capped, part.read_chunk, limit)
    return Upload(fetch=fetch, mime_type=part.headers.get(hdrs.CONTENT_TYPE))


async def _photo_part(request: web.Request) -> BodyPartReader | None:
    """The multipart part named `photo` (or the first file part), without reading its body."""
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if isinstance(part, BodyPartReader) and (part.name == PHOTO_FIELD or part.filename):
            return part
        await part.release()
    return None


async def _nothing() -> bytes:
    return b""


async def _read_capped(read: Callable[[int], Awaitable[bytes]], limit: int) -> bytes:
    """Read a body chunk by chunk, refusing it as soon as it passes `limit` bytes."""
    chunks: list[bytes] = []
    total = 0
    while chunk := await read(CHUNK_BYTES):
        total += len(chunk)
        if total > limit:
            raise ImageTooLarge(f"the limit is {limit / 1e6:.1f} MB")
        chunks.append(chunk)
    return b"".join(chunks)


def _web_sender(request: web.Request, lang: str) -> Sender:
    return Sender(platform="web", chat_id="web", user_id=_client(request), language=lang)


def _music_json(reply: Reply) -> dict[str, Any]:
    """The music part of an answer, and the "Not quite?" ref that lets the page correct it."""
    music = reply.music
    assert music is not None
    return {
        "music": {
            "source": music.source,
            "mood": music.emotion,
            "mode": music.mode,
            "target": {"valence": music.target.valence, "energy": music.target.energy},
            "genre": music.genre,
            "widened": music.widened,
            "fallback_reason": music.fallback_reason,
        },
        "links": [{**r.as_json(), "label": r.label} for r in reply.links],
        "correction": {"ref": reply.correction.ref} if reply.correction else None,
    }


def _failure_json(reply: Reply, lang: str) -> dict[str, Any]:
    return {"ok": False, "lang": lang, "error": {"code": reply.error_code, "message": reply.text}}


def correction_json(reply: Reply, lang: str) -> dict[str, Any]:
    """The answer to a correction: the chosen mood, the new headline, music and why."""
    if not reply.ok:
        return _failure_json(reply, lang)
    assert reply.music is not None
    emotion = reply.music.emotion
    return {
        "ok": True,
        "lang": lang,
        "emotion": emotion,
        "label": emotion_name(lang, emotion),
        "emoji": EMOJI.get(emotion, ""),
        "headline": reply.headline,
        "why": reply.why,
        **_music_json(reply),
        "error": None,
    }


def reply_json(reply: Reply, lang: str) -> dict[str, Any]:
    """The JSON the page renders: the faces with their boxes, the mood, the music and why."""
    if not reply.ok:
        return _failure_json(reply, lang)
    analysis = reply.analysis
    assert analysis is not None and analysis.primary is not None
    primary = analysis.primary
    return {
        "ok": True,
        "lang": lang,
        "emotion": primary.emotion,
        "label": emotion_name(lang, primary.emotion),
        "emoji": EMOJI.get(primary.emotion, ""),
        "confidence": round(primary.confidence, 4),
        "headline": reply.headline,
        "why": reply.why,
        "image": {"width": analysis.image_size[0], "height": analysis.image_size[1]},
        "faces": [
            {
                **face.to_json(),
                "label": emotion_name(lang, face.emotion),
                "emoji": EMOJI.get(face.emotion, ""),
            }
            for face in analysis.faces
        ],
        **_music_json(reply),
        "model": analysis.model,
        "error": None,
    }


def _error(lang: str, code: ErrorCode, status: int, *, detail: str = "") -> web.Response:
    message = say(lang, code, detail=detail)
    body = {"ok": False, "lang": lang, "error": {"code": code, "message": message}}
    return web.json_response(body, status=status, dumps=_dumps)


def _language(request: web.Request) -> str:
    return negotiate_language(request.headers.get(hdrs.ACCEPT_LANGUAGE), request.query.get("lang"))


def _client(request: web.Request) -> str:
    # The rate limit's key. Behind a reverse proxy every visitor shares the proxy's address;
    # X-Forwarded-For is not trusted, as anyone can send it (see docs/DEPLOY.md).
    return f"ip:{request.remote or 'unknown'}"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# --- operations -----------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    """Model loaded, database writable, chat transports connected: 200, else 503."""
    health = await check_health(request.app[SERVICE], request.app[STATES], exclude=WebServer.name)
    return web.json_response(health.to_json(), status=200 if health.ok else 503)


async def livez(request: web.Request) -> web.Response:
    """The process answers HTTP: for liveness probes, which must not restart on a locked DB."""
    return web.json_response({"ok": True})


async def metrics_page(request: web.Request) -> web.Response:
    """Prometheus text format."""
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE})


# --- the server as a transport --------------------------------------------------------------


class WebServer:
    """The web app on host:port, started and stopped by the runner like the chat bots."""

    name = "web"

    def __init__(
        self,
        service: MoodService,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        metrics: Metrics | None = None,
        states: TransportStates | None = None,
        shutdown_timeout: float = 20.0,
    ) -> None:
        self.app = create_app(service, metrics=metrics, states=states)
        self.host = host
        self.port = port
        self._runner = web.AppRunner(
            self.app, access_log_format=ACCESS_LOG_FORMAT, shutdown_timeout=shutdown_timeout
        )
        self._stopped = asyncio.Event()
        self.url = ""

    async def start(self) -> str:
        """Listen on host:port (0 picks a free port); returns the URL."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise StartupError(
                f"The web server cannot listen on {self.host}:{self.port}: {exc}"
            ) from None
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{_url_host(host)}:{port}"
        return self.url

    async def stop_intake(self) -> None:
        """Nothing to do: the core now answers "restarting" and /healthz turns 503."""

    async def close(self, timeout: float) -> None:
        """Let requests in flight finish (the runner's shutdown_timeout), then stop listening."""
        try:
            async with asyncio.timeout(timeout + 5):
                await self._runner.cleanup()
        finally:
            self._stopped.set()

    async def wait_closed(self) -> None:
        """An aiohttp site does not stop on its own: this waits until close()."""
        await self._stopped.wait()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
