"""Signed references for "Not quite?" buttons: which analysis a press corrects, and for whom.

Chat platforms hand button data back from the client (Telegram's callback data is whatever
the client sends), so a press is trusted only when its reference carries a valid HMAC over
(platform, user, row, time). A tampered reference, another user's press or one signed by a
different secret fails `verify`; its age is checked by the core.

Button data is `fix:<ref>:<choice>`, where <choice> is an emotion or MORE ("show the full
list"). It stays well under Telegram's 64-byte limit: a ref is about 25 characters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

PREFIX = "fix"
MORE = "*"  # the "something else" button: open the full list
MAC_CHARS = 12  # 72 bits of HMAC-SHA256, base64url
MAX_DATA_BYTES = 64  # Telegram's limit on callback data


@dataclass(frozen=True)
class Ref:
    """What a button points at: a history row (0: an analysis stored nowhere) and its time."""

    row_id: int
    issued_minute: int  # minutes since the Unix epoch, UTC

    @property
    def stored(self) -> bool:
        return self.row_id > 0

    @property
    def issued_at(self) -> datetime:
        return datetime.fromtimestamp(self.issued_minute * 60, UTC)


@dataclass(frozen=True)
class CorrectionOffer:
    """What a transport needs to draw the buttons under an analysis."""

    ref: str  # signed; opaque to transports
    current: str  # the mood the reply is about now
    suggestions: tuple[str, ...]  # the model's next most likely emotions
    choices: tuple[str, ...]  # every emotion a person can pick ("something else")

    def data(self, choice: str) -> str:
        """The button data for one choice (an emotion or MORE)."""
        return button_data(self.ref, choice)


def button_data(ref: str, choice: str) -> str:
    return f"{PREFIX}:{ref}:{choice}"


def parse_button(data: str) -> tuple[str, str] | None:
    """(ref, choice) from button data, or None when it is not a well-formed fix button."""
    if not isinstance(data, str) or len(data.encode()) > MAX_DATA_BYTES:
        return None
    parts = data.split(":")
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def _b36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
        if not number:
            return text


class RefSigner:
    """Signs and checks refs with one secret (random per process unless one is given)."""

    def __init__(self, secret: bytes | None = None) -> None:
        # Without a configured secret, buttons of an earlier process read as expired.
        self._key = secret or secrets.token_bytes(32)

    def _mac(self, platform: str, user_id: str, row: str, minute: str) -> str:
        message = "\x1f".join((platform, user_id, row, minute)).encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode()[:MAC_CHARS]

    def sign(self, platform: str, user_id: str, row_id: int | None, at: datetime) -> str:
        """A ref for `row_id` (None: an analysis stored nowhere), bound to this user."""
        row, minute = _b36(row_id or 0), _b36(int(at.timestamp() // 60))
        return f"{row}.{minute}.{self._mac(platform, user_id, row, minute)}"

    def verify(self, platform: str, user_id: str, ref: str) -> Ref | None:
        """The ref's content when it was signed for this user, else None."""
        parts = ref.split(".") if isinstance(ref, str) else []
        if len(parts) != 3 or not all(p.isascii() and p.isalnum() for p in parts[:2]):
            return None
        row, minute, mac = parts
        if len(row) > 12 or len(minute) > 12:
            return None
        expected = self._mac(platform, user_id, row, minute)
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            return None
        return Ref(int(row, 36), int(minute, 36))
