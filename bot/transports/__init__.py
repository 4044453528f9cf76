"""The chat front doors: thin adapters from a platform's events to `MoodService` calls.

Each transport turns a platform event into a `Sender` (and an `Upload` for images), calls one
core method, and renders the `Reply`. Everything a user would call behaviour lives in the core.
"""

from __future__ import annotations

import mimetypes
from typing import Protocol

from bot.texts import emotion_name
from ml.labels import EMOJI


class StartupError(Exception):
    """A chat platform could not be started."""


class TransportStopped(Exception):
    """A chat platform stopped on its own."""


class Transport(Protocol):
    """What the runner needs from a front door."""

    name: str

    async def start(self) -> str:
        """Connect and start taking updates; returns how it runs, for the log."""
        ...

    async def stop_intake(self) -> None:
        """Take no new updates; work in hand goes on."""
        ...

    async def close(self, timeout: float) -> None:
        """Let work in flight finish (at most `timeout` seconds), then disconnect."""
        ...

    async def wait_closed(self) -> None:
        """Return (or raise) only when the transport stopped on its own."""
        ...


class TransportStates:
    """Which front doors are connected, as the runner last saw them (read by /healthz).

    A transport counts as connected from a successful start() until it stops taking updates,
    fails or closes; one the runner expects but has not started yet counts as not connected.
    """

    def __init__(self) -> None:
        self._connected: dict[str, bool] = {}

    def expect(self, name: str) -> None:
        """List `name`, not connected yet."""
        self._connected.setdefault(name, False)

    def mark(self, name: str, connected: bool) -> None:
        self._connected[name] = connected

    def snapshot(self) -> dict[str, bool]:
        """Every known transport and whether it is connected now."""
        return dict(self._connected)


def fit(text: str, limit: int) -> str:
    """`text` cut to `limit` characters at a line break where possible, marked with '…'."""
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit - 1)
    return text[: cut if cut > limit // 2 else limit - 1].rstrip() + "…"


def mood_button_label(lang: str, emotion: str) -> str:
    """A "Not quite?" button: the mood's emoji and name, e.g. '😢 sad'."""
    return f"{EMOJI.get(emotion, '')} {emotion_name(lang, emotion)}".strip()


def guess_image_type(mime_type: str | None, filename: str | None) -> str | None:
    """The declared MIME type, or one guessed from the file name (None when unknown)."""
    if mime_type:
        return mime_type.split(";")[0].strip().lower()
    guessed, _ = mimetypes.guess_type(filename or "")
    return guessed
