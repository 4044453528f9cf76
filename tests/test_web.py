"""The web server over real HTTP on 127.0.0.1: page, /api/analyze, /healthz and /metrics."""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bot.core import MoodService, Reply, Sender
from bot.history import AsyncHistory
from bot.music import MusicRecommender
from bot.ratelimit import RateLimiter
from bot.runner import run_transports
from bot.texts import say
from bot.transports import TransportStates
from bot.web import Metrics, WebServer
from bot.web.page import negotiate_language
from ml.decode import DecodeLimits
from ml.engine import EmotionEngine, EngineConfig
from tests.processes import healthz_status, terminate

pytestmark = pytest.mark.slow

TIMEOUT = aiohttp.ClientTimeout(total=60)
MB = 1_000_000


def new_service(engine: EmotionEngine, history: AsyncHistory) -> MoodService:
    return MoodService(engine, MusicRecommender(None, rng=random.Random(5)), history)


@pytest.fixture
def service(engine: EmotionEngine, history: AsyncHistory) -> MoodService:
    return new_service(engine, history)


@pytest.fixture
def states() -> TransportStates:
    return TransportStates()


async def start_server(
    service: MoodService, states: TransportStates | None = None
) -> tuple[WebServer, str]:
    server = WebServer(service, host="127.0.0.1", port=0, states=states)
    return server, await server.start()


@pytest.fixture
async def web(service: MoodService, states: TransportStates) -> AsyncIterator[str]:
    """The server's base URL; the server listens on a free port of 127.0.0.1."""
    server, url = await start_server(service, states)
    yield url
    await server.close(5)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        yield session


def photo_form(data: bytes, filename: str = "selfie.jpg", content_type: str = "image/jpeg"):
    form = aiohttp.FormData()
    form.add_field("photo", data, filename=filename, content_type=content_type)
    return form


async def post_photo(
    http: aiohttp.ClientSession, url: str, data: bytes, **options: str
) -> tuple[int, dict]:
    headers = {"Accept-Language": options.pop("accept_language", "en")}
    form = photo_form(data, **options)
    async with http.post(f"{url}/api/analyze", data=form, headers=headers) as response:
        return response.status, await response.json()


