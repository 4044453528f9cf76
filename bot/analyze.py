"""`moodbot analyze`: photos in, one result per photo out (the CLI contract lives here)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bot.app import build_music
from bot.music import MusicRecommender
from bot.settings import Settings
from ml.engine import Analysis, EmotionEngine
from ml.errors import ErrorCode, ImageTooLarge, MLError, UnreadableImage

BAD_INPUT_CODES = (ErrorCode.UNREADABLE, ErrorCode.TOO_LARGE)


async def analyze_paths(
    settings: Settings, paths: Sequence[Path], *, emit: Callable[[dict[str, Any]], None]
) -> list[dict[str, Any]]:
    """Analyse every path, emitting each result in input order as soon as it is ready."""
    music = build_music(settings)  # first: a damaged catalogue fails before the model loads
    engine = await asyncio.to_thread(EmotionEngine.load, settings.model, settings.engine_config())
    # The engine batches whatever is queued; keep it fed without overflowing its queue.
    slots = asyncio.Semaphore(settings.queue_size)

    async def one(path: Path) -> dict[str, Any]:
        async with slots:
            return await analyze_path(engine, music, path, settings.max_image_bytes)

    try:
        tasks = [asyncio.create_task(one(path)) for path in paths]
        results = []
        for task in tasks:
            results.append(await task)
            emit(results[-1])
        return results
    finally:
        engine.close()


async def analyze_path(
    engine: EmotionEngine, music: MusicRecommender, path: Path, max_bytes: int
) -> dict[str, Any]:
    """The contract's JSON object for one file; never raises for bad input."""
    try:
        data = await asyncio.to_thread(_read, path, max_bytes)
        analysis = await engine.analyze(data)
    except MLError as exc:
        return _result(path, error=(exc.code, exc.message))
    if not analysis.faces:
        return _result(path, analysis, error=(ErrorCode.NO_FACE, "No face found in the image."))
    suggestion = await music.suggest(analysis.faces[0].emotion)
    recommendations = [r.as_json() for r in suggestion.recommendations]
    return _result(path, analysis, recommendations=recommendations)


def _read(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, judged before reading it."""
    try:
        if path.is_dir():
            raise UnreadableImage(f"{path} is a folder, not a file.")
        # O_NONBLOCK: opening a FIFO with no writer must not hang; regular files ignore it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                # /dev/zero, /dev/stdin, FIFOs, sockets: sizes they do not declare.
                raise UnreadableImage(f"{path} is not a regular file.")
            if info.st_size > max_bytes:
                raise ImageTooLarge(
                    f"{path} is {info.st_size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB."
                )
            data = file.read(max_bytes + 1)  # a file that grew meanwhile is still bounded
    except FileNotFoundError:
        raise UnreadableImage(f"{path} does not exist.") from None
    except OSError as exc:
        raise UnreadableImage(f"{path} cannot be read: {exc.strerror}.") from None
    if len(data) > max_bytes:
        raise ImageTooLarge(f"{path} is larger than the limit of {max_bytes / 1e6:.1f} MB.")
    return data


def _result(
    path: Path,
    analysis: Analysis | None = None,
    *,
    recommendations: list[dict[str, Any]] | None = None,
    error: tuple[str, str] | None = None,
) -> dict[str, Any]:
    faces = analysis.faces if analysis else ()
    primary = faces[0] if faces else None
    return {
        "path": str(path),
        "ok": error is None,
        "emotion": primary.emotion if primary else None,
        "confidence": round(primary.confidence, 4) if primary else None,
        "faces": [face.to_json() for face in faces],
        "recommendations": recommendations or [],
        "error": {"code": error[0], "message": error[1]} if error else None,
    }


def exit_status(results: Sequence[dict[str, Any]]) -> int:
    """2 when any input could not be read, 3 when some had no face, 0 otherwise."""
    codes = {r["error"]["code"] for r in results if r["error"]}
    if codes & set(BAD_INPUT_CODES) or codes - {ErrorCode.NO_FACE}:
        return 2
    return 3 if ErrorCode.NO_FACE in codes else 0


def human_line(result: dict[str, Any]) -> str:
    """A short line per file for people."""
    if result["error"]:
        return f"{result['path']}: {result['error']['code']} — {result['error']['message']}"
    faces = result["faces"]
    extra = f" (+{len(faces) - 1} more faces)" if len(faces) > 1 else ""
    link = result["recommendations"][0]["url"] if result["recommendations"] else ""
    confidence = round(result["confidence"] * 100)
    return f"{result['path']}: {result['emotion']} {confidence}%{extra}  {link}".rstrip()
