"""Secrets out of the logs: one filter for every logger that might print one."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote

REDACTED = "[redacted]"
# An HTTP Authorization header's value (spotipy logs whole request headers at DEBUG).
AUTHORIZATION = re.compile(r"(Basic|Bearer)\s+[A-Za-z0-9+/=._~-]+")


class RedactSecrets(logging.Filter):
    """Replaces secret values, and what `patterns` match, in log records, tracebacks included.

    A pattern keeps its first group: `(Basic) abc==` becomes `Basic [redacted]`.
    """

    def __init__(self, secrets: Iterable[str] = (), patterns: Iterable[re.Pattern[str]] = ()):
        super().__init__()
        # URL-encoded forms too: httpx logs request URLs, where a token's ":" reads "%3A".
        forms = {form for s in secrets for form in (s, quote(s, safe=""))}
        # Longest first, so a secret that contains another is hidden whole.
        self._secrets = sorted({s for s in forms if len(s) >= 6}, key=len, reverse=True)
        self._patterns = tuple(patterns)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        for pattern in self._patterns:
            text = pattern.sub(rf"\1 {REDACTED}", text)
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


def redact_authorization(logger_names: Iterable[str]) -> None:
    """Hide Authorization header values in what these loggers record (once per logger)."""
    for name in logger_names:
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in target.filters):
            target.addFilter(RedactSecrets(patterns=[AUTHORIZATION]))
