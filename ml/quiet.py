"""Start TensorFlow and LiteRT without their native start-up noise on stderr."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext


@contextmanager
def native_stderr_hidden() -> Iterator[None]:
    """Hide what native code writes straight to file descriptor 2 while the block runs."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def native_noise_hidden() -> AbstractContextManager[None]:
    """`native_stderr_hidden`, unless MOODBOT_LOG_LEVEL=DEBUG asks to see everything."""
    if os.environ.get("MOODBOT_LOG_LEVEL", "").upper() == "DEBUG":
        return nullcontext()
    return native_stderr_hidden()


def import_tensorflow_quietly() -> None:
    """Import TensorFlow now, its C++ start-up lines hidden (unless MOODBOT_LOG_LEVEL=DEBUG).

    Those lines ("Could not find cuda drivers...") bypass both Python logging and
    TF_CPP_MIN_LOG_LEVEL; a failed import still raises once stderr is back.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_noise_hidden():
        import tensorflow  # noqa: F401
