"""Write the hostile-input corpus into tests/corpus/files/.

Run: uv run --frozen python tests/corpus/make_corpus.py

Every file is built byte by byte or from Pillow with fixed inputs, so running this again
writes the same bytes. What each file should do to moodbot is in expected.json, written by
hand from what the file is, not from what the code happened to do.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
FILES = HERE / "files"


# --- building blocks -----------------------------------------------------------------------------


def png_chunk(tag: bytes, data: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png(
    width: int,
    height: int,
    *,
    bit_depth: int = 8,
    colour_type: int = 0,
    rows: int | None = None,
    extra_chunks: tuple[bytes, ...] = (),
) -> bytes:
    """A PNG of zero-valued pixels; `rows` limits how many rows the IDAT really holds."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    row_bytes = (width * channels * bit_depth + 7) // 8
    compressor = zlib.compressobj(9)
    row = b"\x00" * (row_bytes + 1)  # filter byte 0, then zero samples
    body = b"".join(compressor.compress(row) for _ in range(height if rows is None else rows))
    body += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + b"".join(extra_chunks)
        + png_chunk(b"IDAT", body)
        + png_chunk(b"IEND", b"")
    )


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    """A smooth colour gradient: a valid picture with no face in it."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack(
        [x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=2
    )
    return Image.fromarray(pixels.astype(np.uint8))


def astronaut(side: int) -> Image.Image:
    """scikit-image's astronaut (a smiling face), scaled so its long side is `side`."""
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((side, side), Image.Resampling.LANCZOS)