def moods_in(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT count(*) FROM moods").fetchone()[0]


# --- the page ---------------------------------------------------------------------------------

EXTERNAL_URL = re.compile(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)


async def test_page_and_its_files_are_served_and_load_nothing_from_elsewhere(
    web: str, http: aiohttp.ClientSession
) -> None:
    bodies = {}
    for path, kind in [
        ("/", "text/html"),
        ("/static/app.js", "javascript"),
        ("/static/style.css", "text/css"),
    ]:
        async with http.get(web + path) as response:
            assert response.status == 200, path
            assert kind in response.headers["Content-Type"]
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
            bodies[path] = await response.text()
    assert 'src="/static/app.js"' in bodies["/"] and 'href="/static/style.css"' in bodies["/"]
    assert 'capture="user"' in bodies["/"] and 'accept="image/*"' in bodies["/"]
    for path, body in bodies.items():
        assert not EXTERNAL_URL.search(body), f"{path} refers to another site"
        assert "@import" not in body and "@font-face" not in body


async def test_ui_texts_speak_both_languages_and_follow_accept_language(
    web: str, http: aiohttp.ClientSession, service: MoodService
) -> None:
    async with http.get(f"{web}/api/ui", headers={"Accept-Language": "ko-KR,ko;q=0.9"}) as r:
        ui = await r.json()
    assert ui["lang"] == "ko" and ui["languages"] == ["en", "ko"]
    assert ui["max_bytes"] == service.max_image_bytes
    assert ui["texts"]["en"]["no_face"] == say("en", "no_face")
    assert ui["texts"]["ko"]["no_face"] == say("ko", "no_face")
    assert ui["texts"]["ko"]["emotions"]["happy"] == "기쁨"
    async with http.get(f"{web}/api/ui", headers={"Accept-Language": "fr, en;q=0.1"}) as r:
        assert (await r.json())["lang"] == "en"


def test_language_negotiation() -> None:
    assert negotiate_language("en-US,ko;q=0.5") == "en"
    assert negotiate_language("en;q=0.4, ko-KR;q=0.8") == "ko"
    assert negotiate_language("ko", requested="en") == "en"
    assert negotiate_language("de, fr;q=bad", requested="xx") == "en"
    assert negotiate_language(None) == "en"


# --- /api/analyze -----------------------------------------------------------------------------


async def test_face_photo_gets_boxes_emotion_links_and_is_not_stored(
    web: str, http: aiohttp.ClientSession, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    status, body = await post_photo(http, web, astronaut_jpeg)
    assert status == 200 and body["ok"] is True and body["error"] is None
    assert (body["emotion"], body["label"], body["emoji"]) == ("happy", "happy", "😄")
    assert body["image"] == {"width": 512, "height": 512}
    (face,) = body["faces"]
    x, y, w, h = face["box"]
    assert 0 <= x < x + w <= 512 and 0 <= y < y + h <= 512 and w > 50 and h > 50
    assert face["emotion"] == "happy" and face["confidence"] == body["confidence"]
    assert sum(face["scores"].values()) == pytest.approx(1, abs=1e-3)
    assert body["headline"].startswith("You look happy 😄 (")
    assert body["why"] == "🎵 happy → bright, upbeat songs: valence 0.7-0.9, energy 0.6-0.8."
    assert "history" not in body["headline"] + body["why"]  # no chat-only "not saved" line
    assert len(body["links"]) == 5 and all(
        link["url"].startswith("https://open.spotify.com/track/")
        and link["kind"] == "track"
        and link["label"] == f"{link['title']} — {', '.join(link['artists'])}"
        and 0.7 <= link["valence"] <= 0.9
        for link in body["links"]
    )
    assert body["music"]["source"] == "catalogue"
    assert body["music"]["target"] == {"valence": 0.8, "energy": 0.7}
    assert moods_in(history.path) == 0


async def post_correction(
    http: aiohttp.ClientSession, url: str, body: object, lang: str = "en"
) -> tuple[int, dict]:
    async with http.post(f"{url}/api/correct?lang={lang}", json=body) as response:
        return response.status, await response.json()


async def test_not_quite_on_the_web_changes_only_the_music(
    web: str, http: aiohttp.ClientSession, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    _, analysed = await post_photo(http, web, astronaut_jpeg)
    ref = analysed["correction"]["ref"]
    status, body = await post_correction(http, web, {"ref": ref, "emotion": "sad"})
    assert status == 200 and body["ok"] is True, body
    assert (body["emotion"], body["label"], body["emoji"]) == ("sad", "sad", "😢")
    assert body["headline"] == "Got it: sad 😢. Here is music for that (nothing was saved)."
    assert body["why"] == "🎵 sad → gentle, slow songs: valence 0.2-0.4, energy 0.2-0.4."
    assert body["links"] and body["links"] != analysed["links"]
    assert body["correction"] == {"ref": ref}
    status, body = await post_correction(http, web, {"ref": ref, "emotion": "놀람"}, lang="ko")
    assert status == 200 and body["headline"].startswith("알겠어요: 놀람 😮.")
    assert moods_in(history.path) == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"ref": "1.abc.forged123456", "emotion": "sad"}, 403, "correction_invalid"),
        ({"ref": None, "emotion": "sad"}, 400, "error"),
        ({"emotion": "sad"}, 400, "error"),
        (["not", "an", "object"], 400, "error"),
        ({"ref": "x" * 5000, "emotion": "sad"}, 400, "error"),
    ],
    ids=["forged", "null-ref", "no-ref", "list", "huge"],
)
async def test_bad_corrections_on_the_web_are_refused(
    web: str, http: aiohttp.ClientSession, body: object, status: int, code: str
) -> None:
    got, answer = await post_correction(http, web, body)
    assert (got, answer["ok"], answer["error"]["code"]) == (status, False, code)


async def test_raw_body_in_korean(
    web: str, http: aiohttp.ClientSession, astronaut_jpeg: bytes
) -> None:
    headers = {"Content-Type": "image/jpeg", "Accept-Language": "ko-KR"}
    async with http.post(f"{web}/api/analyze", data=astronaut_jpeg, headers=headers) as response:
        status, body = response.status, await response.json()
    assert status == 200 and body["lang"] == "ko"
    assert (body["emotion"], body["label"]) == ("happy", "기쁨")
    assert body["headline"].startswith("기쁨 😄 표정이에요")


