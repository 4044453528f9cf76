"""A fake Telegram Bot API server on 127.0.0.1, for offline tests of the real `Application`.

    async with FakeTelegram() as fake:
        builder.token(fake.token).base_url(fake.base_url).base_file_url(fake.base_file_url)
        ...
        fake.send_photo(alice, fake.private(alice), jpeg_bytes)
        call = await fake.wait_for("sendMessage", chat_id=alice.id)

It answers getMe, long-polls getUpdates (an offset confirms what came before), serves getFile
and the file downloads, records every call the bot makes (`fake.calls`), keeps the messages the
bot sent so that users can reply to them, and fails chosen methods with Telegram's error JSON
(`fake.fail(...)`, `fake.unreachable_users`), or carries out a call but answers too late
(`fake.stall(...)`: a read timeout after delivery). Like the real server it answers an unknown
token with 404 (python-telegram-bot reads that as InvalidToken) and refuses getFile above 20 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from PIL import Image

if TYPE_CHECKING:
    from bot.core import MoodService
    from bot.transports.telegram_bot import TelegramConfig, TelegramTransport

TOKEN = "123456789:AAF-fake-token-for-tests-only_x1"
BOT_ID = 123456789
BOT_USERNAME = "moodbot_test_bot"
DOWNLOAD_LIMIT = 20 * 1024 * 1024  # the public Bot API's getFile limit

# Form fields python-telegram-bot sends JSON-encoded, and fields that are numbers.
_JSON_FIELDS = {
    "reply_markup",
    "reply_parameters",
    "allowed_updates",
    "commands",
    "entities",
    "caption_entities",
    "link_preview_options",
    "scope",
}
_INT_FIELDS = {"chat_id", "message_id", "offset", "timeout", "limit", "user_id"}
_SENDS = {"sendMessage": "text", "sendPhoto": "photo", "sendDocument": "document"}
_TRUE_METHODS = {
    "sendChatAction",
    "answerCallbackQuery",
    "setMyCommands",
    "deleteMyCommands",
    "setWebhook",
    "deleteWebhook",
    "close",
    "logOut",
    "deleteMessage",
}


@dataclass(frozen=True)
class TgUser:
    """A Telegram user who talks to the bot."""

    id: int
    first_name: str
    language_code: str | None = "en"

    def to_dict(self) -> dict[str, Any]:
        user = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.language_code:
            user["language_code"] = self.language_code
        return user


@dataclass(frozen=True)
class TgChat:
    """A private chat (id = the user's id) or a group (negative id)."""

    id: int
    type: str = "private"
    title: str | None = None

    def to_dict(self) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.title:
            chat["title"] = self.title
        return chat


@dataclass
class Call:
    """One Bot API call the bot made, with its decoded parameters and uploaded files."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    result: Any = None
    seen: bool = False
    at: float = field(default_factory=time.monotonic)  # when the fake received it
    failed: bool = False  # answered with an error (the bot's message was not delivered)

    @property
    def delivered(self) -> bool:
        """Whether the call took effect (a message was sent), even if its answer came late."""
        return not self.failed

    @property
    def chat_id(self) -> int | None:
        return self.params.get("chat_id")

    @property
    def text(self) -> str:
        return self.params.get("text") or self.params.get("caption") or ""

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """Every inline-keyboard button, row by row."""
        markup = self.params.get("reply_markup") or {}
        return [button for row in markup.get("inline_keyboard", []) for button in row]

    @property
    def link_buttons(self) -> list[dict[str, Any]]:
        """The buttons that open a URL (the music links)."""
        return [button for button in self.buttons if "url" in button]

    @property
    def callback_buttons(self) -> list[dict[str, Any]]:
        """The buttons that send callback data back to the bot."""
        return [button for button in self.buttons if "callback_data" in button]

    @property
    def reply_to(self) -> int | None:
        return (self.params.get("reply_parameters") or {}).get("message_id")


@dataclass
class _File:
    data: bytes
    unique_id: str
    path: str
    declared_size: int


class FakeTelegram:
    """A Bot API server for one bot, on 127.0.0.1 with a free port."""

    def __init__(self, *, token: str = TOKEN, bot_username: str = BOT_USERNAME) -> None:
        self.token = token
        self.bot = {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "moodbot",
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.calls: list[Call] = []
        self.downloads: list[str] = []
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.unreachable_users: set[int] = set()  # never started a private chat with the bot
        self._failures: dict[str, list[tuple[int, str, int | None]]] = {}
        self._stalls: dict[str, list[float]] = {}
        self._resized: dict[tuple[int, int], tuple[bytes, int, int]] = {}
        self._files: dict[str, _File] = {}
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids: dict[int, Iterator[int]] = {}
        self._file_ids = itertools.count(1)
        self._arrived = asyncio.Event()
        self._call_made = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> FakeTelegram:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        self._closing = True
        self._wake_pollers()
        if self._runner:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeTelegram:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    def bot_config(self, **overrides: Any) -> TelegramConfig:
        """Settings that point the real bot at this fake, with short long-polls."""
        from bot.transports.telegram_bot import TelegramConfig

        settings: dict[str, Any] = {
            "token": self.token,
            "base_url": self.base_url,
            "base_file_url": self.base_file_url,
            "poll_timeout_s": 2,
        }
        return TelegramConfig(**(settings | overrides))

    # --- people and chats -----------------------------------------------------------------------

    @staticmethod
    def private(user: TgUser) -> TgChat:
        return TgChat(user.id, "private")

    @staticmethod
    def group(chat_id: int = -1001, title: str = "Friends") -> TgChat:
        return TgChat(chat_id, "supergroup", title)

    # --- what users do --------------------------------------------------------------------------

    def send_text(
        self, user: TgUser, chat: TgChat, text: str, *, reply_to: dict | None = None
    ) -> dict[str, Any]:
        """A user sends text (commands and @mentions get their entities)."""
        message = self._new_message(user, chat, reply_to=reply_to)
        message["text"] = text
        if entities := self._entities(text):
            message["entities"] = entities
        return self._deliver(message)

    def send_photo(
        self,
        user: TgUser,
        chat: TgChat,
        image: bytes,
        *,
        caption: str | None = None,
        sides: tuple[int, ...] = (90, 320, 800),
        declared_sizes: dict[int, int] | None = None,
        reply_to: dict | None = None,
    ) -> dict[str, Any]:
        """A user sends a photo; Telegram keeps it in several sizes (long side in `sides`)."""
        sizes = []
        for side in sides:
            data, width, height = self._resize(image, side)
            declared = (declared_sizes or {}).get(side)
            file = self.add_file(data, "photos", ".jpg", declared)
            sizes.append({**file, "width": width, "height": height})
        message = self._new_message(user, chat, reply_to=reply_to)
        message["photo"] = sizes
        self._add_caption(message, caption)
        return self._deliver(message)

    def _resize(self, image: bytes, side: int) -> tuple[bytes, int, int]:
        """The JPEG Telegram would keep at this long side; cached, so load tests stay cheap."""
        key = (hash(image), side)
        if key not in self._resized:
            original = Image.open(io.BytesIO(image)).convert("RGB")
            scale = side / max(original.size)
            copy = original.resize((round(original.width * scale), round(original.height * scale)))
            buffer = io.BytesIO()
            copy.save(buffer, "JPEG", quality=90)
            self._resized[key] = (buffer.getvalue(), copy.width, copy.height)
        return self._resized[key]

    def send_document(
        self,
        user: TgUser,
        chat: TgChat,
        data: bytes,
        *,
        file_name: str,
        mime_type: str | None,
        declared_size: int | None = None,
        caption: str | None = None,
    ) -> dict[str, Any]:
        """A user sends a file ("send as file" keeps a photo uncompressed)."""
        file = self.add_file(data, "documents", "." + file_name.rpartition(".")[2], declared_size)
        document = {**file, "file_name": file_name}
        if mime_type:
            document["mime_type"] = mime_type
        message = self._new_message(user, chat)
        message["document"] = document
        self._add_caption(message, caption)
        return self._deliver(message)

    def press_button(self, user: TgUser, message: dict[str, Any], data: str) -> dict[str, Any]:
        """A user presses an inline-keyboard button of a message the bot sent."""
        query = {
            "id": str(next(self._update_ids) + 10_000),
            "from": user.to_dict(),
            "message": message,
            "chat_instance": f"ci{message['chat']['id']}",
            "data": data,
        }
        self.push_update({"callback_query": query})
        return query

    def push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue a raw update for getUpdates."""
        update = {"update_id": next(self._update_ids), **update}
        self._updates.append(update)
        self._wake_pollers()
        return update

    def take_updates(self) -> list[dict[str, Any]]:
        """Remove and return the queued updates, for a test that delivers them by webhook."""
        updates, self._updates = self._updates, []
        return updates

    async def deliver(
        self, endpoint: str, update: dict[str, Any], *, secret: str, timeout: float = 10.0
    ) -> int:
        """POST one update to a bot's webhook as Telegram does; returns the HTTP status."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                endpoint,
                json=update,
                headers={"X-Telegram-Bot-Api-Secret-Token": secret},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response,
        ):
            return response.status

    def add_file(
        self, data: bytes, folder: str, suffix: str, declared_size: int | None = None
    ) -> dict[str, Any]:
        """Store a file the bot may download; returns its file_id, file_unique_id, file_size."""
        number = next(self._file_ids)
        file_id = f"file-{number}"
        size = len(data) if declared_size is None else declared_size
        self._files[file_id] = _File(data, f"u{number}", f"{folder}/file_{number}{suffix}", size)
        return {"file_id": file_id, "file_unique_id": f"u{number}", "file_size": size}

    # --- what the bot did -----------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    async def wait_for(self, method: str, *, timeout: float = 30.0, **match: Any) -> Call:
        """The first call of `method` with these params not returned before; waits for it."""
        deadline = time.monotonic() + timeout
        while True:
            for call in self.calls:
                if call.method == method and not call.seen and _matches(call, match):
                    call.seen = True
                    return call
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                made = [(c.method, c.chat_id, c.text[:60]) for c in self.calls]
                raise AssertionError(f"no {method} {match} within {timeout} s; calls: {made}")
            self._call_made.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._call_made.wait(), remaining)

    def fail(
        self,
        method: str,
        *,
        status: int = 500,
        description: str = "Internal Server Error",
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` calls of `method` with this error."""
        self._failures.setdefault(method, []).extend([(status, description, retry_after)] * times)

    def stall(self, method: str, *, seconds: float, times: int = 1) -> None:
        """Carry out the next `times` calls of `method`, then answer only after `seconds`.

        This is Telegram's ambiguous case: the message was delivered, but the bot's read
        timeout ends its wait first, so the bot cannot know that it was.
        """
        self._stalls.setdefault(method, []).extend([seconds] * times)

    # --- the HTTP side --------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(404, "Not Found")
        method = request.match_info["method"]
        params, files = await _read_params(request)
        call = Call(method, params, files)
        if method != "getUpdates":
            self.calls.append(call)
        if failures := self._failures.get(method):
            status, description, retry_after = failures.pop(0)
            call.failed = True
            response = _error(status, description, retry_after)
        else:
            response = await self._answer(call)
            call.failed = response.status != 200
        self._call_made.set()
        if stalls := self._stalls.get(method):
            await asyncio.sleep(stalls.pop(0))
        return response

    async def _answer(self, call: Call) -> web.Response:
        method, params = call.method, call.params
        if method == "getMe":
            result: Any = self.bot
        elif method == "getUpdates":
            result = await self._get_updates(params)
        elif method == "getFile":
            return self._get_file(params)
        elif method in _SENDS:
            if params.get("chat_id") in self.unreachable_users:
                return _error(403, "Forbidden: bot can't initiate conversation with a user")
            result = self._bot_message(method, call)
        elif method in ("editMessageText", "editMessageReplyMarkup"):
            if (params.get("chat_id"), params.get("message_id")) not in self.messages:
                return _error(400, "Bad Request: message to edit not found")
            result = self._edit(params)
        elif method == "getWebhookInfo":
            result = {"url": "", "has_custom_certificate": False, "pending_update_count": 0}
        elif method in _TRUE_METHODS:
            result = True
        else:
            return _error(400, f"Bad Request: the fake has no method {method}")
        call.result = result
        return web.json_response({"ok": True, "result": result})

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = params.get("offset") or 0
        # Like Telegram: asking from `offset` confirms every update before it.
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        timeout = float(params.get("timeout") or 0)
        if not self._updates and timeout > 0 and not self._closing:
            arrived = self._arrived
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), timeout)
        return list(self._updates[: params.get("limit") or 100])

    def _get_file(self, params: dict[str, Any]) -> web.Response:
        file = self._files.get(str(params.get("file_id")))
        if file is None:
            return _error(400, "Bad Request: invalid file_id")
        if file.declared_size > DOWNLOAD_LIMIT:
            return _error(400, "Bad Request: file is too big")
        result = {
            "file_id": params["file_id"],
            "file_unique_id": file.unique_id,
            "file_size": file.declared_size,
            "file_path": file.path,
        }
        return web.json_response({"ok": True, "result": result})

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=404)
        path = request.match_info["path"]
        for file in self._files.values():
            if file.path == path:
                self.downloads.append(path)
                return web.Response(body=file.data, content_type="application/octet-stream")
        return web.Response(status=404)

    def _bot_message(self, method: str, call: Call) -> dict[str, Any]:
        params = call.params
        chat = self._chat_of(params["chat_id"])
        message = self._new_message(None, chat)
        message["from"] = self.bot
        kind = _SENDS[method]
        if kind == "text":
            message["text"] = params.get("text", "")
        else:
            data = call.files.get(kind, b"")
            file = self.add_file(data, kind + "s", ".png")
            message[kind] = [{**file, "width": 640, "height": 480}] if kind == "photo" else file
            if params.get("caption"):
                message["caption"] = params["caption"]
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        self.messages[(chat.id, message["message_id"])] = message
        return message

    def _edit(self, params: dict[str, Any]) -> dict[str, Any]:
        """editMessageText (new text and keyboard) or editMessageReplyMarkup (keyboard only)."""
        message = self.messages[(params["chat_id"], params["message_id"])]
        text = params.get("text", message.get("text", ""))
        message = {**message, "text": text, "edit_date": int(time.time())}
        message.pop("reply_markup", None)
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        self.messages[(params["chat_id"], params["message_id"])] = message
        return message

    # --- helpers --------------------------------------------------------------------------------

    def _new_message(
        self, user: TgUser | None, chat: TgChat, *, reply_to: dict | None = None
    ) -> dict[str, Any]:
        ids = self._message_ids.setdefault(chat.id, itertools.count(1))
        message: dict[str, Any] = {
            "message_id": next(ids),
            "date": int(time.time()),
            "chat": chat.to_dict(),
        }
        if user:
            message["from"] = user.to_dict()
        if reply_to:
            message["reply_to_message"] = reply_to
        return message

    def _deliver(self, message: dict[str, Any]) -> dict[str, Any]:
        self.messages[(message["chat"]["id"], message["message_id"])] = message
        self.push_update({"message": message})
        return message

    def _add_caption(self, message: dict[str, Any], caption: str | None) -> None:
        if caption:
            message["caption"] = caption
            if entities := self._entities(caption):
                message["caption_entities"] = entities

    def _chat_of(self, chat_id: int) -> TgChat:
        for (known_id, _), message in self.messages.items():
            if known_id == chat_id:
                chat = message["chat"]
                return TgChat(chat["id"], chat["type"], chat.get("title"))
        return TgChat(chat_id, "private" if chat_id > 0 else "supergroup")

    @staticmethod
    def _entities(text: str) -> list[dict[str, Any]]:
        """bot_command for a leading /command, mention for each @name (UTF-16 offsets)."""
        entities = []
        position = 0
        for word in text.split(" "):
            kind = None
            if word.startswith("/") and position == 0 and len(word) > 1:
                kind = "bot_command"
            elif word.startswith("@") and len(word) > 1:
                kind = "mention"
            if kind:
                offset = len(text[:position].encode("utf-16-le")) // 2
                length = len(word.encode("utf-16-le")) // 2
                entities.append({"type": kind, "offset": offset, "length": length})
            position += len(word) + 1
        return entities

    def _wake_pollers(self) -> None:
        arrived, self._arrived = self._arrived, asyncio.Event()
        arrived.set()


