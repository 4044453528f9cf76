"""Telegram front door (python-telegram-bot 22): long polling, or a webhook when configured.

Selfies arrive as photos, as image files, or as `/mood` in reply to a photo. In groups the bot
answers only what is meant for it (a /mood caption, a mention, a reply to it), so it behaves
the same whether BotFather's privacy mode is on or off. `/history` in a group is sent to the
asker in private and never shown to the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import socket
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import httpx
from aiohttp import web
from telegram import (
    Bot,
    BotCommand,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    MessageEntity,
    PhotoSize,
    Update,
)
from telegram.constants import ChatAction, ChatType, MessageLimit
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import (
    Application,
    BaseHandler,
    BaseRateLimiter,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from bot.core import DownloadFailed, MoodService, Reply, Sender, Upload, history_limit
from bot.correction import MORE, PREFIX, button_data, parse_button
from bot.history import HistoryUnavailable
from bot.history_pg import PostgresHistory
from bot.inbox import InboxItem, TelegramInbox
from bot.settings import TELEGRAM_API, Settings
from bot.texts import COMMANDS, language_of, say
from bot.transports import StartupError, fit, mood_button_label
from ml.errors import ErrorCode, ImageTooLarge
from ml.labels import EMOTIONS

log = logging.getLogger(__name__)

PLATFORM = "telegram"
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]
ACTION_EVERY_S = 4.5  # a chat action shows for about five seconds
DOWNLOAD_TIMEOUT_S = 30.0
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
FORGET = "forget"
BUTTON_CHARS = 60
MOODS_PER_ROW = 3


@dataclass(frozen=True)
class TelegramConfig:
    """Where the Bot API lives and how updates arrive (long polling unless webhook_url)."""

    token: str = field(repr=False)
    base_url: str = TELEGRAM_API
    base_file_url: str = TELEGRAM_API.removesuffix("/bot") + "/file/bot"
    webhook_url: str | None = None
    listen: str = "127.0.0.1"
    port: int = 8443
    secret_token: str | None = field(default=None, repr=False)
    poll_timeout_s: float = 10.0
    read_timeout_s: float = 5.0  # for every call but getUpdates and file downloads
    send_attempts: int = 4
    send_backoff_s: float = 0.5
    max_retry_after_s: float = 60.0
    # With a PostgreSQL history, webhook updates go through the durable inbox (bot/inbox.py);
    # a claimed update whose replica died is handled elsewhere after this many seconds.
    inbox_lease_s: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> TelegramConfig:
        assert settings.telegram_bot_token, "Telegram needs TELEGRAM_BOT_TOKEN"
        secret = settings.telegram_webhook_secret
        return cls(
            token=settings.telegram_bot_token.get_secret_value(),
            base_url=settings.telegram_base_url,
            base_file_url=settings.telegram_file_url,
            webhook_url=settings.telegram_webhook_url,
            listen=settings.telegram_webhook_listen,
            port=settings.telegram_webhook_port,
            secret_token=secret.get_secret_value() if secret else None,
            inbox_lease_s=settings.inbox_lease_s,
        )


# --- small translations between Telegram and the core ---------------------------------------------


def sender_of(update: Update) -> Sender:
    """Who sent this update, and in which chat."""
    user, chat = update.effective_user, update.effective_chat
    assert user and chat, "updates without a user or chat are not routed here"
    request = f"{PLATFORM}:{update.update_id}"
    return Sender(PLATFORM, str(chat.id), str(user.id), language_of(user.language_code), request)


def pick_photo_size(
    sizes: Sequence[PhotoSize], ideal_side: int, max_bytes: int
) -> PhotoSize | None:
    """The smallest size at least `ideal_side` long that fits `max_bytes`, else the largest fit.

    The detector works at `ideal_side`, so bigger sizes only cost download time. None when
    every size declares more than `max_bytes`.
    """
    fitting = sorted(
        (s for s in sizes if not s.file_size or s.file_size <= max_bytes),
        key=lambda s: max(s.width, s.height),
    )
    big_enough = [s for s in fitting if max(s.width, s.height) >= ideal_side]
    if big_enough:
        return big_enough[0]
    return fitting[-1] if fitting else None


def reply_keyboard(reply: Reply, lang: str) -> InlineKeyboardMarkup | None:
    """The music links, then "Not quite?": the likeliest other moods and "something else"."""
    rows = [
        [InlineKeyboardButton(fit(link.label, BUTTON_CHARS), url=link.url)] for link in reply.links
    ]
    offer = reply.correction
    if offer is not None:
        if offer.suggestions:
            rows.append([_mood_button(lang, offer.ref, e) for e in offer.suggestions])
        more = say(lang, "fix_more" if offer.suggestions else "fix_again")
        rows.append([InlineKeyboardButton(more, callback_data=button_data(offer.ref, MORE))])
    return InlineKeyboardMarkup(rows) if rows else None


def every_mood_keyboard(
    keyboard: InlineKeyboardMarkup | None, lang: str, ref: str
) -> InlineKeyboardMarkup:
    """An answer's keyboard with its "Not quite?" rows replaced by every mood."""
    kept = [row for row in keyboard.inline_keyboard if all(b.url for b in row)] if keyboard else []
    moods = [_mood_button(lang, ref, emotion) for emotion in EMOTIONS]
    rows = [moods[i : i + MOODS_PER_ROW] for i in range(0, len(moods), MOODS_PER_ROW)]
    return InlineKeyboardMarkup([*kept, *rows])


