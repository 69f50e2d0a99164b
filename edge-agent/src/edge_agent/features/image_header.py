"""Image size read from the file header, so a decompression bomb is refused before decoding."""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from typing import Any

# 24 MP: a 6000x4000 still camera, or a 4K UHD frame (8.3 MP) almost three times over; an 8K
# camera (33 MP) needs the limit raised. The models take a few hundred pixels a side, so
# larger frames buy nothing, and decoded as BGR they cost 72 MB before the decoder's buffers.
DEFAULT_MAX_MEGAPIXELS = 24.0
# The highest cap a config may set, and OpenCV's own cap (below).
MAX_CONFIGURABLE_MEGAPIXELS = 256.0
OPENCV_PIXEL_CAP = int(MAX_CONFIGURABLE_MEGAPIXELS * 1_000_000)
HEADER_FORMATS = frozenset({"png", "jpeg", "gif", "bmp", "webp", "tiff"})

# Second line of defence, for a decode this module's check does not guard: OpenCV refuses
# (cv2.error) images over OPENCV_IO_MAX_IMAGE_PIXELS, 2**30 unless set. It reads the
# variable once, when cv2 loads, so this holds only where this module is imported before
# cv2: the agent's config imports it ahead of every cv2 user. An operator's value wins.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(OPENCV_PIXEL_CAP))

_PNG = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers: every JPEG process (baseline, progressive, lossless, arithmetic).
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Markers libjpeg accepts before the frame and skips by their length.
_JPEG_SKIPPED = frozenset({0xC4, 0xCC, 0xDB, 0xDC, 0xDD, 0xFE, *range(0xE0, 0xF0)})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
# A marker: any run of 0xFF fill bytes, then the code (bytes before the run are skipped).
_JPEG_MARKER = re.compile(rb"\xff+([^\xff])", re.DOTALL)


class ImageHeaderError(ValueError):
    """The bytes are not an image this reader knows, or its header is cut off or invalid."""


class ImageTooLarge(ValueError):
    """The header claims more pixels than allowed; the message names both."""

    def __init__(self, header: ImageHeader, max_pixels: int) -> None:
        super().__init__(
            f"{header.format} image of {header.width}x{header.height} px "
            f"({header.pixels / 1e6:.1f} MP) exceeds the limit of {max_pixels / 1e6:.1f} MP"
        )
        self.header = header
        self.max_pixels = max_pixels


@dataclass(frozen=True, slots=True)
class ImageHeader:
    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _unpack(fmt: str, data: bytes, offset: int) -> tuple[Any, ...]:
    if offset < 0 or offset + struct.calcsize(fmt) > len(data):
        raise ImageHeaderError("header cut off")
    return struct.unpack_from(fmt, data, offset)


def _sized(fmt: str, width: int, height: int) -> ImageHeader:
    if width <= 0 or height <= 0:
        raise ImageHeaderError(f"{fmt} header gives an empty size {width}x{height}")
    return ImageHeader(fmt, width, height)


def _png(data: bytes) -> ImageHeader:
    length, kind, width, height = _unpack(">I4sII", data, 8)
    if kind != b"IHDR" or length != 13:
        raise ImageHeaderError("PNG does not start with its IHDR chunk")
    return _sized("png", width, height)


def _jpeg(data: bytes) -> ImageHeader:
    """Walk the markers as libjpeg does (garbage between them skipped) to the first frame."""
    i = 2
    while True:
        found = _JPEG_MARKER.search(data, i)
        if found is None:
            raise ImageHeaderError("JPEG ends before its frame header")
        marker = found.group(1)[0]
        i = found.end()
        if marker == 0x00 or marker in _JPEG_STANDALONE:
            continue
        if marker in _SOF:
            _length, _precision, height, width = _unpack(">HBHH", data, i)
            return _sized("jpeg", width, height)
        if marker not in _JPEG_SKIPPED:
            raise ImageHeaderError(f"JPEG marker 0x{marker:02X} before the frame header")
        (length,) = _unpack(">H", data, i)
        if length < 2:
            raise ImageHeaderError("JPEG segment with an invalid length")
        i += length