async def test_no_face_is_422_with_the_bots_sentence(
    web: str, http: aiohttp.ClientSession, no_face_png: bytes
) -> None:
    status, body = await post_photo(http, web, no_face_png, filename="wall.png")
    assert status == 422
    assert body["error"] == {"code": "no_face", "message": say("en", "no_face")}


@pytest.mark.parametrize(
    ("data", "filename", "content_type"),
    [
        (b"shopping list: milk, eggs\n", "notes.jpg", "image/jpeg"),  # claims to be a JPEG
        (b"shopping list: milk, eggs\n", "notes.txt", "text/plain"),  # says it is text
        (b"\xff\xd8\xff\xe0" + bytes(2000), "broken.jpg", "image/jpeg"),  # a JPEG cut short
    ],
)
async def test_bad_file_is_400_unreadable(
    web: str, http: aiohttp.ClientSession, data: bytes, filename: str, content_type: str
) -> None:
    status, body = await post_photo(
        http, web, data, filename=filename, content_type=content_type, accept_language="ko"
    )
    assert status == 400
    assert body["error"] == {"code": "unreadable", "message": say("ko", "unreadable")}


async def test_form_without_a_photo_is_unreadable(web: str, http: aiohttp.ClientSession) -> None:
    form = aiohttp.FormData({"comment": "no photo here"})
    form.add_field("other", "x")  # not a file (no filename), and not the photo field
    async with http.post(f"{web}/api/analyze", data=form) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "unreadable"


@pytest.fixture(scope="module")
def small_engine(engine: EmotionEngine) -> Iterator[EmotionEngine]:
    """The session engine's detector and model, with a 200 kB limit on image files."""
    config = EngineConfig(limits=DecodeLimits(max_bytes=200_000))
    small = EmotionEngine(engine.model, engine.detector, config)
    small.start()
    yield small
    small.close()


async def test_too_large_is_refused_by_size_in_every_form(
    small_engine: EmotionEngine, history: AsyncHistory, http: aiohttp.ClientSession
) -> None:
    service = new_service(small_engine, history)
    server, url = await start_server(service)
    too_large = say("en", "too_large", detail="")[:30]
    try:
        # Declared too large (Content-Length): refused before the body is read.
        headers = {"Content-Type": "image/jpeg"}
        async with http.post(f"{url}/api/analyze", data=bytes(MB), headers=headers) as response:
            assert response.status == 413
            body = await response.json()
            assert body["error"]["code"] == "too_large"
            assert body["error"]["message"].startswith(too_large)
            assert "1.0 MB; the limit is 0.2 MB" in body["error"]["message"]

        # No declared size (chunked): refused as soon as the stream passes the limit.
        async def stream():
            for _ in range(10):
                yield bytes(50_000)

        async with http.post(f"{url}/api/analyze", data=stream(), headers=headers) as response:
            assert response.status == 413
            assert (await response.json())["error"]["code"] == "too_large"

        # A form whose photo is just over the limit, inside the envelope margin.
        status, body = await post_photo(http, url, bytes(200_001))
        assert status == 413 and body["error"]["code"] == "too_large"
        # ...and one just under it reaches the decoder.
        status, body = await post_photo(http, url, bytes(199_000))
        assert status == 400 and body["error"]["code"] == "unreadable"
    finally:
        await server.close(5)


async def test_rate_limit_applies_to_the_web_too(
    service: MoodService, http: aiohttp.ClientSession, no_face_png: bytes
) -> None:
    service.limiter = RateLimiter(burst=1, per_minute=1)
    server, url = await start_server(service)
    try:
        first, _ = await post_photo(http, url, no_face_png)
        second, body = await post_photo(http, url, no_face_png)
    finally:
        await server.close(5)
    assert first == 422
    assert second == 429 and body["error"]["code"] == "rate_limited"


# --- /healthz ---------------------------------------------------------------------------------


