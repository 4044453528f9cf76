"""Named failures of the inference engine, and the codes of every failure a reply can carry.

Each code is stable: the web API's `error.code`, the CLI's JSON, metrics labels and the key of
the failure's sentence in bot/texts.py all use it.
"""

from enum import StrEnum


class ErrorCode(StrEnum):
    """Why a reply carries no answer: the engine's failures, then the service's."""

    ERROR = "error"  # something unexpected; the sentence says "something went wrong"
    UNREADABLE = "unreadable"
    TOO_LARGE = "too_large"
    BUSY = "busy"
    CLOSED = "closed"
    MODEL = "model"
    NO_FACE = "no_face"
    DOWNLOAD_FAILED = "download_failed"
    RATE_LIMITED = "rate_limited"
    HISTORY_UNAVAILABLE = "history_unavailable"
    GROUP_EMPTY = "group_empty"
    BAD_ARGUMENT = "bad_argument"
    UNKNOWN_COMMAND = "unknown"
    CORRECTION_INVALID = "correction_invalid"
    CORRECTION_EXPIRED = "correction_expired"
    CORRECTION_GONE = "correction_gone"
    FAILED = "failed"  # the web API's own failure (HTTP 500)


class MLError(Exception):
    """The image could not be analysed."""

    code = ErrorCode.ERROR

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)

    @property
    def message(self) -> str:
        return str(self)


class UnreadableImage(MLError):
    """This file is not an image I can read."""

    code = ErrorCode.UNREADABLE


class ImageTooLarge(MLError):
    """This image is too large for me."""

    code = ErrorCode.TOO_LARGE


class EngineBusy(MLError):
    """I am busy with other photos right now; try again in a moment."""

    code = ErrorCode.BUSY


class EngineClosed(MLError):
    """The engine is shutting down."""

    code = ErrorCode.CLOSED


class ModelLoadError(MLError):
    """The emotion model could not be loaded."""

    code = ErrorCode.MODEL