def jpeg_with_size(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) then claims width x height pixels."""
    data = bytearray(encoded(gradient(16, 16), "JPEG", quality=80))
    sof = data.index(b"\xff\xc0")
    # SOF0: marker, length (2), precision (1), height (2), width (2), ...
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_frames(count: int, side: int = 8) -> bytes:
    """An animated GIF of `count` 1x1-pixel frames, written by hand (Pillow would merge them)."""
    palette = bytes([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])  # 4 colours -> size field 1
    screen = struct.pack("<HHBBB", side, side, 0xF1, 0, 0)
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    frames = []
    for index in range(count):
        control = b"\x21\xf9\x04\x00\x01\x00\x00\x00"  # 1/100 s per frame
        x, y = index % side, (index // side) % side
        descriptor = b"\x2c" + struct.pack("<HHHHB", x, y, 1, 1, 0)
        # LZW, minimum code size 2: clear (4), the pixel's colour, end (5); packed LSB first.
        codes = 4 | ((1 + index % 3) << 3) | (5 << 6)
        pixels = b"\x02\x02" + struct.pack("<H", codes) + b"\x00"
        frames.append(control + descriptor + pixels)
    return b"GIF89a" + screen + palette + loop + b"".join(frames) + b"\x3b"


def exif_jpeg(exif: bytes) -> bytes:
    """A small JPEG carrying `exif` (the TIFF data after 'Exif\\0\\0') in its APP1 segment."""
    return encoded(gradient(), "JPEG", quality=80, exif=b"Exif\x00\x00" + exif)


def tiff_ifd(entries: list[tuple[int, int, int, bytes]], data: bytes = b"") -> bytes:
    """Little-endian TIFF header + one IFD of (tag, type, count, 4-byte value) + trailing data."""
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\x00")
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00\x00\x00\x00" + data


def huge_exif() -> bytes:
    """An EXIF block of ~60 kB: one UserComment-style UNDEFINED value filling the APP1 segment."""
    comment = b"A" * 60_000
    offset = 8 + 2 + 12 * 2 + 4  # header, count, two entries, next-IFD pointer
    entries = [
        (0x0112, 3, 1, struct.pack("<H", 1)),  # orientation: normal
        (0x9286, 7, len(comment), struct.pack("<I", offset)),
    ]
    return exif_jpeg(tiff_ifd(entries, comment))


def looping_exif() -> bytes:
    """EXIF whose IFD points back at itself and declares a value 2**31 elements long."""
    entries = [
        (0x0112, 3, 1, struct.pack("<H", 6)),  # orientation: rotate 90
        (0x010F, 2, 0x7FFFFFFF, struct.pack("<I", 8)),  # Make: 2 GB of ASCII at offset 8
        (0x8769, 4, 1, struct.pack("<I", 8)),  # the EXIF sub-IFD is the IFD itself
    ]
    return exif_jpeg(tiff_ifd(entries))


def cmyk_jpeg() -> bytes:
    """A CMYK JPEG (as print workflows and some scanners write) of a smiling face."""
    return encoded(astronaut(256).convert("CMYK"), "JPEG", quality=85)


def grey16_png() -> bytes:
    """A 16-bit greyscale PNG (mode I;16) of a smiling face, its values spread over 0..65535."""
    grey = np.asarray(astronaut(224).convert("L"), dtype=np.uint16) * 257
    return encoded(Image.fromarray(grey), "PNG")


def rgb48_png() -> bytes:
    """A 16-bit-per-channel RGB PNG (48 bits a pixel), written by hand: Pillow reads it as RGB."""
    pixels = (np.asarray(gradient(32, 24), dtype=">u2") * 257).astype(">u2")
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(pixels.shape[0]))
    header = struct.pack(">IIBBBBB", 32, 24, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(raw, 9))
        + png_chunk(b"IEND", b"")
    )


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("readme.txt", "I am a zip archive hiding at the end of a JPEG.\n")
        archive.writestr("payload.sh", "#!/bin/sh\necho should never run\n")
    return buffer.getvalue()


def corrupt_jpeg_body() -> bytes:
    """A real JPEG whose entropy-coded data is overwritten with marker-like bytes."""
    data = bytearray(encoded(gradient(), "JPEG", quality=80))
    scan = data.index(b"\xff\xda")
    for position in range(scan + 20, len(data) - 2, 7):
        data[position] = 0xFF  # 0xFF in scan data starts a marker: the decoder must cope
    return bytes(data)


def corrupt_png_crc() -> bytes:
    """A PNG whose IHDR checksum is wrong."""
    data = bytearray(png(32, 32))
    data[29:33] = b"\xde\xad\xbe\xef"  # IHDR CRC: 8 signature + 8 length/tag + 13 data
    return bytes(data)


def png_ztxt_bomb() -> bytes:
    """A 16x16 PNG with a zTXt text chunk that inflates from ~10 kB to 10 MB."""
    text = zlib.compress(b"\x00" * 10_000_000, 9)
    return png(16, 16, extra_chunks=(png_chunk(b"zTXt", b"comment\x00\x00" + text),))


def png_iccp_bomb() -> bytes:
    """A 16x16 PNG whose colour profile (iCCP) inflates from ~10 kB to 10 MB."""
    profile = zlib.compress(b"\x00" * 10_000_000, 9)
    return png(16, 16, extra_chunks=(png_chunk(b"iCCP", b"icc\x00\x00" + profile),))


def gif_script_polyglot() -> bytes:
    """A GIF header that is also JavaScript: 'GIF89a/*...*/=alert(1)' (the GIFAR family)."""
    # Width bytes '/*' open a JS comment; height 1; then a global palette and the script.
    header = b"GIF89a/*" + b"\x01\x00" + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
    return header + b"*/=1;alert(document.domain);//" + b"\x3b"


def html_gif_polyglot() -> bytes:
    """An HTML page that starts with a GIF signature; its 'dimensions' are the letters '<htm'."""
    return b"GIF89a<html><body><script>alert('xss')</script><img src=x></body></html>\n"


def svg() -> bytes:
    return (
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="100" '
        b'height="100"><script>alert(1)</script><circle cx="50" cy="50" r="40"/></svg>\n'
    )


def heic_like() -> bytes:
    """An ISO-BMFF 'ftyp heic' box, as iPhones write: a format moodbot does not read."""
    ftyp = b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic"
    return struct.pack(">I", 4 + len(ftyp)) + ftyp + struct.pack(">I", 16) + b"meta" + b"\x00" * 8


def bmp_header(width: int, height: int) -> bytes:
    """A BMP header claiming width x height 24-bit pixels, followed by almost no pixel data."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    pixels = b"\x00" * 64
    size = 14 + len(info) + len(pixels)
    return b"BM" + struct.pack("<IHHI", size, 0, 0, 14 + len(info)) + info + pixels


