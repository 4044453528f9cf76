"""Discord front door (discord.py 2): slash commands, plus images in DMs or with a mention.

No privileged intent is needed: slash commands carry their attachment, and Discord delivers
the content of DMs and of messages that mention the bot without the message-content intent.
Replies are embeds with link buttons; personal answers (/history, /forget, settings) are
ephemeral, so only the person who asked sees them.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot.core import (
    DEFAULT_HISTORY,
    MAX_HISTORY,
    DownloadFailed,
    InFlight,
    MoodService,
    Reply,
    Sender,
    Upload,
)
from bot.correction import CorrectionOffer, button_data
from bot.music import Recommendation
from bot.settings import Settings
from bot.texts import COMMANDS, emotion_name, language_of, say
from bot.transports import StartupError, fit, guess_image_type, mood_button_label
from ml.errors import ErrorCode
from ml.labels import EMOJI, EMOTIONS

log = logging.getLogger(__name__)

PLATFORM = "discord"
CHART_FILE = "moods.png"
EMBED_CHARS = 4096
BUTTON_CHARS = 80
MAX_BUTTONS = 25
LINK_BUTTONS = 15  # three rows; "Not quite?" takes the last two of Discord's five
READY_TIMEOUT_S = 60.0
FORGET_TIMEOUT_S = 120.0
OK_COLOUR = discord.Colour.blurple()
PROBLEM_COLOUR = discord.Colour.orange()


@dataclass(frozen=True)
class DiscordConfig:
    """The bot token and how slash commands are published."""

    token: str = field(repr=False)
    sync_commands: bool = True
    guild_id: int | None = None  # sync to this server only: instant, for development
    # Set: an auto-sharded bot over `shard_ids` of `shard_count` shards (all when None).
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> DiscordConfig:
        assert settings.discord_bot_token, "Discord needs DISCORD_BOT_TOKEN"
        shard_count, shard_ids = settings.discord_shards
        return cls(
            token=settings.discord_bot_token.get_secret_value(),
            sync_commands=settings.discord_sync_commands,
            guild_id=settings.discord_guild_id,
            shard_count=shard_count,
            shard_ids=shard_ids,
        )

    @property
    def sharded(self) -> bool:
        return self.shard_count is not None


# --- small translations between Discord and the core ----------------------------------------------


def interaction_sender(interaction: discord.Interaction) -> Sender:
    """Who ran a slash command, and in which channel (group mixes are per channel)."""
    return Sender(
        PLATFORM,
        str(interaction.channel_id),
        str(interaction.user.id),
        language_of(interaction.locale.value),
    )


def message_sender(message: discord.Message) -> Sender:
    """Who sent a message; messages carry no locale, so the server's is used."""
    locale = message.guild.preferred_locale.value if message.guild else None
    return Sender(PLATFORM, str(message.channel.id), str(message.author.id), language_of(locale))


def upload_of(attachment: discord.Attachment) -> Upload:
    """An attachment as the core sees it: declared size and type, fetched on demand."""

    async def fetch() -> bytes:
        try:
            return await attachment.read()
        except (discord.HTTPException, aiohttp.ClientError) as exc:
            raise DownloadFailed(str(exc)) from exc

    return Upload(
        fetch=fetch,
        size=attachment.size,
        mime_type=guess_image_type(attachment.content_type, attachment.filename),
    )


def first_image(attachments: list[discord.Attachment]) -> discord.Attachment | None:
    """The first image attachment, else the first attachment (the core says why it won't do)."""
    for attachment in attachments:
        kind = guess_image_type(attachment.content_type, attachment.filename) or ""
        if kind.startswith("image/"):
            return attachment
    return attachments[0] if attachments else None


def add_links(view: discord.ui.View, links: tuple[Recommendation, ...]) -> discord.ui.View:
    """One link button per music suggestion."""
    for link in links[:MAX_BUTTONS]:
        view.add_item(discord.ui.Button(label=fit(link.label, BUTTON_CHARS), url=link.url))
    return view


def link_view(links: tuple[Recommendation, ...]) -> discord.ui.View:
    return add_links(discord.ui.View(timeout=None), links)


def embed_of(reply: Reply) -> discord.Embed:
    return discord.Embed(
        description=fit(reply.text, EMBED_CHARS),
        colour=PROBLEM_COLOUR if reply.error_code else OK_COLOUR,
    )