def _matches(call: Call, match: dict[str, Any]) -> bool:
    return all(call.params.get(key) == value for key, value in match.items())


def _error(status: int, description: str, retry_after: int | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=status)


async def _read_params(request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Decode form-encoded or multipart parameters the way the Bot API reads them."""
    form = await request.post() if request.can_read_body else {}
    raw = {**request.query, **form}
    params: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    for key, value in raw.items():
        if isinstance(value, web.FileField):
            files[key] = value.file.read()
        elif key in _JSON_FIELDS:
            params[key] = json.loads(value)
        elif key in _INT_FIELDS:
            params[key] = int(value)
        else:
            params[key] = value
    for key, value in list(params.items()):
        # Uploads may be named in the parameter as attach://<field>.
        if isinstance(value, str) and value.startswith("attach://"):
            files[key] = files.pop(value.removeprefix("attach://"), b"")
    return params, files


@contextlib.asynccontextmanager
async def running_bot(
    service: MoodService, fake: FakeTelegram, **overrides: Any
) -> AsyncIterator[TelegramTransport]:
    """The real Telegram transport polling `fake`; it stops taking updates and closes after."""
    from bot.transports.telegram_bot import TelegramTransport

    transport = TelegramTransport(service, fake.bot_config(**overrides))
    await transport.start()
    try:
        yield transport
    finally:
        await transport.stop_intake()
        await transport.close(timeout=10)
