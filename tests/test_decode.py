"""Decoding untrusted bytes: formats, colour modes, EXIF rotation and the size guards."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from ml.decode import DecodeLimits, decode_image, quiet_pillow_metadata_warnings
from ml.errors import ImageTooLarge, UnreadableImage
from tests.conftest import encode


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def grey_png(width: int, height: int, rows: int | None = None) -> bytes:
    """A valid-looking 8-bit grey PNG whose pixel data holds `rows` zero rows (all by default)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    body = b"".join(compressor.compress(row) for _ in range(height if rows is None else rows))
    body += compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", body)
        + png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF"])
def test_common_formats_decode_to_rgb(fmt: str) -> None:
    pixels = np.zeros((30, 40, 3), dtype=np.uint8)
    pixels[:, :, 0] = 200
    decoded = decode_image(encode(pixels, fmt))
    assert decoded.pixels.shape == (30, 40, 3)
    assert decoded.pixels.dtype == np.uint8
    assert decoded.original_size == (40, 30)
    assert abs(int(decoded.pixels[15, 20, 0]) - 200) < 12


def test_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (20, 20), colour) for colour in ("red", "lime", "blue")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert tuple(decode_image(data).pixels[10, 10]) == (255, 0, 0)


def test_exif_orientation_is_applied() -> None:
    # A wide picture, red on the left, stored with "rotate 90 clockwise to display".
    image = Image.new("RGB", (200, 100), "blue")
    image.paste(Image.new("RGB", (100, 100), "red"), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(encode(image, "JPEG", exif=exif.tobytes()))
    assert decoded.pixels.shape == (200, 100, 3)
    assert decoded.original_size == (100, 200)
    assert decoded.pixels[20, 50, 0] > 200 and decoded.pixels[20, 50, 2] < 60  # red on top
    assert decoded.pixels[180, 50, 2] > 200  # blue below


def test_grey_rgba_cmyk_and_palette_become_rgb() -> None:
    grey = decode_image(encode(Image.new("L", (8, 8), 77), "PNG")).pixels
    assert tuple(grey[0, 0]) == (77, 77, 77)
    transparent = decode_image(encode(Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "PNG")).pixels
    assert tuple(transparent[0, 0]) == (255, 255, 255)
    cmyk = decode_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG")).pixels
    assert cmyk[4, 4, 0] > 220 and cmyk[4, 4, 1] < 40
    palette = decode_image(encode(Image.new("P", (8, 8), 3), "PNG")).pixels
    assert palette.shape == (8, 8, 3)


def test_sixteen_bit_images_are_scaled_not_clipped() -> None:
    values = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (8, 1))
    image = Image.fromarray(values)  # uint16 -> mode "I;16"
    assert image.mode == "I;16"
    pixels = decode_image(encode(image, "PNG")).pixels
    assert pixels[0, 0, 0] == 0
    assert pixels[0, -1, 0] == 255
    assert 110 < pixels[0, 32, 0] < 145  # mid-grey stays mid-grey


def test_large_jpeg_is_decoded_at_reduced_size() -> None:
    big = Image.new("RGB", (4000, 3000), (10, 120, 200))
    decoded = decode_image(encode(big, quality=80), DecodeLimits(max_side=1600))
    assert decoded.original_size == (4000, 3000)
    assert decoded.pixels.shape == (1500, 2000, 3)
    assert decoded.scale == 2.0


def test_too_many_bytes_is_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLarge, match=r"limit is 0\.0 MB"):
        decode_image(b"x" * 2000, DecodeLimits(max_bytes=1000))


def test_huge_dimensions_are_refused_from_the_header() -> None:
    header_only = grey_png(30000, 30000, rows=1)
    with pytest.raises(ImageTooLarge, match="too many pixels"):
        decode_image(header_only)


def test_decompression_bomb_is_refused() -> None:
    bomb = grey_png(8000, 8000)  # 64 megapixels of zeros in a few dozen kilobytes
    assert len(bomb) < 200_000
    with pytest.raises(ImageTooLarge, match="8000x8000 pixels; the limit is 50 megapixels"):
        decode_image(bomb)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"GIF89a this is not really a gif", "damaged|not an image"),
        (b"hello, I am a text file with a .jpg name\n", "not an image"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "not an image"),
    ],
)
def test_garbage_is_unreadable(data: bytes, message: str) -> None:
    with pytest.raises(UnreadableImage, match=message):
        decode_image(data)


def test_truncated_jpeg_is_unreadable(astronaut_jpeg: bytes) -> None:
    with pytest.raises(UnreadableImage, match="damaged"):
        decode_image(astronaut_jpeg[: len(astronaut_jpeg) // 2])


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_pixels must be positive, got 0"):
        DecodeLimits(max_pixels=0)


def test_large_png_is_shrunk_right_after_decoding() -> None:
    big = grey_png(4000, 3000)  # 12 megapixels of zeros: within the limits, so decoded
    decoded = decode_image(big, DecodeLimits(max_side=1600))
    assert decoded.original_size == (4000, 3000)
    assert decoded.pixels.shape == (1500, 2000, 3) and decoded.scale == 2.0


def test_shrunk_sixteen_bit_images_keep_their_scale() -> None:
    values = np.full((600, 800), 32768, dtype=np.uint16)  # half of full scale
    pixels = decode_image(encode(Image.fromarray(values), "PNG"), DecodeLimits(max_side=200))
    assert pixels.pixels.shape == (150, 200, 3)
    assert 120 < pixels.pixels[0, 0, 0] < 135  # mid-grey, not stretched to white


def test_shrunk_palette_images_keep_their_colours() -> None:
    image = Image.new("P", (900, 600))
    image.putpalette([0, 0, 0, 250, 10, 10] + [0, 0, 0] * 254)
    image.paste(1, (0, 0, 900, 600))
    pixels = decode_image(encode(image, "PNG"), DecodeLimits(max_side=300)).pixels
    assert pixels.shape == (200, 300, 3)
    assert tuple(pixels[100, 150]) == (250, 10, 10)


def test_malformed_metadata_warnings_stay_quiet() -> None:
    exif = b"II*\x00\x08\x00\x00\x00\x01\x00\x0f\x01\x02\x00\xff\xff\xff\x7f\x08\x00\x00\x00"
    data = encode(Image.new("RGB", (8, 8)), "JPEG", exif=b"Exif\x00\x00" + exif + b"\x00" * 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_pillow_metadata_warnings()  # what importing ml.decode installs for the process
        decode_image(data)
    assert [str(w.message) for w in caught] == []


def test_pillow_bomb_check_gives_our_message() -> None:
    with pytest.raises(ImageTooLarge, match="too many pixels; the limit is 50 megapixels"):
        decode_image(grey_png(20000, 20000, rows=1))