async def get_health(http: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
    async with http.get(f"{url}/healthz") as response:
        return response.status, await response.json()


async def test_healthz_is_200_when_everything_works(
    web: str, http: aiohttp.ClientSession, states: TransportStates
) -> None:
    states.expect("telegram")
    states.mark("telegram", True)
    status, body = await get_health(http, web)
    assert status == 200
    assert body == {
        "ok": True,
        "model": {"loaded": True, "name": "moodnet-trio"},
        "database": {"writable": True},
        "accepting": True,
        "transports": {"telegram": True},
    }


async def test_healthz_is_503_while_the_database_is_locked(
    web: str, http: aiohttp.ClientSession, history: AsyncHistory
) -> None:
    locker = sqlite3.connect(history.path, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")  # a stuck writer holds the write lock
        started = time.monotonic()
        status, body = await get_health(http, web)
        assert time.monotonic() - started < 5
        assert status == 503 and body["ok"] is False
        assert body["database"] == {"writable": False, "error": "database is locked"}
        locker.execute("ROLLBACK")
        status, body = await get_health(http, web)
        assert status == 200 and body["database"] == {"writable": True}
    finally:
        locker.close()


async def test_healthz_is_503_when_the_database_file_is_gone(
    web: str, http: aiohttp.ClientSession, history: AsyncHistory
) -> None:
    history.path.rename(history.path.with_suffix(".moved"))
    status, body = await get_health(http, web)
    assert status == 503 and body["database"]["writable"] is False
    assert not history.path.exists()  # the probe must not create an empty database


async def test_healthz_is_503_when_the_engine_is_closed(
    engine: EmotionEngine, history: AsyncHistory, http: aiohttp.ClientSession
) -> None:
    closing = EmotionEngine(engine.model, engine.detector, engine.config)
    closing.start()
    server, url = await start_server(new_service(closing, history))
    try:
        assert (await get_health(http, url))[0] == 200
        closing.close()
        status, body = await get_health(http, url)
    finally:
        await server.close(5)
    assert status == 503 and body["model"] == {"loaded": False, "name": "moodnet-trio"}


async def test_healthz_is_503_until_every_transport_is_connected(
    web: str, http: aiohttp.ClientSession, states: TransportStates
) -> None:
    states.expect("telegram")
    states.expect("discord")
    states.mark("telegram", True)
    status, body = await get_health(http, web)
    assert status == 503 and body["transports"] == {"telegram": True, "discord": False}
    states.mark("discord", True)
    assert (await get_health(http, web))[0] == 200
    states.mark("telegram", False)  # stopped
    status, body = await get_health(http, web)
    assert status == 503 and body["transports"] == {"telegram": False, "discord": True}


class ChatStandIn:
    """A chat transport as the runner sees it; on shutdown it asks /healthz what it says."""

    name = "chat"

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        self.url = ""
        self.health_at_stop: tuple[int, dict] | None = None

    async def start(self) -> str:
        return "standing in"

    async def stop_intake(self) -> None:
        self.health_at_stop = await get_health(self.http, self.url)

    async def close(self, timeout: float) -> None:
        pass

    async def wait_closed(self) -> None:
        await asyncio.Event().wait()


async def test_runner_reports_transports_to_healthz_and_turns_it_503_on_shutdown(
    service: MoodService, http: aiohttp.ClientSession
) -> None:
    states = TransportStates()
    web = WebServer(service, host="127.0.0.1", port=0, states=states)
    chat = ChatStandIn(http)
    stop = asyncio.Event()
    running = asyncio.create_task(
        run_transports([web, chat], service, stop=stop, grace_s=5, states=states)
    )
    try:
        async with asyncio.timeout(30):
            while states.snapshot() != {"web": True, "chat": True}:
                await asyncio.sleep(0.02)
        chat.url = web.url
        status, body = await get_health(http, web.url)
        assert status == 200 and body["transports"] == {"chat": True}
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await running
    assert chat.health_at_stop is not None
    status, body = chat.health_at_stop
    assert status == 503 and body["transports"] == {"chat": False}
    assert states.snapshot() == {"web": False, "chat": False}


# --- /metrics ---------------------------------------------------------------------------------


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[tuple[str, tuple], float]:
    async with http.get(f"{url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_photos_faces_errors_latency_and_fallbacks(
    web: str,
    http: aiohttp.ClientSession,
    astronaut_jpeg: bytes,
    no_face_png: bytes,
) -> None:
    before = await scrape(http, web)
    await post_photo(http, web, astronaut_jpeg)
    await post_photo(http, web, no_face_png)
    await post_photo(http, web, b"not a photo", filename="x.jpg")
    after = await scrape(http, web)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("moodbot_photos_analysed_total", platform="web", use="selfie") == 3
    assert moved("moodbot_faces_found_total", platform="web") == 1
    assert moved("moodbot_photo_errors_total", kind="no_face") == 1
    assert moved("moodbot_photo_errors_total", kind="unreadable") == 1
    assert moved("moodbot_analysis_seconds_count", use="selfie") == 3
    assert moved("moodbot_analysis_seconds_sum", use="selfie") > 0
    assert moved("moodbot_spotify_fallbacks_total", reason="not_configured") == 1
    assert ("moodbot_engine_queue_depth", ()) in after
    assert value(after, "moodbot_engine_queue_depth") == 0


async def test_metrics_count_photos_from_every_transport(
    web: str,
    http: aiohttp.ClientSession,
    service: MoodService,
    astronaut_jpeg: bytes,
) -> None:
    before = await scrape(http, web)
    # The web server hooked its metrics into the core: a chat bot's selfie counts too.
    telegram = Sender(platform="telegram", chat_id="1", user_id="alice")
    reply = await service.analyze_selfie(telegram, astronaut_jpeg)
    assert reply.ok
    await service.group_photo_mix(telegram, b"junk")
    after = await scrape(http, web)
    labels = {"platform": "telegram"}
    assert (
        value(after, "moodbot_photos_analysed_total", **labels, use="selfie")
        - value(before, "moodbot_photos_analysed_total", **labels, use="selfie")
        == 1
    )
    assert value(after, "moodbot_photos_analysed_total", **labels, use="group_photo") == 1
    assert value(after, "moodbot_faces_found_total", **labels) == 1


async def test_metrics_count_corrections_by_predicted_and_corrected(
    web: str,
    http: aiohttp.ClientSession,
    service: MoodService,
    astronaut_jpeg: bytes,
) -> None:
    alice = Sender(platform="telegram", chat_id="1", user_id="alice")
    reply = await service.analyze_selfie(alice, astronaut_jpeg)
    assert reply.correction
    await service.correct(alice, reply.correction.ref, "sad")
    await service.correct(alice, reply.correction.ref + "x", "angry")  # refused: not counted
    after = await scrape(http, web)
    assert value(after, "moodbot_corrections_total", predicted="happy", corrected="sad") == 1
    assert value(after, "moodbot_corrections_total", predicted="happy", corrected="angry") == 0


def test_metrics_registries_are_separate(service: MoodService) -> None:
    one, two = Metrics(service), Metrics(service)
    who = Sender(platform="web", chat_id="web", user_id="x")
    one.photo_done(who, "selfie", Reply(text="no", error_code="no_face"), 0.1)
    assert b'moodbot_photo_errors_total{kind="no_face"} 1.0' in one.render()
    assert b'kind="no_face"' not in two.render()


# --- the command line ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_moodbot_run_web_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`moodbot run --web` with no bot token: the web server alone, stopped by SIGTERM."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOODBOT_", "SPOTIFY_"))}
    env = {k: v for k, v in env.items() if not k.endswith("_BOT_TOKEN")}
    env.update(MOODBOT_DB=str(tmp_path / "moods.db"), MOODBOT_WEB_PORT=str(port))
    moodbot = str(Path(sys.executable).with_name("moodbot"))
    process = subprocess.Popen(
        [moodbot, "run", "--web"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        health, metrics = healthz_status(process, port, 180), b""
        if health == 200:
            metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).content
    finally:
        stderr = terminate(process)
    assert process.returncode == 0, stderr
    assert health == 200, stderr
    assert b"moodbot_engine_queue_depth" in metrics
    assert f"web is up: http://127.0.0.1:{port}" in stderr
    assert "No bot token set: serving the web demo only" in stderr
    assert "Stopped: web" in stderr
    assert "Traceback" not in stderr