def _gif(data: bytes) -> ImageHeader:
    """The logical screen, widened to the first frame if that frame overhangs it."""
    screen_w, screen_h, flags = _unpack("<HHB", data, 6)
    palette = 3 << ((flags & 7) + 1) if flags & 0x80 else 0
    i = 13 + palette
    while True:
        (block,) = _unpack("B", data, i)
        if block == 0x2C:
            left, top, width, height = _unpack("<HHHH", data, i + 1)
            if width == 0 or height == 0:
                raise ImageHeaderError("GIF frame of size zero")
            return _sized("gif", max(screen_w, left + width), max(screen_h, top + height))
        if block != 0x21:
            raise ImageHeaderError(f"GIF block 0x{block:02X} before the first frame")
        i += 2  # introducer and label, then sub-blocks up to an empty one
        while True:
            (size,) = _unpack("B", data, i)
            i += 1 + size
            if size == 0:
                break


def _bmp(data: bytes) -> ImageHeader:
    (info_size,) = _unpack("<I", data, 14)
    if info_size == 12:
        width, height = _unpack("<HH", data, 18)
    elif 16 <= info_size <= 4096:
        width, height = _unpack("<ii", data, 18)
    else:
        raise ImageHeaderError(f"BMP info header of {info_size} bytes")
    return _sized("bmp", width, abs(height))


def _webp(data: bytes) -> ImageHeader:
    (chunk,) = _unpack("4s", data, 12)
    if chunk == b"VP8 ":
        start, width, height = _unpack("<3sHH", data, 23)
        if start != b"\x9d\x01\x2a":
            raise ImageHeaderError("WebP VP8 frame without its start code")
        return _sized("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":
        signature, bits = _unpack("<BI", data, 20)
        if signature != 0x2F:
            raise ImageHeaderError("WebP VP8L frame without its signature")
        return _sized("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        w0, w1, w2, h0, h1, h2 = _unpack("<6B", data, 24)
        return _sized("webp", (w0 | w1 << 8 | w2 << 16) + 1, (h0 | h1 << 8 | h2 << 16) + 1)
    raise ImageHeaderError(f"WebP starting with an unknown chunk {chunk!r}")


def _tiff(data: bytes) -> ImageHeader:
    """ImageWidth and ImageLength of the first directory (what a decoder reads by default)."""
    order = "<" if data[:2] == b"II" else ">"
    (version,) = _unpack(order + "H", data, 2)
    big = version == 43
    if big:
        (offset,) = _unpack(order + "Q", data, 8)
        (count,) = _unpack(order + "Q", data, offset)
        entry, first = 20, offset + 8
    else:
        (offset,) = _unpack(order + "I", data, 4)
        (count,) = _unpack(order + "H", data, offset)
        entry, first = 12, offset + 2
    if count > 4096:
        raise ImageHeaderError(f"TIFF directory of {count} entries")
    size: dict[int, int] = {}
    for n in range(count):
        at = first + n * entry
        tag, kind = _unpack(order + "HH", data, at)
        if tag not in (256, 257):
            continue
        value_at = at + (12 if big else 8)
        if kind == 3:
            (size[tag],) = _unpack(order + "H", data, value_at)
        elif kind == 4:
            (size[tag],) = _unpack(order + "I", data, value_at)
        elif kind == 16 and big:
            (size[tag],) = _unpack(order + "Q", data, value_at)
        else:
            raise ImageHeaderError(f"TIFF size tag {tag} of type {kind}")
    if 256 not in size or 257 not in size:
        raise ImageHeaderError("TIFF directory without ImageWidth and ImageLength")
    return _sized("tiff", size[256], size[257])


def sniff_format(data: bytes) -> str | None:
    """The image format from the first bytes, whatever the file name or content type says."""
    if data.startswith(_PNG):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return None


_READERS = {"png": _png, "jpeg": _jpeg, "gif": _gif, "bmp": _bmp, "webp": _webp, "tiff": _tiff}


def read_header(data: bytes) -> ImageHeader:
    """Format, width and height without decoding; ImageHeaderError for anything else."""
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageHeaderError("not a PNG, JPEG, GIF, BMP, WebP or TIFF image")
    return _READERS[fmt](data)


def check_image_size(
    data: bytes, max_pixels: int, formats: frozenset[str] = HEADER_FORMATS
) -> ImageHeader:
    """The header of an image that may be decoded: a known format within ``max_pixels``.

    Raises ImageHeaderError (unknown, unwanted or broken header) or ImageTooLarge.
    """
    header = read_header(data)
    if header.format not in formats:
        raise ImageHeaderError(f"{header.format} images are not accepted here")
    if header.pixels > max_pixels:
        raise ImageTooLarge(header, max_pixels)
    return header


def pixel_limit(megapixels: float) -> int:
    return int(megapixels * 1_000_000)
