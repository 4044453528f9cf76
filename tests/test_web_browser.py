"""The demo page in a real headless Chromium (Debian's chromium + chromedriver, via selenium).

`scripts/install-browser.sh` (run by `make test`) installs the browser. Without it these tests
skip, unless MOODBOT_REQUIRE_BROWSER=1 (CI) makes a missing browser a failure.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.core import MoodService
from bot.history import AsyncHistory
from bot.music import MusicRecommender
from bot.texts import say
from bot.web import WebServer
from ml.engine import EmotionEngine

pytestmark = pytest.mark.slow

WAIT_S = 60


def _browser() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or why they cannot be used."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    missing = " and ".join(
        n for n, p in (("chromium", chromium), ("chromedriver", driver)) if not p
    )
    return f"{missing} not on PATH (scripts/install-browser.sh installs them)"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by the local chromedriver (never Selenium Manager downloads)."""
    found = _browser()
    if isinstance(found, str):
        if os.environ.get("MOODBOT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"MOODBOT_REQUIRE_BROWSER=1 but {found}")
        pytest.skip(found)
    chromium, chromedriver = found
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=412,915",  # a phone's screen
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": "en-US,en"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def page_url(engine: EmotionEngine, history: AsyncHistory) -> AsyncIterator[str]:
    """The web server with the real engine on a free port of 127.0.0.1."""
    service = MoodService(engine, MusicRecommender(None, rng=random.Random(2)), history)
    server = WebServer(service, host="127.0.0.1", port=0)
    url = await server.start()
    yield url
    await server.close(5)


async def in_browser(step: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking selenium call off the event loop, so the server can answer the page."""
    return await asyncio.to_thread(step, *args)


async def wait_for(browser: Any, condition: Callable[[Any], Any]) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return await in_browser(WebDriverWait(browser, WAIT_S, poll_frequency=0.1).until, condition)


async def open_page(browser: Any, url: str) -> None:
    await in_browser(browser.get, url)
    await wait_for(browser, lambda d: d.find_element("css selector", "body[data-ready='1']"))


async def upload(browser: Any, path: Path) -> None:
    chooser = await in_browser(browser.find_element, "id", "file")
    await in_browser(chooser.send_keys, str(path))


def visible(element_id: str) -> Callable[[Any], Any]:
    def check(driver: Any) -> Any:
        element = driver.find_element("id", element_id)
        return element if element.is_displayed() else False

    return check


async def test_face_photo_shows_emotion_boxes_and_music_links(
    browser: Any, page_url: str, tmp_path: Path, astronaut_jpeg: bytes
) -> None:
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    await open_page(browser, page_url)
    assert await in_browser(lambda: browser.find_element("id", "file").get_attribute("accept"))

    await upload(browser, photo)
    await wait_for(browser, visible("result"))
    emotion = await in_browser(lambda: browser.find_element("id", "emotion").text)
    assert emotion.lower() in ("happy", "기쁨")
    links = await in_browser(
        lambda: [a.get_attribute("href") for a in browser.find_elements("css selector", "#links a")]
    )
    assert len(links) == 5
    assert all(href.startswith("https://open.spotify.com/track/") for href in links)
    why = await in_browser(lambda: browser.find_element("id", "why").text)
    assert "happy" in why
    boxes = await in_browser(
        lambda: browser.find_elements("css selector", "#overlay rect.face.main")
    )
    assert len(boxes) == 1
    assert not await in_browser(lambda: browser.find_element("id", "error").is_displayed())

    # The language toggle asks again and the page answers in Korean.
    await in_browser(lambda: browser.find_element("id", "lang").click())
    await wait_for(browser, lambda d: d.find_element("id", "emotion").text == "기쁨")
    headline = await in_browser(lambda: browser.find_element("id", "headline").text)
    assert headline.startswith("기쁨 😄 표정이에요")
    assert await in_browser(lambda: browser.execute_script("return document.documentElement.lang"))
    await in_browser(lambda: browser.find_element("id", "lang").click())  # back to English
    await wait_for(browser, lambda d: d.find_element("id", "emotion").text.lower() == "happy")


async def test_clicking_a_mood_bar_changes_the_music_and_stores_nothing(
    browser: Any, page_url: str, history: AsyncHistory, tmp_path: Path, astronaut_jpeg: bytes
) -> None:
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg)
    await open_page(browser, page_url)
    await upload(browser, photo)
    await wait_for(browser, visible("result"))

    def links(driver: Any) -> list[str]:
        return [a.get_attribute("href") for a in driver.find_elements("css selector", "#links a")]

    before = await in_browser(links, browser)
    pressed = await in_browser(
        lambda: browser.find_element("css selector", "#scores button[aria-pressed='true']")
    )
    assert await in_browser(pressed.get_attribute, "data-emotion") == "happy"
    sad = await in_browser(
        lambda: browser.find_element("css selector", "#scores button[data-emotion='sad']")
    )
    await in_browser(sad.click)
    await wait_for(browser, lambda d: d.find_element("id", "emotion").text.lower() == "sad")
    headline = await in_browser(lambda: browser.find_element("id", "headline").text)
    assert headline == "Got it: sad 😢. Here is music for that (nothing was saved)."
    why = await in_browser(lambda: browser.find_element("id", "why").text)
    assert why == "🎵 sad → gentle, slow songs: valence 0.2-0.4, energy 0.2-0.4."
    after = await in_browser(links, browser)
    assert after and after != before
    assert all(href.startswith("https://open.spotify.com/track/") for href in after)
    chosen = await in_browser(
        lambda: browser.find_element("css selector", "#scores button[aria-pressed='true']")
    )
    assert await in_browser(chosen.get_attribute, "data-emotion") == "sad"
    assert not await in_browser(lambda: browser.find_element("id", "error").is_displayed())
    # Web analyses are anonymous: nothing was stored, before or after the correction.
    stats = await history.correction_stats()
    assert (stats.analyses, stats.corrections) == (0, 0)


async def test_non_image_shows_the_error(browser: Any, page_url: str, tmp_path: Path) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_text("shopping list: milk, eggs\n")
    await open_page(browser, page_url)
    await upload(browser, notes)
    error = await wait_for(browser, visible("error"))
    assert await in_browser(lambda: error.text) == say("en", "unreadable")
    assert await in_browser(lambda: error.get_attribute("data-code")) == "unreadable"
    assert not await in_browser(lambda: browser.find_element("id", "result").is_displayed())
