"""Decompression bombs: small files whose headers claim enormous images.

- ``png_bomb(width, height)``: a valid grayscale PNG of zeros; the IDAT stream is deflated
  row by row, so building a 30000x30000 bomb holds one row in memory, never the image.
- ``jpeg_bomb(width, height)``: a real 16x16 baseline JPEG whose SOF0 claims ``width`` x
  ``height``; libjpeg decodes the one scan it has and fills the rest of the frame.
- ``gif_bomb`` / ``webp_bomb`` / ``bmp_bomb``: headers claiming huge sizes over tiny bodies
  (OpenCV allocates the GIF canvas; the WebP and BMP ones it refuses once it sees no data).
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IDAT_CHUNK = 1 << 20


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(width: int, height: int) -> bytes:
    """Grayscale 8-bit PNG, every pixel 0; decodes to ``width * height * 3`` bytes as BGR."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    out = bytearray(PNG_SIGNATURE + png_chunk(b"IHDR", ihdr))
    deflate = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then the row's pixels
    pending = bytearray()
    for _ in range(height):
        pending += deflate.compress(row)
        if len(pending) >= _IDAT_CHUNK:
            out += png_chunk(b"IDAT", bytes(pending))
            pending.clear()
    pending += deflate.flush()
    out += png_chunk(b"IDAT", bytes(pending))
    out += png_chunk(b"IEND", b"")
    return bytes(out)


def _sof_offset(jpeg: bytes) -> int:
    i = 2
    while i + 4 <= len(jpeg):
        marker = jpeg[i + 1]
        if marker in (0xC0, 0xC1, 0xC2):
            return i
        i += 2 + struct.unpack(">H", jpeg[i + 2 : i + 4])[0]
    raise ValueError("no SOF marker in the encoded JPEG")


def jpeg_bomb(width: int, height: int) -> bytes:
    ok, encoded = cv2.imencode(".jpg", np.full((16, 16, 3), 127, np.uint8))
    if not ok:
        raise RuntimeError("OpenCV could not encode a 16x16 JPEG")
    data = bytearray(encoded.tobytes())
    sof = _sof_offset(bytes(data))
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def gif_bomb(width: int, height: int) -> bytes:
    """A ``width`` x ``height`` logical screen holding one 1x1 frame: 23 bytes that OpenCV
    decodes into a full-screen canvas."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


def webp_bomb(width: int, height: int) -> bytes:
    """A lossless (VP8L) header claiming ``width`` x ``height`` over a few bytes."""
    bits = (width - 1) | ((height - 1) << 14)
    payload = b"\x2f" + struct.pack("<I", bits) + bytes(16)
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def bmp_bomb(width: int, height: int) -> bytes:
    """A 24-bit BMP header claiming ``width`` x ``height`` with no pixel data behind it."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info