def message_parts(reply: Reply, view: discord.ui.View | None = None) -> dict[str, Any]:
    """A reply as send() keywords: one embed, buttons (`view`, else links), the chart."""
    embed = embed_of(reply)
    parts: dict[str, Any] = {"embed": embed}
    if view is not None:
        parts["view"] = view
    elif reply.links:
        parts["view"] = link_view(reply.links)
    if reply.chart_png:
        embed.set_image(url=f"attachment://{CHART_FILE}")
        parts["file"] = discord.File(io.BytesIO(reply.chart_png), filename=CHART_FILE)
    return parts


async def answer(
    interaction: discord.Interaction,
    reply: Reply,
    *,
    ephemeral: bool = False,
    view: discord.ui.View | None = None,
) -> None:
    """Answer a slash command, whether or not it was deferred (always: never silence)."""
    parts = message_parts(reply, view)
    if interaction.response.is_done():
        await interaction.followup.send(**parts, ephemeral=ephemeral)
    else:
        await interaction.response.send_message(**parts, ephemeral=ephemeral)


async def tell_kindly(interaction: discord.Interaction) -> None:
    """The answer to a command that failed on our side."""
    text = say(language_of(interaction.locale.value), "failed")
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException:
        log.warning("Could not tell the user about the failure either", exc_info=True)


