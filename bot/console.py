"""The console chat: the same core as the bots, in a terminal or fed through a pipe."""

from __future__ import annotations

import asyncio
import getpass
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO

from bot.core import MoodService, Reply, Sender, history_limit
from bot.texts import say
from ml.errors import ErrorCode

log = logging.getLogger(__name__)

PROMPT = "moodbot> "
CHART_FILE = "moodbot-history.png"
INTRO = (
    "moodbot console — type the path of a selfie (JPEG, PNG, WebP, GIF, BMP), "
    "or /help. /quit or Ctrl-D ends the chat."
)

Command = Callable[[MoodService, Sender, str], Awaitable[Reply]]


def console_sender(language: str = "en") -> Sender:
    user = getpass.getuser() or "you"
    return Sender(platform="console", chat_id="console", user_id=user, language=language)


class ConsoleChat:
    """Reads lines, turns each into one core call, prints the reply."""

    def __init__(
        self,
        service: MoodService,
        *,
        sender: Sender,
        max_bytes: int,
        chart_dir: Path = Path("."),
        out: TextIO,
    ) -> None:
        self.service = service
        self.sender = sender
        self.max_bytes = max_bytes
        self.chart_dir = chart_dir
        self.out = out
        self._commands: dict[str, Command] = {
            "/help": lambda s, who, arg: _now(s.help(who)),
            "/start": lambda s, who, arg: _now(s.help(who)),
            "/history": self._history,
            "/group": self._group,
            "/forget": lambda s, who, arg: s.forget(who),
            "/mode": lambda s, who, arg: s.set_mode(who, arg),
            "/genre": lambda s, who, arg: s.set_genre(who, arg),
            "/fix": self._fix,
        }
        self._last_ref: str | None = None  # the correction ref of the last analysis

    async def run(self, lines: TextIO, *, interactive: bool) -> None:
        """Chat until /quit or end of input."""
        self._print(INTRO)
        while True:
            if interactive:
                self.out.write(PROMPT)
                self.out.flush()
            line = await asyncio.to_thread(lines.readline)
            if not line or line.strip().lower() in ("/quit", "/exit"):
                return
            if line.strip():
                await self._show(await self.handle(line.strip()))

    async def handle(self, line: str) -> Reply:
        """One line in, one reply out: a command, or the path of a photo."""
        name, _, arg = line.partition(" ")
        command = self._commands.get(name.lower())
        if command:
            return self._remember(await command(self.service, self.sender, arg.strip()))
        path = _as_path(line)
        if line.startswith("/") and not path.exists() and " " not in line:
            return Reply(
                text=say(self.sender.language, "unknown_command"),
                error_code=ErrorCode.UNKNOWN_COMMAND,
            )
        image = await asyncio.to_thread(self._read, path)
        if isinstance(image, Reply):
            return image
        return self._remember(await self.service.analyze_selfie(self.sender, image))

    def _remember(self, reply: Reply) -> Reply:
        """Keep the last analysis's correction ref for /fix."""
        if reply.correction is not None:
            self._last_ref = reply.correction.ref
        return reply

    async def _fix(self, service: MoodService, who: Sender, arg: str) -> Reply:
        """/fix EMOTION: correct the mood of the last analysis."""
        lang = who.language
        if self._last_ref is None:
            return Reply(text=say(lang, "fix_nothing"), error_code=ErrorCode.BAD_ARGUMENT)
        if not arg:
            return Reply(text=say(lang, "fix_usage"), error_code=ErrorCode.BAD_ARGUMENT)
        return await service.correct(who, self._last_ref, arg)

    async def _history(self, service: MoodService, who: Sender, arg: str) -> Reply:
        return await service.show_history(who, limit=history_limit(arg))

    async def _group(self, service: MoodService, who: Sender, arg: str) -> Reply:
        if not arg:
            return await service.group_mix(who)
        image = await asyncio.to_thread(self._read, _as_path(arg))
        if isinstance(image, Reply):
            return image
        return await service.group_photo_mix(who, image)

    def _read(self, path: Path) -> bytes | Reply:
        """The file's bytes, or a reply naming the file and why it cannot be used.

        Blocking (a slow disk or network share): called in a worker thread.
        """
        lang = self.sender.language
        try:
            size = path.stat().st_size
            if path.is_dir():
                return _not_a_file(lang, path, "it is a folder")
            if size > self.max_bytes:
                detail = f"{size / 1e6:.1f} MB"
                return Reply(
                    text=say(lang, "too_large", detail=detail), error_code=ErrorCode.TOO_LARGE
                )
            return path.read_bytes()
        except FileNotFoundError:
            return _not_a_file(lang, path, "no such file")
        except OSError as exc:
            return _not_a_file(lang, path, exc.strerror or type(exc).__name__)

    async def _show(self, reply: Reply) -> None:
        lines = [reply.text]
        lines += [f"  • {link.label}\n    {link.url}" for link in reply.links]
        if reply.chart_png:
            chart = self.chart_dir / CHART_FILE
            await asyncio.to_thread(chart.write_bytes, reply.chart_png)
            lines.append(f"  (chart saved to {chart})")
        self._print("\n".join(lines))

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


async def _now(reply: Reply) -> Reply:
    return reply


def _as_path(text: str) -> Path:
    # Terminals paste dragged files with quotes around them.
    return Path(text.strip().strip("'\"")).expanduser()


def _not_a_file(lang: str, path: Path, reason: str) -> Reply:
    return Reply(
        text=say(lang, "not_a_file", path=path, reason=reason), error_code=ErrorCode.UNREADABLE
    )