def _mood_button(lang: str, ref: str, emotion: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(
        mood_button_label(lang, emotion), callback_data=button_data(ref, emotion)
    )


def _commands_in(message: Message) -> list[str]:
    """Bot commands in a text or caption, lower-case, with their @username kept."""
    types = [MessageEntity.BOT_COMMAND]
    found = {**message.parse_entities(types), **message.parse_caption_entities(types)}
    return [text.lower() for text in found.values()]


def _is_command(text: str, name: str, username: str) -> bool:
    command, _, target = text.partition("@")
    return command == f"/{name}" and target in ("", username.lower())


def caption_command(message: Message, username: str) -> str | None:
    """'mood' or 'groupmix' when the caption carries that command for this bot."""
    for text in _commands_in(message):
        for name in ("mood", "groupmix"):
            if _is_command(text, name, username):
                return name
    return None


def mentions_bot(message: Message) -> bool:
    """Whether the text or caption mentions this bot by @username."""
    types = [MessageEntity.MENTION]
    found = {**message.parse_entities(types), **message.parse_caption_entities(types)}
    username = (message.get_bot().username or "").lower()
    return any(text.lower() == f"@{username}" for text in found.values())


class MentionsBot(filters.MessageFilter):
    """Messages that mention the bot by @username."""

    def filter(self, message: Message) -> bool:
        return mentions_bot(message)


class AddressedToBot(filters.MessageFilter):
    """Private chats, and group messages meant for the bot: /mood, a mention, a reply to it."""

    def filter(self, message: Message) -> bool:
        if message.chat.type == ChatType.PRIVATE or mentions_bot(message):
            return True
        bot = message.get_bot()
        replied = message.reply_to_message
        if replied and replied.from_user and replied.from_user.id == bot.id:
            return True
        return caption_command(message, bot.username or "") is not None


@contextlib.asynccontextmanager
async def chat_action(message: Message, action: str) -> AsyncIterator[None]:
    """Show "typing…" (or another action) in the chat until the enclosed work is done."""

    async def keep_showing() -> None:
        while True:
            try:
                await message.reply_chat_action(action)
            except TelegramError as exc:
                log.debug("Chat action failed: %s", exc)
            await asyncio.sleep(ACTION_EVERY_S)

    task = asyncio.create_task(keep_showing())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- sending with retries -------------------------------------------------------------------------

# The calls that deliver an answer to a person. Chat actions are cosmetic and repeat on their
# own; getFile failures are answered "send it again"; getUpdates is retried by the updater.
ANSWERS = frozenset(
    {"sendMessage", "sendPhoto", "sendDocument", "editMessageText", "answerCallbackQuery"}
)
# httpx failures that happen before the request leaves this machine: retrying cannot duplicate.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def retry_after_s(exc: RetryAfter) -> float:
    """Seconds Telegram asks us to wait (PTB 22 warns about the int form; either is fine)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def surely_undelivered(exc: BaseException) -> bool:
    """Whether a failed send certainly did not reach the person, so sending again is safe.

    - 429 flood control (RetryAfter) and 5xx answers: Telegram says it did not do it.
    - Connection refused or a connect/pool timeout: the request never left.
    - A read or write timeout, or a connection dropped mid-answer: the message may well have
      been delivered (Telegram got it, we lost the answer). Sending it again would answer
      twice, so these are not retried: at most once beats twice for a chat reply.
    - 400/403 and other refusals: the same request would be refused again.
    """
    if isinstance(exc, RetryAfter):
        return True
    if isinstance(exc, TimedOut):
        return isinstance(exc.__cause__, _NOT_SENT)
    if type(exc) is NetworkError:  # BadRequest and TimedOut subclass it; they are not this
        # PTB raises a bare NetworkError for a 5xx answer and chains httpx errors to it.
        return exc.__cause__ is None or isinstance(exc.__cause__, _NOT_SENT)
    return False


class RetryingSender(BaseRateLimiter[None]):
    """Sends answers again after flood control (429), 5xx and connection failures.

    python-telegram-bot passes every Bot API call but getUpdates through its rate limiter,
    which makes it the one place to retry sends. Waits honour `retry_after`, else back off
    exponentially with jitter; a bounded number of attempts, then a log line and the error.
    """

    def __init__(
        self,
        *,
        attempts: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        max_retry_after_s: float = 60.0,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts!r}")
        self.attempts = attempts
        self.max_retry_after_s = max_retry_after_s
        self._backoff = wait_exponential_jitter(
            multiplier=backoff_s, max=max_backoff_s, jitter=backoff_s
        )

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        """Make the call; for answers, again while it surely did not arrive (bounded)."""
        if endpoint not in ANSWERS:
            return await callback(*args, **kwargs)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=self._wait,
            retry=retry_if_exception(self._worth_retrying),
            before_sleep=partial(self._log_retry, endpoint, data.get("chat_id")),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await callback(*args, **kwargs)
        except TelegramError as exc:
            self._log_failure(endpoint, data.get("chat_id"), exc, retrying)
            raise
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    def _worth_retrying(self, exc: BaseException) -> bool:
        if isinstance(exc, RetryAfter) and retry_after_s(exc) > self.max_retry_after_s:
            return False  # a wait this long would leave the person without any answer
        return surely_undelivered(exc)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryAfter):
            # Telegram counts whole seconds; a little more avoids landing just before the end.
            return retry_after_s(exc) + 0.1
        return self._backoff(state)

    @staticmethod
    def _log_retry(endpoint: str, chat_id: object, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "Telegram %s to chat %s failed (%s); attempt %d, retrying in %.1f s",
            endpoint,
            chat_id,
            exc,
            state.attempt_number,
            wait,
        )

    def _log_failure(
        self, endpoint: str, chat_id: object, exc: TelegramError, retrying: AsyncRetrying
    ) -> None:
        attempts = retrying.statistics.get("attempt_number", 1)
        if isinstance(exc, TimedOut) and not surely_undelivered(exc):
            log.warning(
                "Telegram %s to chat %s timed out; it may have been delivered, so it is not"
                " sent again",
                endpoint,
                chat_id,
            )
        elif surely_undelivered(exc):
            log.error(
                "Giving up on Telegram %s to chat %s after %d attempt(s): %s",
                endpoint,
                chat_id,
                attempts,
                exc,
            )


# --- handlers -------------------------------------------------------------------------------------


class TelegramHandlers:
    """Every route of the Telegram bot: each turns one update into one core call."""

    def __init__(self, service: MoodService) -> None:
        self.service = service

    def routes(self) -> list[BaseHandler]:
        """The handlers in the order they are tried."""
        private = filters.ChatType.PRIVATE
        addressed = AddressedToBot()
        return [
            CommandHandler("start", self.start),
            CommandHandler("help", self.help),
            CommandHandler("privacy", self.privacy),
            CommandHandler("mood", self.mood),
            CommandHandler("history", self.history),
            CommandHandler("groupmix", self.groupmix),
            CommandHandler("forget", self.forget),
            CommandHandler("mode", self.mode),
            CommandHandler("genre", self.genre),
            CallbackQueryHandler(self.forget_answer, pattern=rf"^{FORGET}:"),
            CallbackQueryHandler(self.fix_answer, pattern=rf"^{PREFIX}:"),
            MessageHandler(filters.PHOTO & addressed, self.photo),
            MessageHandler(filters.Document.ALL & addressed, self.document),
            MessageHandler(filters.COMMAND & private, self.unknown),
            # Words get a hint only where they are surely for me: not every reply in a group.
            MessageHandler(filters.TEXT & (private | MentionsBot()), self.text),
        ]

    # --- selfies ----------------------------------------------------------------------------------

    async def photo(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Read the mood on a photo (a selfie in private; in groups one meant for me)."""
        await self._analyze_message(update, context)

    async def document(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Read the mood on an image sent as a file; other files get a clear refusal."""
        await self._analyze_message(update, context)

    async def mood(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Read the mood on the photo this command replies to."""
        message = _message(update)
        target = message.reply_to_message
        upload = self._upload_of(target, context.bot) if target else None
        if target is None or upload is None:
            await message.reply_text(say(sender_of(update).language, "mood_needs_photo"))
            return
        # Someone else's photo is answered but stored in nobody's history.
        author = str(target.from_user.id) if target.from_user else None
        await self._analyze(update, upload, remember=author == sender_of(update).user_id)

    async def _analyze_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = _message(update)
        upload = self._upload_of(message, context.bot)
        if upload is None:
            return
        command = caption_command(message, context.bot.username or "")
        await self._analyze(update, upload, group_photo=command == "groupmix")

    async def _analyze(
        self, update: Update, upload: Upload, *, remember: bool = True, group_photo: bool = False
    ) -> None:
        message, who = _message(update), sender_of(update)
        async with chat_action(message, ChatAction.TYPING):
            if group_photo:
                reply = await self.service.group_photo_mix(who, upload)
            else:
                reply = await self.service.analyze_selfie(who, upload, remember=remember)
        await self._reply(message, reply)

    def _upload_of(self, message: Message, bot: Bot) -> Upload | None:
        """The photo or file of a message, still on Telegram's servers."""
        if message.photo:
            size = pick_photo_size(
                message.photo, self.service.ideal_image_side, self.service.max_image_bytes
            )
            # No size fits: offer the smallest, so the core refuses it by its declared size.
            size = size or min(message.photo, key=lambda s: s.file_size or 0)
            fetch = partial(self._download, bot, size.file_id)
            return Upload(fetch=fetch, size=size.file_size, mime_type="image/jpeg")
        if message.document:
            doc = message.document
            fetch = partial(self._download, bot, doc.file_id)
            return Upload(fetch=fetch, size=doc.file_size, mime_type=doc.mime_type)
        return None

    async def _download(self, bot: Bot, file_id: str) -> bytes:
        try:
            file = await bot.get_file(file_id)
            return bytes(await file.download_as_bytearray(read_timeout=DOWNLOAD_TIMEOUT_S))
        except BadRequest as exc:
            if "too big" in exc.message.lower():
                # The public Bot API hands out files up to 20 MB; a local server lifts that.
                raise ImageTooLarge("Telegram does not hand out files this large.") from exc
            raise DownloadFailed(exc.message) from exc
        except TelegramError as exc:
            raise DownloadFailed(str(exc)) from exc

    # --- history and group mix --------------------------------------------------------------------

    async def history(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Your recent moods as text and a chart; in a group, sent to you privately."""
        message, who = _message(update), sender_of(update)
        limit = history_limit(context.args[0] if context.args else None)
        async with chat_action(message, ChatAction.UPLOAD_PHOTO):
            reply = await self.service.show_history(who, limit)
        if message.chat.type == ChatType.PRIVATE or reply.error_code in (
            ErrorCode.RATE_LIMITED,
            ErrorCode.CLOSED,
        ):
            await self._reply(message, reply)
        elif await self._send_privately(context.bot, who, reply):
            await message.reply_text(say(who.language, "history_sent_privately"))
        else:
            url = f"https://t.me/{context.bot.username}?start=history"
            button = InlineKeyboardButton(say(who.language, "open_private_chat"), url=url)
            await message.reply_text(
                say(who.language, "history_private_only"),
                reply_markup=InlineKeyboardMarkup.from_button(button),
            )

    async def groupmix(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """One playlist for this chat, or for everyone in the photo this replies to."""
        message = _message(update)
        target = message.reply_to_message
        upload = self._upload_of(target, context.bot) if target else None
        if upload is not None:
            await self._analyze(update, upload, group_photo=True)
            return
        async with chat_action(message, ChatAction.TYPING):
            reply = await self.service.group_mix(sender_of(update))
        await self._reply(message, reply)

    # --- forget -----------------------------------------------------------------------------------

    async def forget(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Ask, with buttons, before deleting everything stored about you."""
        who = sender_of(update)
        buttons = [
            InlineKeyboardButton(
                say(who.language, f"forget_{choice}"),
                callback_data=f"{FORGET}:{choice}:{who.user_id}",
            )
            for choice in ("yes", "no")
        ]
        await _message(update).reply_text(
            say(who.language, "forget_confirm"), reply_markup=InlineKeyboardMarkup([buttons])
        )

    async def forget_answer(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Delete (or keep) everything, when the person who asked presses a button."""
        query = update.callback_query
        assert query and query.data
        who = sender_of(update)
        _, choice, owner = [*query.data.split(":"), "", ""][:3]
        if owner != who.user_id:
            await query.answer(say(who.language, "not_your_button"), show_alert=True)
            return
        if choice != "yes":
            await query.answer()
            await query.edit_message_text(say(who.language, "forget_cancelled"))
            return
        reply = await self.service.forget(who)
        if reply.error_code == ErrorCode.RATE_LIMITED:
            await query.answer(reply.text, show_alert=True)  # keep the buttons for later
            return
        await query.answer()
        await query.edit_message_text(reply.text)

    # --- "Not quite?" -----------------------------------------------------------------------------

    async def fix_answer(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A "Not quite?" button: show every mood, or correct the mood and edit the answer."""
        query = update.callback_query
        assert query and query.data is not None
        who = sender_of(update)
        parsed = parse_button(query.data)
        if parsed is None or not isinstance(query.message, Message):
            log.info("Ignored a malformed correction button on Telegram")
            await query.answer()  # a silent ack: nothing for a tampered client to learn
            return
        ref, choice = parsed
        if choice == MORE:
            await self._show_every_mood(query, query.message, who, ref)
            return
        reply = await self.service.correct(who, ref, choice)
        if reply.mute:
            await query.answer()
        elif not reply.ok:
            await query.answer(reply.text, show_alert=True)
        else:
            await query.answer()
            text = fit(reply.text, MessageLimit.MAX_TEXT_LENGTH)
            await query.message.edit_text(text, reply_markup=reply_keyboard(reply, who.language))

    async def _show_every_mood(
        self, query: CallbackQuery, message: Message, who: Sender, ref: str
    ) -> None:
        """Swap the suggestions under an answer for every mood (for its owner only)."""
        if not self.service.can_correct(who, ref):
            log.info("Refused a correction list on Telegram: invalid or foreign button")
            await query.answer(say(who.language, "correction_invalid"), show_alert=True)
            return
        await query.answer()
        markup = every_mood_keyboard(message.reply_markup, who.language, ref)
        await message.edit_reply_markup(markup)

    # --- preferences and texts --------------------------------------------------------------------

    async def mode(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/mode match|lift|calm."""
        reply = await self.service.set_mode(sender_of(update), " ".join(context.args or []))
        await self._reply(_message(update), reply)

    async def genre(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/genre <words>, or /genre off."""
        reply = await self.service.set_genre(sender_of(update), " ".join(context.args or []))
        await self._reply(_message(update), reply)

    async def start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Say what I do and what I store; the deep link /start history shows the history."""
        if context.args and context.args[0] == "history":
            context.args = []
            await self.history(update, context)
            return
        await self._reply(_message(update), self.service.welcome(sender_of(update)))

    async def help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """List the commands."""
        await self._reply(_message(update), self.service.help(sender_of(update)))

    async def privacy(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Say exactly what is stored and how to delete it."""
        await self._reply(_message(update), self.service.privacy(sender_of(update)))

    async def unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A command I don't have (private chats only: in groups it may be another bot's)."""
        await _message(update).reply_text(say(sender_of(update).language, "unknown_command"))

    async def text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Words without a photo: point to what I can do."""
        await self._reply(_message(update), await self.service.hint(sender_of(update)))

    # --- replies and errors -----------------------------------------------------------------------

    async def _reply(self, message: Message, reply: Reply) -> None:
        """Answer in the message's chat: text with music buttons, then the chart if any."""
        if reply.mute:
            return
        text = fit(reply.text, MessageLimit.MAX_TEXT_LENGTH)
        user = message.from_user
        lang = language_of(user.language_code if user else None)
        await message.reply_text(text, reply_markup=reply_keyboard(reply, lang))
        if reply.chart_png:
            await message.reply_photo(reply.chart_png)

    async def _send_privately(self, bot: Bot, who: Sender, reply: Reply) -> bool:
        """Send a reply to the person's private chat; False when they never opened one."""
        text = fit(reply.text, MessageLimit.MAX_TEXT_LENGTH)
        user_id = int(who.user_id)
        try:
            markup = reply_keyboard(reply, who.language)
            await bot.send_message(user_id, text, reply_markup=markup)
        except (Forbidden, BadRequest) as exc:
            # Bots cannot open a private chat: the person has to start one first.
            if isinstance(exc, BadRequest) and "chat not found" not in exc.message.lower():
                raise
            log.info("No private chat to send a history to: %s", exc.message)
            return False
        if reply.chart_png:
            await bot.send_photo(user_id, reply.chart_png)
        return True

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Log a failed update with its traceback and tell the person something kind."""
        if isinstance(context.error, TimedOut) and not surely_undelivered(context.error):
            # The answer may have arrived (see surely_undelivered): a "something went wrong"
            # after it would be a second, wrong answer. RetryingSender logged it already.
            log.warning("Telegram update ended with a timed-out answer: %s", context.error)
            return
        log.error("Telegram update failed", exc_info=context.error)
        if not isinstance(update, Update) or update.effective_chat is None:
            return  # a polling or network error: nobody is waiting for an answer
        user = update.effective_user
        text = say(language_of(user.language_code if user else None), "failed")
        try:
            if update.callback_query:
                await update.callback_query.answer(text, show_alert=True)
            else:
                await context.bot.send_message(update.effective_chat.id, text)
        except TelegramError:
            log.warning("Could not tell the user about the failure either", exc_info=True)


INBOX_CONCURRENCY = 32  # updates one replica handles at once from the inbox
INBOX_POLL_S = 0.5  # how often a replica looks for updates other replicas left behind
INBOX_RETRY_S = 2.0  # after the database failed
INBOX_PURGE_EVERY_S = 3600.0
INBOX_MAX_ATTEMPTS = 3  # an update whose handler died this often is dropped, not retried


def _inbox_for(service: MoodService, config: TelegramConfig) -> TelegramInbox | None:
    """The durable inbox: in webhook mode with a PostgreSQL history, else None."""
    if not config.webhook_url or not isinstance(service.history, PostgresHistory):
        return None
    owner = f"{socket.gethostname()}:{os.getpid()}"
    return TelegramInbox(service.history, owner=owner, lease_s=config.inbox_lease_s)


def _message(update: Update) -> Message:
    message = update.effective_message
    assert message is not None, "only message updates are routed here"
    return message


# --- lifecycle ------------------------------------------------------------------------------------


class TelegramTransport:
    """The Telegram bot: one `Application`, started and stopped without run_polling."""

    name = "Telegram"

    def __init__(self, service: MoodService, config: TelegramConfig) -> None:
        self.config = config
        self.handlers = TelegramHandlers(service)
        builder = (
            Application.builder()
            .token(config.token)
            .base_url(config.base_url)
            .base_file_url(config.base_file_url)
            # One update per task: a slow analysis must not hold up anybody else.
            .concurrent_updates(True)
            .get_updates_read_timeout(config.poll_timeout_s + 10)
            .read_timeout(config.read_timeout_s)
            .rate_limiter(
                RetryingSender(
                    attempts=config.send_attempts,
                    backoff_s=config.send_backoff_s,
                    max_retry_after_s=config.max_retry_after_s,
                )
            )
        )
        if config.webhook_url:
            builder = builder.updater(None)  # our own aiohttp endpoint feeds update_queue
        self.application = builder.build()
        self.application.add_handlers(self.handlers.routes())
        self.application.add_error_handler(self.handlers.on_error)
        self._secret = config.secret_token or secrets.token_urlsafe(32)
        self._web: web.AppRunner | None = None
        self._stopped = asyncio.Event()
        self.service = service
        self.inbox = _inbox_for(service, config)
        self._inbox_worker: asyncio.Task[None] | None = None
        self._inbox_wake = asyncio.Event()
        self._handling: set[asyncio.Task[None]] = set()

    @property
    def webhook_address(self) -> tuple[str, int] | None:
        """Where the webhook endpoint listens, once started (the port may have been 0)."""
        if self._web is None or not self._web.addresses:
            return None
        host, port = self._web.addresses[0][:2]
        return host, port

    async def start(self) -> str:
        app = self.application
        try:
            await app.initialize()
        except InvalidToken:
            raise StartupError("Telegram refused the bot token (TELEGRAM_BOT_TOKEN)") from None
        except NetworkError as exc:
            raise StartupError(f"Cannot reach the Telegram Bot API: {exc}") from None
        try:
            await self._publish_commands()
            await app.start()
            mode = await self._start_updates()
        except BaseException:
            await self._shutdown()
            raise
        return f"@{app.bot.username} ({mode})"

    async def _start_updates(self) -> str:
        if not self.config.webhook_url:
            assert self.application.updater
            await self.application.updater.start_polling(
                timeout=int(self.config.poll_timeout_s), allowed_updates=ALLOWED_UPDATES
            )
            return "long polling"
        await self._start_webhook()
        return f"webhook {self.config.webhook_url}"

    async def _start_webhook(self) -> None:
        """Listen for Telegram's POSTs ourselves (PTB's own server needs tornado)."""
        assert self.config.webhook_url
        path = urlsplit(self.config.webhook_url).path or "/"
        server = web.Application()
        server.router.add_post(path, self._receive)
        self._web = web.AppRunner(server, access_log=None)
        await self._web.setup()
        await web.TCPSite(self._web, self.config.listen, self.config.port).start()
        if self.inbox is not None:
            self._inbox_worker = asyncio.create_task(self._work_inbox(), name="telegram-inbox")
        await self.application.bot.set_webhook(
            self.config.webhook_url, secret_token=self._secret, allowed_updates=ALLOWED_UPDATES
        )

    async def _receive(self, request: web.Request) -> web.Response:
        """One update from Telegram, checked against the secret token, then stored or queued.

        With the inbox, the 200 goes back once the update is in the database. When the
        database cannot take it, the update is handled in this process as without an inbox:
        answered at once (politely: its history cannot be read or written either), but lost
        if this replica dies before answering.
        """
        token = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(token.encode(), self._secret.encode()):
            return web.Response(status=403)
        try:
            payload = await request.json()
            update = Update.de_json(payload, self.application.bot)
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400)
        if self.inbox is not None:
            try:
                await self.inbox.put(payload)
            except HistoryUnavailable:
                log.warning("Inbox unavailable: update %d handled in memory", update.update_id)
            else:
                self._inbox_wake.set()
                return web.Response()
        await self.application.update_queue.put(update)
        return web.Response()

    # --- the durable inbox (bot/inbox.py) ---------------------------------------------------------

    async def _work_inbox(self) -> None:
        """Claim pending updates (this replica's and orphans of dead ones) and handle them."""
        assert self.inbox is not None
        next_purge = 0.0
        while True:
            self._inbox_wake.clear()
            free = INBOX_CONCURRENCY - len(self._handling)
            try:
                items = await self.inbox.claim(free) if free > 0 else []
                if asyncio.get_running_loop().time() >= next_purge:
                    await self.inbox.purge()
                    next_purge = asyncio.get_running_loop().time() + INBOX_PURGE_EVERY_S
            except HistoryUnavailable:
                # Logged by the history; look again a little later.
                await asyncio.sleep(INBOX_RETRY_S)
                continue
            for item in items:
                task = asyncio.create_task(self._handle_stored(item))
                self._handling.add(task)
                task.add_done_callback(self._handled)
            if not items:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(INBOX_POLL_S):
                        await self._inbox_wake.wait()

    def _handled(self, task: asyncio.Task[None]) -> None:
        self._handling.discard(task)
        self._inbox_wake.set()  # a slot is free

    async def _handle_stored(self, item: InboxItem) -> None:
        assert self.inbox is not None
        try:
            if not self.service.accepting:  # shutting down: another replica answers it
                await self.inbox.release(item.update_id)
                return
            if item.attempts <= INBOX_MAX_ATTEMPTS:
                update = Update.de_json(item.payload, self.application.bot)
                await self.application.process_update(update)
            else:
                log.error("Telegram update %d failed %d times; dropped", item.update_id,
                          item.attempts - 1)  # fmt: skip
            await self.inbox.done(item.update_id)
        except HistoryUnavailable:
            pass  # not marked done: handled again once the lease runs out
        except Exception:
            log.exception("Telegram update %d could not be handled", item.update_id)

    async def _publish_commands(self) -> None:
        """Fill the command menu, in English and in Korean."""
        bot = self.application.bot
        try:
            for lang, code in (("en", None), ("ko", "ko")):
                commands = [BotCommand(name, text) for name, text in COMMANDS[lang].items()]
                await bot.set_my_commands(commands, language_code=code)
        except TelegramError as exc:
            log.warning("Could not set the Telegram command menu: %s", exc)

    async def stop_intake(self) -> None:
        updater = self.application.updater
        if updater and updater.running:
            await updater.stop()
        if self._web is not None:
            await self._web.cleanup()
            self._web = None
        if self._inbox_worker is not None:
            # No new claims; the updates being handled finish in close().
            self._inbox_worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._inbox_worker
            self._inbox_worker = None

    async def close(self, timeout: float) -> None:
        if self._handling:
            # Unfinished ones stay claimed: another replica handles them when the lease ends.
            await asyncio.wait(set(self._handling), timeout=timeout)
        if self.application.running:
            try:
                # Application.stop() handles the updates already fetched, then returns.
                await asyncio.wait_for(self.application.stop(), timeout)
            except TimeoutError:
                log.warning("Telegram updates still running after %.0f s; closing anyway", timeout)
        await self._shutdown()

    async def _shutdown(self) -> None:
        await self.stop_intake()
        try:
            await self.application.shutdown()
        except RuntimeError as exc:  # still running after a timed-out stop
            log.warning("Telegram did not shut down cleanly: %s", exc)
        self._stopped.set()

    async def wait_closed(self) -> None:
        # Polling retries network errors forever: Telegram only stops when told to.
        await self._stopped.wait()