class MoodTree(app_commands.CommandTree):
    """The slash-command tree, with the one error handler for every command."""

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Log a failed command with its traceback and answer the person kindly."""
        name = interaction.command.qualified_name if interaction.command else "?"
        original = getattr(error, "original", error)
        log.error("Discord command /%s failed", name, exc_info=original)
        await tell_kindly(interaction)


# --- cogs -----------------------------------------------------------------------------------------


class Selfies(commands.Cog):
    """/mood, and images sent in DMs or with a mention of the bot."""

    def __init__(self, bot: MoodBot, service: MoodService) -> None:
        self.bot = bot
        self.service = service

    @app_commands.command(description=COMMANDS["en"]["mood"])
    @app_commands.describe(image="A selfie: JPEG, PNG, WebP, GIF or BMP")
    async def mood(self, interaction: discord.Interaction, image: discord.Attachment) -> None:
        """Read the mood on a selfie."""
        with self.bot.in_flight.track():
            await interaction.response.defer(thinking=True)
            who = interaction_sender(interaction)
            reply = await self.service.analyze_selfie(who, upload_of(image))
            await answer(interaction, reply, view=self._buttons(reply, interaction.user, who))

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """An image in a DM, or posted with a mention of me."""
        if message.author.bot or not self._addressed(message):
            return
        with self.bot.in_flight.track():
            who = message_sender(message)
            attachment = first_image(message.attachments)
            if attachment is None:
                await self._reply(message, await self.service.hint(who))
                return
            async with message.channel.typing():
                reply = await self.service.analyze_selfie(who, upload_of(attachment))
            await self._reply(message, reply, self._buttons(reply, message.author, who))

    def _buttons(
        self, reply: Reply, owner: discord.abc.User, who: Sender
    ) -> discord.ui.View | None:
        """The music links and "Not quite?" buttons of a selfie answer (None: links only)."""
        if reply.correction is None:
            return None
        return correction_view(reply, owner.id, who.language)

    def _addressed(self, message: discord.Message) -> bool:
        """A DM, or a message that mentions me directly."""
        # Only a direct mention counts: @everyone and role mentions are not for us.
        me = self.bot.user
        return message.guild is None or (me is not None and me in message.mentions)

    async def _reply(
        self, message: discord.Message, reply: Reply, view: discord.ui.View | None = None
    ) -> None:
        if not reply.mute:
            await message.reply(**message_parts(reply, view), mention_author=False)


# --- "Not quite?" --------------------------------------------------------------------------------
# Dynamic items: their state lives in the custom_id, so buttons keep working after a restart.
# The owner's id in it only words the refusal; the core's signed ref is what grants a correction.

_REF = r"[0-9a-z]{1,12}\.[0-9a-z]{1,12}\.[A-Za-z0-9_-]{1,16}"


def correction_view(reply: Reply, owner: int, lang: str) -> discord.ui.View:
    """Music links, then the likeliest other moods as buttons and every mood in a menu."""
    offer = reply.correction
    assert offer is not None, "only answers with a correction offer get these buttons"
    view = add_links(discord.ui.View(timeout=None), reply.links[:LINK_BUTTONS])
    for emotion in offer.suggestions:
        view.add_item(FixButton(offer.ref, emotion, owner, mood_button_label(lang, emotion)))
    view.add_item(FixMenu(offer, owner, lang))
    return view


async def fix_pressed(interaction: discord.Interaction, ref: str, emotion: str, owner: int) -> None:
    """Correct the mood for its owner and edit the answer; anyone else is told whose it is."""
    bot = interaction.client
    assert isinstance(bot, MoodBot)
    try:
        if interaction.user.id != owner:
            lang = language_of(interaction.locale.value)
            text = say(lang, "only_owner_can_fix", name=f"<@{owner}>")
            await interaction.response.send_message(text, ephemeral=True)
            return
        with bot.in_flight.track():
            who = interaction_sender(interaction)
            reply = await bot.service.correct(who, ref, emotion)
            if not reply.ok:
                await interaction.response.send_message(reply.text, ephemeral=True)
                return
            view = correction_view(reply, owner, who.language)
            await interaction.response.edit_message(embed=embed_of(reply), view=view)
    except Exception:
        log.exception("Discord correction button failed")
        await tell_kindly(interaction)


class FixButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=rf"fix:(?P<ref>{_REF}):(?P<emotion>[a-z]{{1,20}}):(?P<owner>[0-9]{{1,20}})",
):
    """One of the likeliest other moods."""

    def __init__(self, ref: str, emotion: str, owner: int, label: str | None = None) -> None:
        custom_id = f"{button_data(ref, emotion)}:{owner}"
        button = discord.ui.Button[Any](
            label=label or emotion, style=discord.ButtonStyle.secondary, custom_id=custom_id, row=3
        )
        super().__init__(button)
        self.ref, self.emotion, self.owner = ref, emotion, owner

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> FixButton:
        return cls(match["ref"], match["emotion"], int(match["owner"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await fix_pressed(interaction, self.ref, self.emotion, self.owner)


class FixMenu(
    discord.ui.DynamicItem[discord.ui.Select[Any]],
    template=rf"fixmenu:(?P<ref>{_REF}):(?P<owner>[0-9]{{1,20}})",
):
    """Every mood, for "something else"."""

    def __init__(self, offer: CorrectionOffer, owner: int, lang: str = "en") -> None:
        options = [
            discord.SelectOption(
                label=emotion_name(lang, emotion), value=emotion, emoji=EMOJI.get(emotion)
            )
            for emotion in offer.choices
        ]
        menu = discord.ui.Select[Any](
            custom_id=f"fixmenu:{offer.ref}:{owner}",
            placeholder=say(lang, "fix_more" if offer.suggestions else "fix_again"),
            options=options,
            row=4,
        )
        super().__init__(menu)
        self.ref, self.owner = offer.ref, owner

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Select[Any], match: re.Match[str]
    ) -> FixMenu:
        offer = CorrectionOffer(match["ref"], "", (), EMOTIONS)
        return cls(offer, int(match["owner"]), language_of(interaction.locale.value))

    async def callback(self, interaction: discord.Interaction) -> None:
        await fix_pressed(interaction, self.ref, self.item.values[0], self.owner)


class History(commands.Cog):
    """/history (only you see it) and /forget (after a confirmation)."""

    def __init__(self, bot: MoodBot, service: MoodService) -> None:
        self.bot = bot
        self.service = service

    @app_commands.command(description=COMMANDS["en"]["history"])
    @app_commands.describe(count="How many recent moods to list")
    async def history(
        self,
        interaction: discord.Interaction,
        count: app_commands.Range[int, 1, MAX_HISTORY] = DEFAULT_HISTORY,
    ) -> None:
        """Your recent moods with a chart, shown only to you."""
        with self.bot.in_flight.track():
            await interaction.response.defer(ephemeral=True, thinking=True)
            reply = await self.service.show_history(interaction_sender(interaction), count)
            await answer(interaction, reply, ephemeral=True)

    @app_commands.command(description=COMMANDS["en"]["forget"])
    async def forget(self, interaction: discord.Interaction) -> None:
        """Ask, with buttons, before deleting everything stored about you."""
        who = interaction_sender(interaction)
        view = ForgetConfirm(self.service, who, self.bot)
        await interaction.response.send_message(
            say(who.language, "forget_confirm"), view=view, ephemeral=True
        )


class ForgetConfirm(discord.ui.View):
    """Yes / Cancel for /forget; only the person who asked can press them."""

    def __init__(self, service: MoodService, who: Sender, bot: MoodBot) -> None:
        super().__init__(timeout=FORGET_TIMEOUT_S)
        self.service = service
        self.who = who
        self.bot = bot
        self.confirm.label = say(who.language, "forget_yes")
        self.cancel.label = say(who.language, "forget_no")

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Let only the person who asked press the buttons."""
        if str(interaction.user.id) == self.who.user_id:
            return True
        text = say(language_of(interaction.locale.value), "not_your_button")
        await interaction.response.send_message(text, ephemeral=True)
        return False

    @discord.ui.button(label="Yes", style=discord.ButtonStyle.danger)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Delete everything."""
        with self.bot.in_flight.track():
            reply = await self.service.forget(self.who)
            if reply.error_code == ErrorCode.RATE_LIMITED:
                await interaction.response.send_message(reply.text, ephemeral=True)
                return
            self.stop()
            await interaction.response.edit_message(content=reply.text, view=None)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        """Keep everything."""
        self.stop()
        text = say(self.who.language, "forget_cancelled")
        await interaction.response.edit_message(content=text, view=None)

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        """Log a failed button with its traceback and answer kindly."""
        log.error("Discord /forget button failed", exc_info=error)
        await tell_kindly(interaction)


class GroupMix(commands.Cog):
    """/groupmix: one playlist for the channel, or for everyone in a group photo."""

    def __init__(self, bot: MoodBot, service: MoodService) -> None:
        self.bot = bot
        self.service = service

    @app_commands.command(description=COMMANDS["en"]["groupmix"])
    @app_commands.describe(image="Optional: a group photo, for everyone in it")
    async def groupmix(
        self, interaction: discord.Interaction, image: discord.Attachment | None = None
    ) -> None:
        """One playlist for this channel's recent moods, or for a group photo."""
        with self.bot.in_flight.track():
            await interaction.response.defer(thinking=True)
            who = interaction_sender(interaction)
            if image is None:
                reply = await self.service.group_mix(who)
            else:
                reply = await self.service.group_photo_mix(who, upload_of(image))
            await answer(interaction, reply)


