"""The Telegram bot end to end: the real Application polls, downloads from and sends to a fake
Bot API server on 127.0.0.1, in front of the real engine and a real SQLite file."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator

import aiohttp
import pytest
from telegram import PhotoSize

from bot.core import MoodService
from bot.history import AsyncHistory
from bot.music import MusicRecommender
from bot.ratelimit import RateLimiter
from bot.transports import StartupError
from bot.transports.telegram_bot import (
    SECRET_HEADER,
    TelegramConfig,
    TelegramTransport,
    pick_photo_size,
)
from ml.engine import EmotionEngine
from tests.fakes.telegram import FakeTelegram, TgUser

pytestmark = pytest.mark.slow

ALICE = TgUser(1001, "Alice")
BOB = TgUser(1002, "Bob")
MINJI = TgUser(1003, "Minji", language_code="ko")
GROUP = FakeTelegram.group(-1001)
HINT = "Send me a selfie and I'll read your mood. /help lists everything I can do."


@pytest.fixture
def service(engine: EmotionEngine, history: AsyncHistory) -> MoodService:
    music = MusicRecommender(None, rng=random.Random(7))
    return MoodService(engine, music, history, limiter=RateLimiter(burst=50, per_minute=600))


def config_for(fake: FakeTelegram, **options: object) -> TelegramConfig:
    return fake.bot_config(**options)


@pytest.fixture
async def telegram(fake: FakeTelegram, service: MoodService) -> AsyncIterator[TelegramTransport]:
    transport = TelegramTransport(service, config_for(fake))
    await transport.start()
    yield transport
    await transport.stop_intake()
    await transport.close(timeout=10)


async def rows(history: AsyncHistory, user: TgUser) -> list[tuple[str, str]]:
    return [(e.chat_id, e.emotion) for e in await history.recent("telegram", str(user.id))]


# --- selfies --------------------------------------------------------------------------------------


async def test_selfie_gets_emotion_music_buttons_and_a_history_row(
    telegram: TelegramTransport, fake: FakeTelegram, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    photo = fake.send_photo(ALICE, fake.private(ALICE), astronaut_jpeg, sides=(90, 320, 800, 1280))
    action = await fake.wait_for("sendChatAction", chat_id=ALICE.id)
    reply = await fake.wait_for("sendMessage", chat_id=ALICE.id)
    assert action.params["action"] == "typing"
    assert reply.text.startswith("You look happy 😄 (")
    assert "\n🎵 happy → bright, upbeat songs: valence 0.7-0.9, energy 0.6-0.8." in reply.text
    # One button a track, "Title — Artist", linking to the track on Spotify.
    assert len(reply.link_buttons) == 5 and all(
        b["url"].startswith("https://open.spotify.com/track/") and " — " in b["text"]
        for b in reply.link_buttons
    )
    assert reply.reply_to is None  # private chats are not quoted
    assert await rows(history, ALICE) == [(str(ALICE.id), "happy")]
    # The 800 px size suits the detector (640 px); the 1280 px original is never fetched.
    (file_path,) = fake.downloads
    sizes = {p["file_id"]: p["width"] for p in photo["photo"]}
    (get_file,) = fake.calls_to("getFile")
    assert sizes[get_file.params["file_id"]] == 800 and file_path.startswith("photos/")


async def test_image_sent_as_a_file_is_a_selfie(
    telegram: TelegramTransport, fake: FakeTelegram, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    fake.send_document(
        ALICE, fake.private(ALICE), astronaut_jpeg, file_name="me.jpg", mime_type="image/jpeg"
    )
    reply = await fake.wait_for("sendMessage", chat_id=ALICE.id)
    assert reply.text.startswith("You look happy")
    assert await rows(history, ALICE) == [(str(ALICE.id), "happy")]


@pytest.mark.parametrize(
    ("send", "answer", "file_fetched"),
    [
        (
            lambda fake, user, data: fake.send_document(
                user,
                fake.private(user),
                b"dear diary",
                file_name="notes.txt",
                mime_type="text/plain",
            ),
            "I couldn't read that file as a photo",
            False,
        ),
        (
            lambda fake, user, data: fake.send_document(
                user,
                fake.private(user),
                data["astronaut"],
                file_name="huge.jpg",
                mime_type="image/jpeg",
                declared_size=30 * 1024 * 1024,
            ),
            "That image is too large for me (The file is 31.5 MB; the limit is 21.0 MB.)",
            False,
        ),
        (
            lambda fake, user, data: fake.send_photo(user, fake.private(user), data["no_face"]),
            "Sorry, I can't recognize a face in this photo",
            True,
        ),
    ],
    ids=["not-an-image", "oversized-by-declared-size", "no-face"],
)
async def test_bad_photos_get_a_clear_reply_and_write_nothing(
    telegram: TelegramTransport,
    fake: FakeTelegram,
    history: AsyncHistory,
    astronaut_jpeg: bytes,
    no_face_png: bytes,
    send,
    answer: str,
    file_fetched: bool,
) -> None:
    send(fake, ALICE, {"astronaut": astronaut_jpeg, "no_face": no_face_png})
    reply = await fake.wait_for("sendMessage", chat_id=ALICE.id)
    assert reply.text.startswith(answer) and not reply.buttons
    assert bool(fake.calls_to("getFile")) == bool(fake.downloads) == file_fetched
    assert await rows(history, ALICE) == []


async def test_download_failure_is_answered_kindly(
    telegram: TelegramTransport, fake: FakeTelegram, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    fake.fail("getFile", status=502, description="Bad Gateway")
    fake.send_photo(ALICE, fake.private(ALICE), astronaut_jpeg)
    reply = await fake.wait_for("sendMessage", chat_id=ALICE.id)
    assert reply.text == "I couldn't download that photo. Please send it again."
    assert await rows(history, ALICE) == []


async def test_korean_user_gets_korean(
    telegram: TelegramTransport, fake: FakeTelegram, astronaut_jpeg: bytes
) -> None:
    fake.send_photo(MINJI, fake.private(MINJI), astronaut_jpeg)
    reply = await fake.wait_for("sendMessage", chat_id=MINJI.id)
    assert reply.text.startswith("기쁨 😄 표정이에요")


# --- history --------------------------------------------------------------------------------------


async def test_history_sends_text_and_a_chart(
    telegram: TelegramTransport, fake: FakeTelegram, astronaut_jpeg: bytes
) -> None:
    fake.send_photo(ALICE, fake.private(ALICE), astronaut_jpeg)
    await fake.wait_for("sendMessage", chat_id=ALICE.id)
    fake.send_text(ALICE, fake.private(ALICE), "/history 5")
    text = await fake.wait_for("sendMessage", chat_id=ALICE.id)
    chart = await fake.wait_for("sendPhoto", chat_id=ALICE.id)
    assert text.text.splitlines()[0] == "Your last 1 moods:"
    assert "happy 😄" in text.text.splitlines()[1]
    assert chart.files["photo"].startswith(b"\x89PNG")
    assert any(c.params["action"] == "upload_photo" for c in fake.calls_to("sendChatAction"))


async def test_history_in_a_group_goes_to_the_asker_privately(
    telegram: TelegramTransport, fake: FakeTelegram, astronaut_jpeg: bytes
) -> None:
    fake.send_photo(ALICE, GROUP, astronaut_jpeg, caption="/mood")
    await fake.wait_for("sendMessage", chat_id=GROUP.id)
    fake.send_text(ALICE, GROUP, f"/history@{fake.bot['username']}")
    private = await fake.wait_for("sendMessage", chat_id=ALICE.id)
    assert private.text.startswith("Your last 1 moods:")
    await fake.wait_for("sendPhoto", chat_id=ALICE.id)
    note = await fake.wait_for("sendMessage", chat_id=GROUP.id)
    assert note.text == "I sent your history to you in a private chat."
    assert [c.chat_id for c in fake.calls_to("sendPhoto")] == [ALICE.id]


async def test_history_in_a_group_never_shows_it_there_when_private_is_closed(
    telegram: TelegramTransport, fake: FakeTelegram
) -> None:
    fake.unreachable_users.add(BOB.id)
    fake.send_text(BOB, GROUP, "/history")
    note = await fake.wait_for("sendMessage", chat_id=GROUP.id)
    assert note.text.startswith("I don't show personal history in groups.")
    assert note.buttons == [
        {"text": "Open a private chat", "url": f"https://t.me/{fake.bot['username']}?start=history"}
    ]
    assert not fake.calls_to("sendPhoto")


# --- groups ---------------------------------------------------------------------------------------


async def test_three_people_in_a_group_then_groupmix(
    telegram: TelegramTransport,
    fake: FakeTelegram,
    history: AsyncHistory,
    astronaut_jpeg: bytes,
    grace_hopper_jpeg: bytes,
) -> None:
    username = fake.bot["username"]
    # Three ways to address the bot with privacy mode on: /mood caption, mention, /mood reply.
    fake.send_photo(ALICE, GROUP, astronaut_jpeg, caption="/mood")
    fake.send_photo(BOB, GROUP, grace_hopper_jpeg, caption=f"me today @{username}")
    minji_photo = fake.send_photo(MINJI, GROUP, astronaut_jpeg)
    fake.send_text(MINJI, GROUP, "/mood", reply_to=minji_photo)
    answers = [await fake.wait_for("sendMessage", chat_id=GROUP.id) for _ in range(3)]
    assert all(a.reply_to for a in answers)  # group answers quote the message they answer
    assert len(fake.downloads) == 3
    for user in (ALICE, BOB, MINJI):
        assert [chat for chat, _ in await rows(history, user)] == [str(GROUP.id)]

    fake.send_text(BOB, GROUP, "/groupmix")
    mix = await fake.wait_for("sendMessage", chat_id=GROUP.id)
    assert mix.text.startswith("Group mix for 3 people: ")
    assert mix.buttons and mix.buttons == mix.link_buttons  # a blend of moods has no "Not quite?"
    assert all(b["url"].startswith("https://open.spotify.com/") for b in mix.buttons)


async def test_group_photos_not_meant_for_the_bot_are_left_alone(
    telegram: TelegramTransport, fake: FakeTelegram, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    fake.send_photo(ALICE, GROUP, astronaut_jpeg, caption="beach day")
    fake.send_text(ALICE, GROUP, "/help")
    help_text = await fake.wait_for("sendMessage", chat_id=GROUP.id)
    assert help_text.text.startswith("Send me a selfie")
    assert fake.calls_to("getFile") == [] and await rows(history, ALICE) == []


async def test_mood_on_someone_elses_photo_is_answered_but_not_stored(
    telegram: TelegramTransport, fake: FakeTelegram, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    photo = fake.send_photo(ALICE, GROUP, astronaut_jpeg)
    fake.send_text(BOB, GROUP, "/mood", reply_to=photo)
    reply = await fake.wait_for("sendMessage", chat_id=GROUP.id)
    assert reply.text.startswith("You look happy")
    assert reply.text.endswith("(Not saved to anyone's history: it isn't your photo.)")
    assert await rows(history, ALICE) == [] and await rows(history, BOB) == []


async def test_groupmix_in_reply_to_a_group_photo(
    telegram: TelegramTransport, fake: FakeTelegram, group_photo: bytes
) -> None:
    photo = fake.send_photo(ALICE, GROUP, group_photo, sides=(320, 768))
    fake.send_text(ALICE, GROUP, "/groupmix", reply_to=photo)
    reply = await fake.wait_for("sendMessage", chat_id=GROUP.id)
    assert reply.text.startswith("Group photo with 2 people: ")


# --- forget, preferences, texts -------------------------------------------------------------------


async def test_forget_asks_first_and_only_the_asker_can_confirm(
    telegram: TelegramTransport, fake: FakeTelegram, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    fake.send_photo(ALICE, GROUP, astronaut_jpeg, caption="/mood")
    await fake.wait_for("sendMessage", chat_id=GROUP.id)
    fake.send_text(ALICE, GROUP, "/forget")
    question = await fake.wait_for("sendMessage", chat_id=GROUP.id)
    assert question.text.startswith("Delete all your moods and settings")
    yes, no = question.buttons
    assert (yes["text"], no["text"]) == ("Yes, delete everything", "Cancel")
    asked = fake.messages[(GROUP.id, question.result["message_id"])]

    fake.press_button(BOB, asked, yes["callback_data"])
    refusal = await fake.wait_for("answerCallbackQuery")
    assert refusal.params["text"] == "This button is for someone else."
    assert len(await rows(history, ALICE)) == 1

    fake.press_button(ALICE, asked, yes["callback_data"])
    edited = await fake.wait_for("editMessageText", chat_id=GROUP.id)
    assert edited.text == "Done: I deleted 1 mood records of yours. Nothing about you is left."
    assert await rows(history, ALICE) == []


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("/start", "Hi, I'm moodbot 👋\n\nSend me a selfie"),
        ("/privacy", "For each selfie I analyse I store: the emotion I read"),
        ("/mode lift", "Music mode set to lift."),
        ("/mode loud", "Mode must be one of: match, lift, calm."),
        ("/genre k-pop", "From now on I'll pick k-pop songs."),
        ("/mood", "Reply /mood to a photo"),
        ("/dance", "I don't know that command."),
        ("hello there", "Send me a selfie and I'll read your mood."),
    ],
)
async def test_commands_and_words(
    telegram: TelegramTransport, fake: FakeTelegram, text: str, answer: str
) -> None:
    fake.send_text(ALICE, fake.private(ALICE), text)
    reply = await fake.wait_for("sendMessage", chat_id=ALICE.id)
    assert reply.text.startswith(answer)


async def test_command_menu_is_published_in_both_languages(
    telegram: TelegramTransport, fake: FakeTelegram
) -> None:
    menus = {
        call.params.get("language_code"): call.params["commands"]
        for call in fake.calls_to("setMyCommands")
    }
    assert [c["command"] for c in menus[None]] == [c["command"] for c in menus["ko"]]
    assert {"mood", "history", "groupmix", "forget", "mode", "genre", "privacy"} <= {
        c["command"] for c in menus[None]
    }


async def test_a_flood_gets_one_slow_down_then_silence(
    telegram: TelegramTransport, fake: FakeTelegram, service: MoodService
) -> None:
    # A stopped clock: however long the reading takes, the wait quoted is the full minute.
    service.limiter = RateLimiter(burst=1, per_minute=1, clock=lambda: 0.0)
    for _ in range(3):
        fake.send_text(ALICE, fake.private(ALICE), "hello?")
    fake.send_text(ALICE, fake.private(ALICE), "/help")  # /help is not rate limited
    await fake.wait_for("sendMessage", chat_id=ALICE.id, text=HINT)
    await fake.wait_for(
        "sendMessage", chat_id=ALICE.id, text="Slow down a little 🙂 Try again in 60 s."
    )
    await fake.wait_for("sendMessage", chat_id=ALICE.id)
    assert len(fake.calls_to("sendMessage")) == 3


# --- failures -------------------------------------------------------------------------------------


async def test_a_failing_handler_is_logged_and_answered_kindly(
    telegram: TelegramTransport, fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail("sendMessage", status=400, description="Bad Request: something odd")
    with caplog.at_level(logging.ERROR, logger="bot.transports.telegram_bot"):
        fake.send_text(ALICE, fake.private(ALICE), "/help")
        await fake.wait_for("sendMessage", chat_id=ALICE.id)  # the one that failed
        kind = await fake.wait_for("sendMessage", chat_id=ALICE.id)
    assert kind.text == "Sorry, something went wrong on my side. Please try again in a moment."
    (record,) = [r for r in caplog.records if r.message == "Telegram update failed"]
    assert record.exc_info and "something odd" in str(record.exc_info[1]).lower()


async def test_wrong_token_is_a_clear_startup_error(
    fake: FakeTelegram, service: MoodService
) -> None:
    config = TelegramConfig(
        token="999:wrong", base_url=fake.base_url, base_file_url=fake.base_file_url
    )
    with pytest.raises(StartupError, match="Telegram refused the bot token"):
        await TelegramTransport(service, config).start()


async def test_webhook_mode_checks_the_secret_and_answers(
    fake: FakeTelegram, service: MoodService
) -> None:
    url = "https://bot.example.org/tg/hook"
    config = config_for(fake, webhook_url=url, port=0, secret_token="s3cret-token")
    transport = TelegramTransport(service, config)
    assert "webhook https://bot.example.org/tg/hook" in await transport.start()
    try:
        (hook,) = fake.calls_to("setWebhook")
        assert hook.params["url"] == url and hook.params["secret_token"] == "s3cret-token"
        assert hook.params["allowed_updates"] == ["message", "callback_query"]
        assert not fake.calls_to("getUpdates") and not fake.calls_to("deleteWebhook")
        host, port = transport.webhook_address or ("", 0)
        update = {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "date": 0,
                "chat": {"id": ALICE.id, "type": "private"},
                "from": ALICE.to_dict(),
                "text": "/privacy",
                "entities": [{"type": "bot_command", "offset": 0, "length": 8}],
            },
        }
        async with aiohttp.ClientSession() as session:
            endpoint = f"http://{host}:{port}/tg/hook"
            forged = await session.post(endpoint, json=update, headers={SECRET_HEADER: "nope"})
            real = await session.post(
                endpoint, data=json.dumps(update), headers={SECRET_HEADER: "s3cret-token"}
            )
        assert (forged.status, real.status) == (403, 200)
        reply = await fake.wait_for("sendMessage", chat_id=ALICE.id)
        assert reply.text.startswith("For each selfie I analyse I store")
    finally:
        await transport.stop_intake()
        await transport.close(timeout=5)


def test_photo_size_suits_the_detector_and_the_size_limit() -> None:
    def size(side: int, nbytes: int) -> PhotoSize:
        return PhotoSize(f"f{side}", f"u{side}", side, side * 3 // 4, file_size=nbytes)

    sizes = [size(90, 1_000), size(320, 20_000), size(800, 90_000), size(1280, 300_000)]
    assert pick_photo_size(sizes, ideal_side=640, max_bytes=10**6).width == 800
    assert pick_photo_size(sizes, ideal_side=2000, max_bytes=10**6).width == 1280
    assert pick_photo_size(sizes, ideal_side=640, max_bytes=50_000).width == 320
    assert pick_photo_size(sizes, ideal_side=640, max_bytes=500) is None
