"""Load: 200 selfies from 50 people, sent as fast as the fake Bot API can take them.

The real python-telegram-bot Application polls the fake Telegram server on 127.0.0.1 and
hands every selfie to the real engine and a real SQLite history. Every selfie must get
exactly one answer (a reading, "no face", or a polite "busy" / "slow down"), the bot must
still answer afterwards, and every reading must be in the history exactly once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import pytest

from bot.core import MoodService
from bot.history import AsyncHistory
from bot.music import MusicRecommender
from bot.ratelimit import RateLimiter
from bot.texts import say
from bot.transports.telegram_bot import TelegramTransport
from ml.engine import EmotionEngine
from tests.fakes.telegram import Call, FakeTelegram, TgChat, TgUser

pytestmark = pytest.mark.slow

SELFIES, PEOPLE, GROUPS = 200, 50, 5
LOAD_TIMEOUT_S = 240.0
# Half the people are in private chats, half in five groups (where answers quote the selfie).
USERS = [TgUser(5000 + n, f"Person{n}") for n in range(PEOPLE)]
GROUP_CHATS = [FakeTelegram.group(-5000 - g, f"Group {g}") for g in range(GROUPS)]


def chat_of(n: int, user: TgUser) -> TgChat:
    return FakeTelegram.private(user) if n < PEOPLE // 2 else GROUP_CHATS[n % GROUPS]


# How each kind of answer to a selfie begins (English: every person here speaks it).
ANSWER_STARTS = {
    "analysed": ("You look", "I'm not sure", "I see"),
    "no_face": (say("en", "no_face"),),
    "busy": (say("en", "busy"),),
    "rate_limited": ("Slow down a little",),
}


def kind_of(call: Call) -> str:
    """What an answer to a selfie is; anything else fails the test."""
    for kind, starts in ANSWER_STARTS.items():
        if call.text.startswith(starts):
            assert bool(call.link_buttons) == (kind == "analysed"), call.text
            return kind
    raise AssertionError(f"not an answer to a selfie: {call.text[:80]!r}")


async def test_200_selfies_from_50_people(
    fake: FakeTelegram,
    engine: EmotionEngine,
    history: AsyncHistory,
    astronaut_jpeg: bytes,
    grace_hopper_jpeg: bytes,
    no_face_png: bytes,
) -> None:
    # The per-user limit of the settings' defaults (MOODBOT_RATE_LIMIT_BURST/PER_MINUTE).
    limiter = RateLimiter(burst=6, per_minute=12)
    service = MoodService(engine, MusicRecommender(None, rng=random.Random(1)), history)
    service.limiter = limiter
    transport = TelegramTransport(service, fake.bot_config())
    await transport.start()
    photos = [astronaut_jpeg, grace_hopper_jpeg, no_face_png]
    chats = {user.id: chat_of(n, user) for n, user in enumerate(USERS)}
    selfie_chats = {chat.id for chat in chats.values()}

    def answers() -> list[Call]:
        return [c for c in fake.calls_to("sendMessage") if c.chat_id in selfie_chats]

    sent: dict[tuple[int, int], tuple[int, int]] = {}  # (chat, message) -> (user, photo index)
    started = time.monotonic()
    try:
        for k in range(SELFIES):
            user = USERS[k % PEOPLE]
            chat = chats[user.id]
            caption = "/mood" if chat.type != "private" else None
            message = fake.send_photo(user, chat, photos[k % 3], caption=caption, sides=(320, 640))
            sent[(chat.id, message["message_id"])] = (user.id, k % 3)
        while len(answers()) < SELFIES and time.monotonic() - started < LOAD_TIMEOUT_S:
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - started
        # Still up: a command after the storm is answered.
        fake.send_text(USERS[0], chats[USERS[0].id], "/help")
        await fake.wait_for("sendMessage", chat_id=USERS[0].id, text=say("en", "help_telegram"))
    finally:
        await transport.stop_intake()
        await transport.close(timeout=30)

    replies = [c for c in answers() if c.text != say("en", "help_telegram")]
    kinds = Counter(kind_of(c) for c in replies)
    print(
        f"\nload: {SELFIES} selfies from {PEOPLE} people in {elapsed:.1f} s: "
        f"{kinds['analysed']} analysed, {kinds['no_face']} no face, "
        f"{kinds['busy']} refused busy, {kinds['rate_limited']} refused rate limit"
    )
    assert kinds.total() == SELFIES and all(c.delivered for c in replies)

    # Exactly one answer per selfie: group answers quote their selfie; private chats count.
    quoted = [(c.chat_id, c.reply_to) for c in replies if c.chat_id < 0]
    assert sorted(quoted) == sorted(key for key in sent if key[0] < 0)
    per_private_chat = Counter(c.chat_id for c in replies if c.chat_id > 0)
    assert per_private_chat == Counter(key[0] for key in sent if key[0] > 0)
    for call in replies:
        if call.chat_id < 0:
            _, photo = sent[(call.chat_id, call.reply_to)]
            assert photo != 2 or kind_of(call) != "analysed"  # the gradient has no face

    # Every reading is in the history once, in the right chat, and nothing else is.
    analysed_by: Counter[tuple[str, str]] = Counter()
    for call in replies:
        if kind_of(call) == "analysed":
            user_id = call.chat_id if call.chat_id > 0 else sent[(call.chat_id, call.reply_to)][0]
            analysed_by[(str(user_id), str(call.chat_id))] += 1
    stored: Counter[tuple[str, str]] = Counter()
    for user in USERS:
        for entry in await history.recent("telegram", str(user.id), limit=100):
            stored[(entry.user_id, entry.chat_id)] += 1
    assert stored == analysed_by
    assert kinds["analysed"] > 0