class Preferences(commands.Cog):
    """/mode, /genre, /help and /privacy: quick personal answers only you see."""

    def __init__(self, bot: MoodBot, service: MoodService) -> None:
        self.bot = bot
        self.service = service

    @app_commands.command(description=COMMANDS["en"]["mode"])
    @app_commands.describe(mode="match your mood, lift it, or calm it")
    async def mode(
        self, interaction: discord.Interaction, mode: Literal["match", "lift", "calm"]
    ) -> None:
        """Choose how music relates to your mood."""
        reply = await self.service.set_mode(interaction_sender(interaction), mode)
        await answer(interaction, reply, ephemeral=True)

    @app_commands.command(description=COMMANDS["en"]["genre"])
    @app_commands.describe(words="For example k-pop, jazz, acoustic or hip hop; off to clear")
    async def genre(
        self, interaction: discord.Interaction, words: app_commands.Range[str, 1, 40]
    ) -> None:
        """Only songs of one genre from now on."""
        reply = await self.service.set_genre(interaction_sender(interaction), words)
        await answer(interaction, reply, ephemeral=True)

    @app_commands.command(name="help", description=COMMANDS["en"]["help"])
    async def help_command(self, interaction: discord.Interaction) -> None:
        """What I can do."""
        await answer(
            interaction, self.service.help(interaction_sender(interaction)), ephemeral=True
        )

    @app_commands.command(description=COMMANDS["en"]["privacy"])
    async def privacy(self, interaction: discord.Interaction) -> None:
        """What I store and how to delete it."""
        reply = self.service.privacy(interaction_sender(interaction))
        await answer(interaction, reply, ephemeral=True)


# --- the bot --------------------------------------------------------------------------------------


