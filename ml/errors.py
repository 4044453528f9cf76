"""Named failures of the inference engine; each carries a stable code for replies and the CLI."""


class MLError(Exception):
    """The image could not be analysed."""

    code = "error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)

    @property
    def message(self) -> str:
        return str(self)


class UnreadableImage(MLError):
    """This file is not an image I can read."""

    code = "unreadable"


class ImageTooLarge(MLError):
    """This image is too large for me."""

    code = "too_large"


class EngineBusy(MLError):
    """I am busy with other photos right now; try again in a moment."""

    code = "busy"


class EngineClosed(MLError):
    """The engine is shutting down."""

    code = "closed"


class ModelLoadError(MLError):
    """The emotion model could not be loaded."""

    code = "model"
