"""The chat front doors: thin adapters from a platform's events to `MoodService` calls.

Each transport turns a platform event into a `Sender` (and an `Upload` for images), calls one
core method, and renders the `Reply`. Everything a user would call behaviour lives in the core.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Iterable
from typing import Protocol
from urllib.parse import quote

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


# --- secrets in logs -----------------------------------------------------------------------------

REDACTED = "[redacted]"


class RedactSecrets(logging.Filter):
    """Replaces secret values in log records, tracebacks included."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # URL-encoded forms too: httpx logs request URLs, where a token's ":" reads "%3A".
        forms = {form for s in secrets for form in (s, quote(s, safe=""))}
        # Longest first, so a secret that contains another is hidden whole.
        self._secrets = sorted({s for s in forms if len(s) >= 6}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # Format the traceback now, so that the redacted text is what handlers print.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def redact_secrets(
    secrets: Iterable[str], handlers: Iterable[logging.Handler] | None = None
) -> RedactSecrets:
    """Hide `secrets` in everything the given handlers (default: the root logger's) write."""
    redactor = RedactSecrets(secrets)
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        handler.addFilter(redactor)
    # httpx logs every request URL at INFO, and Telegram's URLs contain the bot token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return redactor
