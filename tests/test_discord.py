"""The Discord bot: message flows through dpytest, slash commands through their callbacks with
fake interactions, all in front of the real engine and a real SQLite file."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
import discord.ext.test as dpytest
import pytest
from discord import app_commands

from bot.core import MoodService
from bot.history import AsyncHistory
from bot.music import MusicRecommender
from bot.ratelimit import RateLimiter
from bot.transports import StartupError
from bot.transports.discord_bot import (
    DiscordConfig,
    DiscordTransport,
    FixButton,
    FixMenu,
    ForgetConfirm,
    MoodBot,
    interaction_sender,
)
from ml.engine import EmotionEngine

pytestmark = pytest.mark.slow


# --- fakes for slash commands ---------------------------------------------------------------------


@dataclass
class Sent:
    """One answer to an interaction: text (content or embed), ephemeral flag, buttons, files."""

    kwargs: dict[str, Any]

    @property
    def text(self) -> str:
        embed = self.kwargs.get("embed")
        return self.kwargs.get("content") or (embed.description if embed else "") or ""

    @property
    def ephemeral(self) -> bool:
        return bool(self.kwargs.get("ephemeral"))

    @property
    def urls(self) -> list[str]:
        view = self.kwargs.get("view")
        return [item.url for item in view.children if getattr(item, "url", None)] if view else []

    @property
    def chart(self) -> bytes | None:
        file = self.kwargs.get("file")
        return file.fp.getvalue() if file else None


@dataclass
class FakeResponse:
    """interaction.response: records defer / send_message / edit_message."""

    deferred: dict[str, Any] | None = None
    sent: list[Sent] = field(default_factory=list)
    done: bool = False

    def is_done(self) -> bool:
        return self.done

    async def defer(self, **kwargs: Any) -> None:
        assert not self.done, "an interaction can be answered only once"
        self.deferred, self.done = kwargs, True

    async def send_message(self, content: str | None = None, **kwargs: Any) -> None:
        assert not self.done, "an interaction can be answered only once"
        self.sent.append(Sent({"content": content, **kwargs}))
        self.done = True

    async def edit_message(self, **kwargs: Any) -> None:
        self.sent.append(Sent({"edit": True, **kwargs}))
        self.done = True


@dataclass
class FakeFollowup:
    sent: list[Sent] = field(default_factory=list)

    async def send(self, content: str | None = None, **kwargs: Any) -> None:
        self.sent.append(Sent({"content": content, **kwargs}))


@dataclass
class FakeInteraction:
    """Just what moodbot's commands read from a discord.Interaction."""

    user: Any
    channel_id: int
    locale: discord.Locale = discord.Locale.american_english
    command: Any = None
    client: Any = None
    response: FakeResponse = field(default_factory=FakeResponse)
    followup: FakeFollowup = field(default_factory=FakeFollowup)

    @property
    def answers(self) -> list[Sent]:
        return self.response.sent + self.followup.sent


def attachment(bot: MoodBot, path: Path, content_type: str | None, size: int | None = None):
    """A slash-command attachment whose bytes dpytest serves from `path`."""
    data = {
        "id": abs(hash(path)) % 10**12,
        "filename": path.name,
        "size": path.stat().st_size if size is None else size,
        "url": str(path),
        "proxy_url": "",
        "content_type": content_type,
    }
    return discord.Attachment(data=data, state=bot._connection)


async def invoke(bot: MoodBot, name: str, interaction: FakeInteraction, **options: Any) -> None:
    """Run a slash command the way the tree does: errors go to the tree's error handler."""
    command = bot.tree.get_command(name)
    assert isinstance(command, app_commands.Command), name
    interaction.command = command
    try:
        await command.callback(command.binding, interaction, **options)  # type: ignore[arg-type]
    except Exception as exc:
        await bot.tree.on_error(interaction, app_commands.CommandInvokeError(command, exc))  # type: ignore[arg-type]


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def service(engine: EmotionEngine, history: AsyncHistory) -> MoodService:
    music = MusicRecommender(None, rng=random.Random(5))
    return MoodService(engine, music, history, limiter=RateLimiter(burst=50, per_minute=600))


