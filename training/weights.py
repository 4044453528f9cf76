"""Fetch and verify keras-vggface's published weight files (GitHub release v2.0) into a cache."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import socket
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from training.vggface import (
    MIN_INPUT_SIDE,
    VGGFaceError,
    WeightFileInvalid,
    build_vggface,
    check_architecture,
    default_cache_dir,
    rcmalli_name,
    read_weight_file,
    weight_file_name,
    weighted_layers,
)

log = logging.getLogger(__name__)

RELEASE_URL = "https://github.com/rcmalli/keras-vggface/releases/download/v2.0/"
_CHUNK = 1 << 20  # file_sha256 reads this much at a time


class DownloadFailed(VGGFaceError):
    """The weight file could not be downloaded."""


@dataclass(frozen=True)
class WeightFile:
    """One of the published files, where it lives in the cache, and how it was obtained."""

    path: Path
    size: int
    sha256: str
    downloaded: bool


def weight_file_url(architecture: str, include_top: bool = False, base_url: str = "") -> str:
    """The file's address in the GitHub release (or under `base_url`, for a mirror)."""
    base = base_url or RELEASE_URL
    return base.rstrip("/") + "/" + weight_file_name(architecture, include_top)


def verify_weight_file(path: Path, architecture: str, include_top: bool = False) -> None:
    """Check that `path` holds every weighted layer of the architecture, with its shapes."""
    expected = expected_shapes(architecture, include_top)
    found = read_weight_file(path)
    for layer, shapes in expected.items():
        if layer not in found:
            raise WeightFileInvalid(f"{path} has no layer {layer!r} of VGGFace {architecture}.")
        got = [shape for _, shape in found[layer]]
        if got != shapes:
            raise WeightFileInvalid(
                f"{path}: layer {layer!r} has weights of shapes {got}, "
                f"VGGFace {architecture} expects {shapes}."
            )


def expected_shapes(architecture: str, include_top: bool = False) -> dict[str, list[tuple]]:
    """keras-vggface layer name -> weight shapes of the published 224x224 file."""
    check_architecture(architecture)
    return {name: list(shapes) for name, shapes in _expected_shapes(architecture, include_top)}


@functools.cache
def _expected_shapes(architecture: str, include_top: bool) -> tuple[tuple[str, tuple], ...]:
    """Built once per process: building a model to read its shapes takes a second or more."""
    side = MIN_INPUT_SIDE  # convolution shapes do not depend on the input size
    model = build_vggface(architecture, include_top=include_top, input_shape=(side, side, 3))
    shapes = {
        rcmalli_name(layer): [tuple(w.shape) for w in layer.weights]
        for layer in weighted_layers(model)
    }
    if architecture == "vgg16" and include_top:
        # fc6 reads the flattened pool5 map: 7x7x512 at 224x224 instead of 1x1x512 here.
        kernel, bias = shapes["fc6"]
        shapes["fc6"] = [(7 * 7 * kernel[0], kernel[1]), bias]
    return tuple((name, tuple(weights)) for name, weights in shapes.items())


def download_weights(
    architecture: str,
    include_top: bool = False,
    *,
    cache_dir: Path | None = None,
    url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    timeout: float = 30.0,
    progress: bool = True,
) -> WeightFile:
    """Fetch one published file into the cache, verify it, and move it into place atomically."""
    name = weight_file_name(architecture, include_top)
    directory = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = directory / name
    if target.is_file() and not force:
        try:
            return _checked(target, architecture, include_top, sha256, downloaded=False)
        except WeightFileInvalid as exc:
            log.warning("Replacing the cached %s: %s", target, exc)
    url = url or weight_file_url(architecture, include_top)
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{name}.{os.getpid()}.partial"
    try:
        _fetch(url, partial, timeout=timeout, progress=progress, target=target)
        result = _checked(partial, architecture, include_top, sha256, downloaded=True)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    log.info("Downloaded %s (%d bytes, sha256 %s)", target, result.size, result.sha256)
    return WeightFile(path=target, size=result.size, sha256=result.sha256, downloaded=True)


def _checked(
    path: Path, architecture: str, include_top: bool, sha256: str | None, *, downloaded: bool
) -> WeightFile:
    digest = file_sha256(path)
    if sha256 and digest != sha256.lower():
        raise WeightFileInvalid(f"{path} has sha256 {digest}, expected {sha256.lower()}.")
    verify_weight_file(path, architecture, include_top)
    return WeightFile(path=path, size=path.stat().st_size, sha256=digest, downloaded=downloaded)


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, destination: Path, *, timeout: float, progress: bool, target: Path) -> None:
    """Download `url` to `destination` with keras.utils.get_file; failures become DownloadFailed.

    get_file removes what it wrote when the download fails or comes up short.
    """
    import keras

    try:
        with _network_timeout(timeout), _keras_progress(progress):
            keras.utils.get_file(
                fname=destination.name,
                origin=url,
                cache_dir=str(destination.parent),
                cache_subdir=str(destination.parent),  # absolute: exactly this folder
                force_download=True,
            )
    except Exception as exc:  # get_file re-raises urllib's error as a bare Exception
        cause = exc.__context__ if isinstance(exc.__context__, urllib.error.URLError) else exc
        if isinstance(cause, urllib.error.HTTPError):
            raise DownloadFailed(f"{url} answered HTTP {cause.code} {cause.reason}.") from exc
        reason = getattr(cause, "reason", None) or cause
        raise DownloadFailed(
            f"Could not download {url}: {reason}. Without internet, fetch the file on another "
            f"machine and copy it to {target} (or pass its path with --weights)."
        ) from exc


@contextmanager
def _network_timeout(seconds: float) -> Iterator[None]:
    """get_file takes no timeout; urllib uses the socket default (this is a one-shot CLI)."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


@contextmanager
def _keras_progress(shown: bool) -> Iterator[None]:
    """get_file always draws Keras's progress bar; hide it (and its prints) when asked."""
    import keras

    before = keras.config.is_interactive_logging_enabled()
    if not shown:
        keras.config.disable_interactive_logging()
    try:
        yield
    finally:
        if before:
            keras.config.enable_interactive_logging()