def gif_screen(width: int, height: int) -> bytes:
    """A GIF whose one frame claims width x height pixels but holds just a few bytes."""
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen + descriptor + b"\x02\x02\x44\x01\x00\x3b"


def tiff() -> bytes:
    """A real TIFF: an image format, but not one moodbot accepts."""
    return encoded(gradient(16, 16), "TIFF")


def webp_truncated() -> bytes:
    data = encoded(gradient(), "WEBP", quality=80)
    return data[: len(data) // 2]


def mpo_like_jpeg_with_zip() -> bytes:
    return encoded(gradient(), "JPEG", quality=80) + zip_bytes()


# --- the corpus ----------------------------------------------------------------------------------

CORPUS: dict[str, Callable[[], bytes]] = {
    "empty.jpg": lambda: b"",
    "text_named.jpg": lambda: b"shopping list: milk, eggs, bread\n" * 4,
    "truncated.jpg": lambda: encoded(gradient(), "JPEG", quality=80)[:400],
    "truncated.png": lambda: png(64, 64)[:60],
    "short_idat.png": lambda: png(400, 300, rows=10),
    "truncated.webp": webp_truncated,
    "corrupt_body.jpg": corrupt_jpeg_body,
    "corrupt_crc.png": corrupt_png_crc,
    "header_30000x30000.png": lambda: png(30000, 30000, rows=1),
    "header_30000x30000.jpg": lambda: jpeg_with_size(30000, 30000),
    "header_65535x65535.gif": lambda: gif_screen(65535, 65535),
    "header_30000x30000.bmp": lambda: bmp_header(30000, 30000),
    "bomb_1bit_20000x20000.png": lambda: png(20000, 20000, bit_depth=1),
    "bomb_grey_8000x8000.png": lambda: png(8000, 8000),
    "bomb_grey_7000x7000.png": lambda: png(7000, 7000),
    "bomb_ztxt.png": png_ztxt_bomb,
    "bomb_iccp.png": png_iccp_bomb,
    "animated_3000_frames.gif": lambda: gif_frames(3000),
    "polyglot_jpeg_zip.jpg": mpo_like_jpeg_with_zip,
    "polyglot_gif_js.gif": gif_script_polyglot,
    "polyglot_html_gif.gif": html_gif_polyglot,
    "huge_exif.jpg": huge_exif,
    "looping_exif.jpg": looping_exif,
    "image.svg": svg,
    "svg_named.png": svg,
    "heic_like.heic": heic_like,
    "pdf_named.jpg": lambda: (
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
    ),
    "tiff.tif": tiff,
    "zip_named.jpg": zip_bytes,
    "cmyk_face.jpg": cmyk_jpeg,
    "grey16_face.png": grey16_png,
    "rgb48.png": rgb48_png,
}


def main() -> None:
    FILES.mkdir(exist_ok=True)
    for old in FILES.iterdir():
        if old.name not in CORPUS:
            old.unlink()
    total = 0
    for name, build in CORPUS.items():
        data = build()
        (FILES / name).write_bytes(data)
        total += len(data)
        print(f"{len(data):>9,d}  {name}")
    print(f"{total:>9,d}  in {len(CORPUS)} files")


if __name__ == "__main__":
    main()
