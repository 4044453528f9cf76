""" "Not quite?" on Telegram end to end: the real Application against the fake Bot API server,
the real engine and a real SQLite file. Buttons are pressed the way a client presses them:
with whatever callback data it chooses to send."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator

import pytest

from bot.core import MoodService
from bot.correction import MORE, button_data
from bot.history import AsyncHistory
from bot.music import MusicRecommender
from bot.ratelimit import RateLimiter
from bot.transports.telegram_bot import TelegramTransport
from ml.engine import EmotionEngine
from ml.labels import EMOTIONS
from tests.fakes.telegram import Call, FakeTelegram, TgUser, running_bot

pytestmark = pytest.mark.slow

ALICE = TgUser(1001, "Alice")
BOB = TgUser(1002, "Bob")
MINJI = TgUser(1003, "Minji", language_code="ko")
GROUP = FakeTelegram.group(-1001)


@pytest.fixture
def service(engine: EmotionEngine, history: AsyncHistory) -> MoodService:
    music = MusicRecommender(None, rng=random.Random(7))
    return MoodService(engine, music, history, limiter=RateLimiter(burst=50, per_minute=600))


@pytest.fixture
async def telegram(fake: FakeTelegram, service: MoodService) -> AsyncIterator[TelegramTransport]:
    async with running_bot(service, fake) as transport:
        yield transport


async def moods(history: AsyncHistory, user: TgUser) -> list[tuple[str, str | None]]:
    return [(e.emotion, e.predicted) for e in await history.recent("telegram", str(user.id))]


async def selfie(fake: FakeTelegram, user: TgUser, chat, photo: bytes, **options) -> Call:
    fake.send_photo(user, chat, photo, **options)
    return await fake.wait_for("sendMessage", chat_id=chat.id)


def sent(fake: FakeTelegram, answer: Call) -> dict:
    """The bot's message as the fake keeps it (what a press refers to)."""
    return fake.messages[(answer.chat_id, answer.result["message_id"])]


async def test_pressing_a_mood_corrects_the_row_and_edits_the_answer(
    telegram: TelegramTransport, fake: FakeTelegram, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    answer = await selfie(fake, ALICE, fake.private(ALICE), astronaut_jpeg)
    assert answer.text.startswith("You look happy")
    *suggested, more = answer.callback_buttons
    assert len(suggested) == 3 and more["text"] == "Not quite? Something else…"
    assert all(len(b["callback_data"].encode()) <= 64 for b in answer.callback_buttons)
    # The next most likely emotions, as "emoji name".
    assert all(b["text"].split(" ", 1)[1] in EMOTIONS for b in suggested)
    first_links = [b["url"] for b in answer.link_buttons]

    # "Something else…" swaps the suggestions for every mood, the music links stay.
    fake.press_button(ALICE, sent(fake, answer), more["callback_data"])
    listed = await fake.wait_for("editMessageReplyMarkup", chat_id=ALICE.id)
    assert [b["url"] for b in listed.link_buttons] == first_links
    assert [b["text"] for b in listed.callback_buttons][:3] == ["😄 happy", "😢 sad", "😠 angry"]
    assert len(listed.callback_buttons) == len(EMOTIONS)
    sad = next(b for b in listed.callback_buttons if b["text"] == "😢 sad")

    fake.press_button(ALICE, sent(fake, answer), sad["callback_data"])
    edited = await fake.wait_for("editMessageText", chat_id=ALICE.id)
    assert edited.params["message_id"] == answer.result["message_id"]
    assert edited.text.startswith("Got it: you feel sad 😢. I changed it in your history.")
    assert "\n🎵 sad → gentle, slow songs: valence 0.2-0.4, energy 0.2-0.4." in edited.text
    assert edited.link_buttons and [b["url"] for b in edited.link_buttons] != first_links
    assert [b["text"] for b in edited.callback_buttons] == ["Not quite? Change it"]
    assert await moods(history, ALICE) == [("sad", "happy")]  # the same row, corrected

    fake.send_text(ALICE, fake.private(ALICE), "/history")
    shown = await fake.wait_for("sendMessage", chat_id=ALICE.id)
    assert "sad 😢 (your correction)" in shown.text


async def test_forged_and_foreign_presses_change_nothing(
    telegram: TelegramTransport,
    fake: FakeTelegram,
    history: AsyncHistory,
    astronaut_jpeg: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    answer = await selfie(fake, ALICE, GROUP, astronaut_jpeg, caption="/mood")
    message = sent(fake, answer)
    data = answer.callback_buttons[0]["callback_data"]
    _, ref, _ = data.split(":")
    row, minute, mac = ref.split(".")
    forged = [
        button_data(f"{int(row, 36) + 1:x}.{minute}.{mac}", "sad"),  # someone else's row
        button_data(ref[:-2] + "zz", "sad"),  # a made-up signature
        button_data(ref, "ecstatic"),  # an unknown emotion
        "fix:" + "x" * 80,  # too long, malformed
        "fix:nonsense",
    ]
    for payload in forged:
        fake.press_button(ALICE, message, payload)
    fake.press_button(BOB, message, data)  # another user presses Alice's button
    fake.press_button(BOB, message, button_data(ref, MORE))
    acks = [await fake.wait_for("answerCallbackQuery") for _ in range(7)]
    texts = sorted(a.params.get("text", "") for a in acks)
    assert texts == sorted(
        ["That button isn't valid for you, so I changed nothing."] * 4
        + [
            "I don't know that mood. Moods: happy, sad, angry, anxious, hurt, neutral, fear, "
            "disgust, surprise, embarrassed."
        ]
        + ["", ""]  # malformed data: a silent ack
    )
    assert not fake.calls_to("editMessageText") and not fake.calls_to("editMessageReplyMarkup")
    assert await moods(history, ALICE) == [("happy", None)]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Refused a correction on telegram" in logged
    assert ref not in logged and mac not in logged


async def test_mood_on_someone_elses_photo_corrects_only_the_music(
    telegram: TelegramTransport, fake: FakeTelegram, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    photo = fake.send_photo(ALICE, GROUP, astronaut_jpeg, caption="just a photo")
    fake.send_text(MINJI, GROUP, "/mood", reply_to=photo)
    answer = await fake.wait_for("sendMessage", chat_id=GROUP.id)
    assert "기록에도 저장하지 않았어요" in answer.text
    angry = button_data(answer.callback_buttons[0]["callback_data"].split(":")[1], "angry")
    fake.press_button(MINJI, sent(fake, answer), angry)
    edited = await fake.wait_for("editMessageText", chat_id=GROUP.id)
    assert edited.text.startswith("알겠어요: 분노 😠. 그에 맞는 음악이에요 (저장한 것은 없어요).")
    assert edited.callback_buttons[-1]["text"] == "아닌가요? 바꾸기"
    assert await moods(history, ALICE) == [] and await moods(history, MINJI) == []