class MoodBot(commands.Bot):
    """moodbot on Discord: the cogs above around one shared core."""

    def __init__(
        self,
        service: MoodService,
        *,
        sync_commands: bool = False,
        guild_id: int | None = None,
        intents: discord.Intents | None = None,
        **options: Any,
    ) -> None:
        # moodbot never joins voice: no warnings about missing voice libraries.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents or discord.Intents.default(),
            help_command=None,
            tree_cls=MoodTree,
            **options,
        )
        self.service = service
        self.sync_commands = sync_commands
        self.guild_id = guild_id
        # Counts handlers until their reply is sent, so a shutdown can wait for them.
        self.in_flight = InFlight()

    async def setup_hook(self) -> None:
        """Load one cog per feature, each with the core passed in; publish the commands."""
        for cog in (Selfies, History, GroupMix, Preferences):
            await self.add_cog(cog(self, self.service))
        self.add_dynamic_items(FixButton, FixMenu)
        if self.sync_commands:
            await self._sync()

    async def _sync(self) -> None:
        """Publish the slash commands: to one server (instant) or globally."""
        try:
            if self.guild_id:
                guild = discord.Object(id=self.guild_id)
                self.tree.copy_global_to(guild=guild)
                synced = await self.tree.sync(guild=guild)
            else:
                synced = await self.tree.sync()
        except discord.HTTPException as exc:
            log.error("Could not publish the slash commands: %s", exc)
            return
        where = f"to server {self.guild_id}" if self.guild_id else "globally"
        log.info("Published %d slash commands %s", len(synced), where)

    async def on_message(self, message: discord.Message, /) -> None:
        # No prefix commands: the Selfies cog listens for images, slash commands do the rest.
        return

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        """Log a failed event with its traceback; answer a message kindly."""
        log.exception("Discord event %s failed", event_method)
        message = args[0] if args and isinstance(args[0], discord.Message) else None
        if message is None or message.author.bot:
            return
        try:
            await message.reply(say(message_sender(message).language, "failed"))
        except discord.HTTPException:
            log.warning("Could not tell the user about the failure either", exc_info=True)


class ShardedMoodBot(MoodBot, commands.AutoShardedBot):
    """MoodBot over several gateway shards (discord.py's AutoShardedBot).

    Give each replica its own DISCORD_SHARD_IDS of the same DISCORD_SHARD_COUNT: Discord sends
    each server's events to one shard only, so every message is answered by one replica.
    """


def build_bot(service: MoodService, config: DiscordConfig) -> MoodBot:
    """One MoodBot, auto-sharded when the configuration names shards."""
    options: dict[str, Any] = {"sync_commands": config.sync_commands, "guild_id": config.guild_id}
    if not config.sharded:
        return MoodBot(service, **options)
    shard_ids = list(config.shard_ids) if config.shard_ids is not None else None
    bot = ShardedMoodBot(service, shard_count=config.shard_count, shard_ids=shard_ids, **options)
    log.info("Discord: shards %s of %d", shard_ids or "all", config.shard_count)
    return bot


class DiscordTransport:
    """Runs a `MoodBot` with login/connect inside the shared event loop (not bot.run)."""

    name = "Discord"

    def __init__(self, service: MoodService, config: DiscordConfig) -> None:
        self.config = config
        self.bot = build_bot(service, config)
        self._gateway: asyncio.Task[None] | None = None

    async def start(self) -> str:
        try:
            await self.bot.login(self.config.token)
        except discord.LoginFailure:
            await self.bot.close()
            raise StartupError("Discord refused the bot token (DISCORD_BOT_TOKEN)") from None
        except (discord.HTTPException, aiohttp.ClientError) as exc:
            await self.bot.close()
            raise StartupError(f"Cannot reach Discord: {exc}") from None
        self._gateway = asyncio.create_task(self.bot.connect(), name="discord-gateway")
        ready = asyncio.create_task(self.bot.wait_until_ready())
        done, _ = await asyncio.wait(
            {ready, self._gateway}, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        ready.cancel()
        if self._gateway in done:
            await self.bot.close()
            raise StartupError(f"Discord closed the connection: {self._gateway.exception()}")
        if ready not in done:
            return "connecting (not ready yet)"
        return f"{self.bot.user} in {len(self.bot.guilds)} servers"

    async def stop_intake(self) -> None:
        # Discord has no pause: the core answers new requests "restarting" from now on.
        return

    async def close(self, timeout: float) -> None:
        if not await self.bot.in_flight.wait_idle(timeout):
            log.warning("Discord replies still pending after %.0f s; closing anyway", timeout)
        await self.bot.close()
        if self._gateway:
            await asyncio.gather(self._gateway, return_exceptions=True)

    async def wait_closed(self) -> None:
        assert self._gateway, "start() first"
        # Shielded: whoever stops waiting must not cancel the gateway connection itself.
        await asyncio.shield(self._gateway)