@pytest.fixture
async def bot(
    service: MoodService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[MoodBot]:
    monkeypatch.chdir(tmp_path)  # dpytest writes the files the bot sends into the cwd
    intents = discord.Intents.default()
    intents.members = True  # dpytest needs members; the real bot asks for no privileged intent
    bot = MoodBot(service, intents=intents)
    await bot._async_setup_hook()
    dpytest.configure(bot, members=3)
    # dpytest swaps in its own connection state without a loop; typing() needs one.
    bot._connection.loop = asyncio.get_running_loop()
    await bot.setup_hook()  # dpytest never logs in, which is what calls setup_hook
    yield bot
    await dpytest.empty_queue()


@pytest.fixture
def replies(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every Message.reply (dpytest drops components)."""
    recorded: list[dict[str, Any]] = []
    original = discord.Message.reply

    async def reply(self: discord.Message, *args: Any, **kwargs: Any) -> discord.Message:
        recorded.append(kwargs)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(discord.Message, "reply", reply)
    return recorded


@pytest.fixture
def photos(tmp_path: Path, astronaut_jpeg: bytes, no_face_png: bytes) -> dict[str, Path]:
    files = {"smile.jpg": astronaut_jpeg, "wall.png": no_face_png, "notes.txt": b"dear diary"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in files}


def member(index: int) -> discord.Member:
    return dpytest.get_config().members[index]


def channel() -> discord.TextChannel:
    return dpytest.get_config().channels[0]


async def rows(history: AsyncHistory, user: discord.abc.User) -> list[tuple[str, str]]:
    return [(e.chat_id, e.emotion) for e in await history.recent("discord", str(user.id))]


# --- message flows (dpytest) ----------------------------------------------------------------------


async def test_image_with_a_mention_gets_an_embed_with_link_buttons(
    bot: MoodBot,
    history: AsyncHistory,
    photos: dict[str, Path],
    replies: list[dict[str, Any]],
) -> None:
    await dpytest.message(
        f"<@{bot.user.id}> how do I look?", attachments=[str(photos["smile.jpg"])]
    )
    sent = dpytest.get_message()
    assert sent.embeds[0].description.startswith("You look happy 😄 (")
    (kwargs,) = replies
    links = [item for item in kwargs["view"].children if getattr(item, "url", None)]
    assert len(links) == 5
    assert all(link.url.startswith("https://open.spotify.com/track/") for link in links)
    assert all(" — " in link.label for link in links)  # "Title — Artist"
    fix_buttons = [item for item in kwargs["view"].children if isinstance(item, FixButton)]
    assert fix_buttons and all(b.owner == member(0).id for b in fix_buttons)  # "Not quite?"
    assert kwargs["mention_author"] is False
    assert await rows(history, member(0)) == [(str(channel().id), "happy")]


async def test_image_in_a_dm_is_a_selfie(
    bot: MoodBot, history: AsyncHistory, photos: dict[str, Path]
) -> None:
    dm = await member(1).create_dm()
    await dpytest.message("", channel=dm, member=member(1), attachments=[str(photos["smile.jpg"])])
    assert dpytest.get_message().embeds[0].description.startswith("You look happy")
    assert await rows(history, member(1)) == [(str(dm.id), "happy")]


async def test_images_not_meant_for_the_bot_are_left_alone(
    bot: MoodBot, history: AsyncHistory, photos: dict[str, Path]
) -> None:
    await dpytest.message("holiday!", attachments=[str(photos["smile.jpg"])])
    assert dpytest.verify().message().nothing()
    assert await rows(history, member(0)) == []


@pytest.mark.parametrize(
    ("name", "answer"),
    [
        ("wall.png", "Sorry, I can't recognize a face in this photo."),
        ("notes.txt", "I couldn't read that file as a photo."),
    ],
)
async def test_bad_images_in_messages_get_a_clear_reply_and_write_nothing(
    bot: MoodBot, history: AsyncHistory, photos: dict[str, Path], name: str, answer: str
) -> None:
    await dpytest.message(f"<@{bot.user.id}>", attachments=[str(photos[name])])
    assert dpytest.get_message().embeds[0].description.startswith(answer)
    assert await rows(history, member(0)) == []


async def test_a_mention_without_an_image_gets_a_hint(bot: MoodBot) -> None:
    await dpytest.message(f"<@{bot.user.id}> hi")
    assert dpytest.get_message().embeds[0].description.startswith("Send me a selfie")


async def test_a_flood_of_dms_gets_one_slow_down_then_silence(
    bot: MoodBot, service: MoodService
) -> None:
    service.limiter = RateLimiter(burst=1, per_minute=1)
    dm = await member(1).create_dm()
    for _ in range(3):
        await dpytest.message("hello?", channel=dm, member=member(1))
    texts = []
    while not dpytest.sent_queue.empty():
        texts.append(dpytest.get_message().embeds[0].description)
    assert texts == [
        "Send me a selfie and I'll read your mood. /help lists everything I can do.",
        "Slow down a little 🙂 Try again in 60 s.",
    ]


async def test_a_failing_message_handler_is_logged_and_answered_kindly(
    bot: MoodBot,
    service: MoodService,
    photos: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the core fell over")

    monkeypatch.setattr(service, "analyze_selfie", broken)
    with caplog.at_level(logging.ERROR, logger="bot.transports.discord_bot"):
        await dpytest.message(f"<@{bot.user.id}>", attachments=[str(photos["smile.jpg"])])
    assert dpytest.get_message().content == (
        "Sorry, something went wrong on my side. Please try again in a moment."
    )
    (record,) = [r for r in caplog.records if r.message == "Discord event on_message failed"]
    assert record.exc_info and "the core fell over" in str(record.exc_info[1])


# --- slash commands -------------------------------------------------------------------------------


async def test_slash_commands_are_registered_without_privileged_intents(bot: MoodBot) -> None:
    names = sorted(command.name for command in bot.tree.get_commands())
    assert names == ["forget", "genre", "groupmix", "help", "history", "mode", "mood", "privacy"]
    production = MoodBot(bot.service)
    assert not production.intents.message_content and not production.intents.members
    assert not production.intents.presences


async def test_mood_defers_then_answers_with_an_embed_and_buttons(
    bot: MoodBot, history: AsyncHistory, photos: dict[str, Path]
) -> None:
    interaction = FakeInteraction(member(0), channel_id=channel().id)
    image = attachment(bot, photos["smile.jpg"], "image/jpeg")
    await invoke(bot, "mood", interaction, image=image)
    assert interaction.response.deferred == {"thinking": True}
    (sent,) = interaction.followup.sent
    assert sent.text.startswith("You look happy 😄") and not sent.ephemeral
    assert sent.urls and all(url.startswith("https://open.spotify.com/") for url in sent.urls)
    assert await rows(history, member(0)) == [(str(channel().id), "happy")]


async def test_mood_refuses_an_oversized_attachment_by_its_declared_size(
    bot: MoodBot, history: AsyncHistory, photos: dict[str, Path]
) -> None:
    interaction = FakeInteraction(member(0), channel_id=channel().id)
    path = photos["smile.jpg"]
    image = attachment(bot, path, "image/jpeg", size=30 * 1024 * 1024)
    path.unlink()  # a download would now fail: the size alone must decide
    await invoke(bot, "mood", interaction, image=image)
    (sent,) = interaction.followup.sent
    assert sent.text.startswith("That image is too large for me")
    assert await rows(history, member(0)) == []


@pytest.fixture
def attachment_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The file name of every attachment the bot downloads (Attachment.read)."""
    read: list[str] = []
    original = discord.Attachment.read

    async def recording_read(self: discord.Attachment, **kwargs: Any) -> bytes:
        read.append(self.filename)
        return await original(self, **kwargs)

    monkeypatch.setattr(discord.Attachment, "read", recording_read)
    return read


def oversized_file(tmp_path: Path, service: MoodService) -> Path:
    """A sparse file one byte over the limit: its size is declared, its bytes cost nothing."""
    path = tmp_path / "huge.jpg"
    with path.open("wb") as file:
        file.truncate(service.max_image_bytes + 1)
    return path


async def test_an_oversized_dm_attachment_is_refused_without_downloading_it(
    bot: MoodBot,
    service: MoodService,
    history: AsyncHistory,
    tmp_path: Path,
    photos: dict[str, Path],
    attachment_reads: list[str],
) -> None:
    dm = await member(1).create_dm()
    # dpytest.message() declares every attachment as 0 bytes ("unknown"), which the core must
    # download to judge; Discord declares the real size, so post the message with that.
    huge = attachment(bot, oversized_file(tmp_path, service), "image/jpeg")
    dpytest.backend.make_message("", member(1), dm, attachments=[huge])
    await dpytest.run_all_events()
    assert dpytest.get_message().embeds[0].description.startswith("That image is too large")
    assert attachment_reads == []
    await dpytest.message("", channel=dm, member=member(1), attachments=[str(photos["smile.jpg"])])
    assert attachment_reads == ["smile.jpg"]  # the recorder does see real downloads
    assert [emotion for _, emotion in await rows(history, member(1))] == ["happy"]


async def test_slash_commands_refuse_oversized_images_without_downloading_them(
    bot: MoodBot, service: MoodService, tmp_path: Path, attachment_reads: list[str]
) -> None:
    huge = oversized_file(tmp_path, service)
    for command in ("mood", "groupmix"):
        interaction = FakeInteraction(member(0), channel_id=channel().id)
        await invoke(bot, command, interaction, image=attachment(bot, huge, "image/jpeg"))
        (sent,) = interaction.followup.sent
        assert sent.text.startswith("That image is too large for me"), command
    assert attachment_reads == []


async def test_history_is_ephemeral_with_a_chart(bot: MoodBot, photos: dict[str, Path]) -> None:
    image = attachment(bot, photos["smile.jpg"], "image/jpeg")
    await invoke(bot, "mood", FakeInteraction(member(0), channel().id), image=image)
    interaction = FakeInteraction(member(0), channel_id=channel().id)
    await invoke(bot, "history", interaction, count=5)
    assert interaction.response.deferred == {"ephemeral": True, "thinking": True}
    (sent,) = interaction.followup.sent
    assert sent.ephemeral and sent.text.startswith("Your last 1 moods:")
    assert sent.kwargs["embed"].image.url == "attachment://moods.png"
    assert sent.chart and sent.chart.startswith(b"\x89PNG")


async def test_groupmix_is_per_channel(bot: MoodBot, photos: dict[str, Path]) -> None:
    for index in (0, 1):
        image = attachment(bot, photos["smile.jpg"], "image/jpeg")
        await invoke(bot, "mood", FakeInteraction(member(index), channel().id), image=image)
    here = FakeInteraction(member(2), channel_id=channel().id)
    await invoke(bot, "groupmix", here)
    assert here.followup.sent[0].text.startswith("Group mix for 2 people: happy 😄 100%.")
    elsewhere = FakeInteraction(member(2), channel_id=channel().id + 1)
    await invoke(bot, "groupmix", elsewhere)
    assert elsewhere.followup.sent[0].text.startswith("Nobody here has sent me a selfie")


async def test_forget_asks_and_only_the_asker_can_confirm(
    bot: MoodBot, history: AsyncHistory, photos: dict[str, Path]
) -> None:
    image = attachment(bot, photos["smile.jpg"], "image/jpeg")
    await invoke(bot, "mood", FakeInteraction(member(0), channel().id), image=image)
    asking = FakeInteraction(member(0), channel_id=channel().id)
    await invoke(bot, "forget", asking)
    (question,) = asking.response.sent
    assert question.ephemeral and question.text.startswith("Delete all your moods")
    view = question.kwargs["view"]
    assert isinstance(view, ForgetConfirm)
    assert [item.label for item in view.children] == ["Yes, delete everything", "Cancel"]

    stranger = FakeInteraction(member(1), channel_id=channel().id)
    assert not await view.interaction_check(stranger)  # type: ignore[arg-type]
    assert stranger.response.sent[0].text == "This button is for someone else."

    pressing = FakeInteraction(member(0), channel_id=channel().id)
    await view.confirm.callback(pressing)  # type: ignore[arg-type]
    assert pressing.response.sent[0].kwargs["content"].startswith("Done: I deleted 1 mood")
    assert pressing.response.sent[0].kwargs["view"] is None
    assert await rows(history, member(0)) == []


def fix_items(view: discord.ui.View) -> tuple[list[FixButton], FixMenu]:
    buttons = [item for item in view.children if isinstance(item, FixButton)]
    (menu,) = [item for item in view.children if isinstance(item, FixMenu)]
    return buttons, menu


async def test_not_quite_buttons_correct_the_mood_for_the_owner_only(
    bot: MoodBot, history: AsyncHistory, photos: dict[str, Path]
) -> None:
    image = attachment(bot, photos["smile.jpg"], "image/jpeg")
    asking = FakeInteraction(member(0), channel().id, client=bot)
    await invoke(bot, "mood", asking, image=image)
    (answer,) = asking.followup.sent
    assert answer.urls
    buttons, menu = fix_items(answer.kwargs["view"])
    assert len(buttons) == 3 and menu.item.placeholder == "Not quite? Something else…"
    assert [o.value for o in menu.item.options][:3] == ["happy", "sad", "angry"]
    assert all(len(item.custom_id) <= 100 for item in [*buttons, menu])

    stranger = FakeInteraction(member(1), channel_id=channel().id, client=bot)
    await buttons[0].callback(stranger)  # type: ignore[arg-type]
    (refusal,) = stranger.answers
    assert refusal.ephemeral and refusal.text == f"Only {member(0).mention} can change this."
    assert await rows(history, member(0)) == [(str(channel().id), "happy")]

    pressing = FakeInteraction(member(0), channel_id=channel().id, client=bot)
    await buttons[0].callback(pressing)  # type: ignore[arg-type]
    (edited,) = pressing.response.sent
    chosen = buttons[0].emotion
    assert edited.kwargs["edit"] and edited.text.startswith(f"Got it: you feel {chosen} ")
    assert f"\n🎵 {chosen} → " in edited.text
    assert await rows(history, member(0)) == [(str(channel().id), chosen)]

    # "Something else": the menu of every mood, rebuilt from its custom_id as after a restart.
    _, new_menu = fix_items(edited.kwargs["view"])
    assert new_menu.item.placeholder == "Not quite? Change it"
    match = FixMenu.__discord_ui_compiled_template__.fullmatch(new_menu.custom_id)
    assert match is not None
    choosing = FakeInteraction(member(0), channel_id=channel().id, client=bot)
    revived = await FixMenu.from_custom_id(choosing, new_menu.item, match)  # type: ignore[arg-type]
    revived.item._values = ["sad"]
    await revived.callback(choosing)  # type: ignore[arg-type]
    assert choosing.response.sent[0].text.startswith("Got it: you feel sad 😢.")
    (entry,) = await history.recent("discord", str(member(0).id))
    assert (entry.emotion, entry.predicted) == ("sad", "happy")


async def test_not_quite_on_discord_refuses_kindly_when_the_mood_is_gone(
    bot: MoodBot, history: AsyncHistory, photos: dict[str, Path]
) -> None:
    image = attachment(bot, photos["smile.jpg"], "image/jpeg")
    korean = discord.Locale.korean
    asking = FakeInteraction(member(0), channel().id, locale=korean, client=bot)
    await invoke(bot, "mood", asking, image=image)
    buttons, _ = fix_items(asking.followup.sent[0].kwargs["view"])
    await bot.service.forget(interaction_sender(asking))  # type: ignore[arg-type]
    pressing = FakeInteraction(member(0), channel().id, locale=korean, client=bot)
    await buttons[0].callback(pressing)  # type: ignore[arg-type]
    (refusal,) = pressing.answers
    assert refusal.ephemeral and refusal.text == "그 감정 기록은 이미 지워져서 바꿀 것이 없어요."
    assert await rows(history, member(0)) == []


async def test_not_quite_buttons_are_registered_to_survive_restarts(bot: MoodBot) -> None:
    assert {FixButton, FixMenu} <= set(bot._connection._view_store._dynamic_items.values())


async def test_preferences_and_texts_answer_only_the_asker(bot: MoodBot) -> None:
    for name, options, answer in [
        ("mode", {"mode": "calm"}, "Music mode set to calm."),
        ("genre", {"words": "k-pop"}, "From now on I'll pick k-pop songs."),
        ("help", {}, "Send me a selfie"),
        ("privacy", {}, "For each selfie I analyse I store"),
    ]:
        interaction = FakeInteraction(member(0), channel_id=channel().id)
        await invoke(bot, name, interaction, **options)
        (sent,) = interaction.answers
        assert sent.ephemeral and sent.text.startswith(answer), name


async def test_korean_locale_gets_korean(bot: MoodBot, photos: dict[str, Path]) -> None:
    interaction = FakeInteraction(member(0), channel().id, locale=discord.Locale.korean)
    assert interaction_sender(interaction).language == "ko"  # type: ignore[arg-type]
    image = attachment(bot, photos["smile.jpg"], "image/jpeg")
    await invoke(bot, "mood", interaction, image=image)
    assert interaction.followup.sent[0].text.startswith("기쁨 😄 표정이에요")


async def test_a_failing_command_is_logged_and_answered_kindly(
    bot: MoodBot,
    service: MoodService,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(service, "group_mix", broken)
    interaction = FakeInteraction(member(0), channel_id=channel().id)
    with caplog.at_level(logging.ERROR, logger="bot.transports.discord_bot"):
        await invoke(bot, "groupmix", interaction)
    (sent,) = interaction.followup.sent
    assert sent.ephemeral and sent.text == (
        "Sorry, something went wrong on my side. Please try again in a moment."
    )
    (record,) = [r for r in caplog.records if r.message == "Discord command /groupmix failed"]
    assert record.exc_info and "database on fire" in str(record.exc_info[1])


# --- start-up -------------------------------------------------------------------------------------


async def test_commands_sync_to_one_server_when_asked(
    service: MoodService, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = MoodBot(service, sync_commands=True, guild_id=4242)
    synced: list[int | None] = []

    async def sync(*, guild: discord.abc.Snowflake | None = None) -> list[Any]:
        synced.append(guild.id if guild else None)
        return bot.tree.get_commands(guild=guild)

    monkeypatch.setattr(bot.tree, "sync", sync)
    await bot.setup_hook()
    assert synced == [4242]
    guild_commands = bot.tree.get_commands(guild=discord.Object(id=4242))
    assert {c.name for c in guild_commands} >= {"mood", "history", "groupmix"}


async def test_a_refused_token_is_a_clear_startup_error(
    service: MoodService, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = DiscordTransport(service, DiscordConfig(token="not-a-token"))

    async def login(token: str) -> None:
        raise discord.LoginFailure("Improper token has been passed.")

    monkeypatch.setattr(transport.bot, "login", login)
    with pytest.raises(StartupError, match="Discord refused the bot token"):
        await transport.start()
