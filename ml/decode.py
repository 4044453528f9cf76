"""Turn untrusted image bytes into an RGB array, refusing what is too large before decoding it."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ml.errors import ImageTooLarge, UnreadableImage


def quiet_pillow_metadata_warnings() -> None:
    """Silence Pillow's UserWarnings about malformed metadata (EXIF tags past the end...).

    They say nothing to the operator about untrusted files. Installed once for the process
    at import, because warnings.catch_warnings() is not thread-safe and the engine decodes
    on several threads. (Bombs need no warning filter: _open checks the pixel count itself.)
    """
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\..*)?$")


quiet_pillow_metadata_warnings()

# Phone photos that are MPO files open through the JPEG plugin.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
_HIGH_DEPTH_MODES = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535}
# Modes Image.reduce() averages correctly; the others are converted first (see _reduced).
_REDUCIBLE_MODES = {"L", "LA", "RGB", "RGBA", "CMYK", "I", "F"}
_REDUCE_VIA = {"1": "L", **dict.fromkeys(_HIGH_DEPTH_MODES, "I")}


@dataclass(frozen=True)
class DecodeLimits:
    """Guards against oversized uploads and decompression bombs."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    # Large JPEGs are decoded at a reduced scale (libjpeg's DCT scaling) down to this long side:
    # detection and cropping need no more, and it is several times faster.
    max_side: int = 1600

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "max_side"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB image and the size of the original (after EXIF rotation)."""

    pixels: np.ndarray  # uint8, HxWx3
    original_size: tuple[int, int]  # (width, height) of the full-resolution, upright image

    @property
    def scale(self) -> float:
        """Factor from `pixels` coordinates to original-image coordinates."""
        return self.original_size[0] / self.pixels.shape[1]


def decode_image(data: bytes, limits: DecodeLimits | None = None) -> DecodedImage:
    """Decode image bytes into an upright RGB array within `limits`."""
    limits = limits or DecodeLimits()
    if not data:
        raise UnreadableImage("The file is empty.")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(
            f"The file is {len(data) / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.1f} MB."
        )
    image = _open(data, limits)
    try:
        return _to_upright_rgb(image, limits)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"The image data is damaged ({_reason(exc)}).") from exc
    except MemoryError as exc:
        raise ImageTooLarge("The image needs too much memory to decode.") from exc


def _open(data: bytes, limits: DecodeLimits) -> Image.Image:
    """Read only the header: format and dimensions are checked before any pixel is decoded."""
    try:
        image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except UnidentifiedImageError as exc:
        raise UnreadableImage(
            "This is not an image I can read (JPEG, PNG, WebP, GIF or BMP)."
        ) from exc
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        # Pillow's own bomb check (its MAX_IMAGE_PIXELS) fired before ours could.
        raise ImageTooLarge(
            f"The image has too many pixels; the limit is {limits.max_pixels / 1e6:.0f} megapixels."
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise UnreadableImage(f"The image data is damaged ({_reason(exc)}).") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise UnreadableImage("The image has no pixels.")
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} pixels; the limit is "
            f"{limits.max_pixels / 1e6:.0f} megapixels."
        )
    return image


def _to_upright_rgb(image: Image.Image, limits: DecodeLimits) -> DecodedImage:
    orientation = image.getexif().get(0x0112, 1)
    rotated = orientation in (5, 6, 7, 8)
    width, height = image.size
    original_size = (height, width) if rotated else (width, height)
    if image.format in ("JPEG", "MPO") and max(width, height) > limits.max_side:
        # draft() picks the largest DCT scale (1/2, 1/4, 1/8) that keeps both sides at or
        # above the requested size, so ask for the aspect-correct size of the long side.
        factor = limits.max_side / max(width, height)
        image.draft("RGB", (round(width * factor), round(height * factor)))
    image.seek(0)  # first frame of an animation
    image.load()
    top = _HIGH_DEPTH_MODES.get(image.mode)  # known before _reduced() converts I;16 to I
    image = _reduced(image, limits.max_side)
    image = ImageOps.exif_transpose(image)
    pixels = _rgb_array(image, top)
    return DecodedImage(pixels=pixels, original_size=original_size)


def _reduced(image: Image.Image, max_side: int) -> Image.Image:
    """Shrink a decoded non-JPEG image whose long side is at least twice `max_side`.

    JPEGs are already shrunk while decoding (draft); for the other formats this bounds what
    follows: a 50-megapixel PNG bomb is converted and handed on at ~1/16 of its size,
    instead of being copied three times at full size (several hundred MB).
    """
    factor = max(image.size) // max_side
    if factor < 2:
        return image
    if image.mode not in _REDUCIBLE_MODES:
        # reduce() averages samples: palette indices must become colours first.
        image = image.convert(_REDUCE_VIA.get(image.mode, "RGBA"))
    return image.reduce(factor)


def _rgb_array(image: Image.Image, top: int | None = None) -> np.ndarray:
    """Convert any Pillow mode to 8-bit RGB without clipping high bit depths.

    `top` is the full-scale value of a high-depth image (65535 for 16 bits); without it the
    brightest sample counts as white.
    """
    if image.mode in _HIGH_DEPTH_MODES or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = top or _HIGH_DEPTH_MODES.get(image.mode) or max(float(values.max()), 1.0)
        grey = np.clip(values / top * 255.0, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas become white, as a chat app would show them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:120]
