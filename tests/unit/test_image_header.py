"""Image header reader: sizes match what OpenCV decodes, bombs are sized without decoding, and
no byte string makes it raise anything but its own error."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.features.image_header import (
    HEADER_FORMATS,
    ImageHeader,
    ImageHeaderError,
    ImageTooLarge,
    check_image_size,
    read_header,
)
from tests.support.image_bombs import bmp_bomb, gif_bomb, jpeg_bomb, png_bomb, webp_bomb

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
# Encoders OpenCV has, with the parameters that pick each variant of a format.
ENCODINGS: list[tuple[str, list[int]]] = [
    (".png", []),
    (".jpg", []),
    (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    (".bmp", []),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),  # lossy: VP8
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),  # lossless: VP8L
    (".tiff", []),
    (".gif", []),
]


def _decoded_size(data: bytes) -> tuple[int, int] | None:
    flags = cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    return None if image is None else (image.shape[1], image.shape[0])


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())


def _encode(ext: str, params: list[int], width: int, height: int) -> bytes:
    frame = np.random.default_rng(width * 7919 + height).integers(
        0, 255, (height, width, 3), np.uint8
    )
    ok, data = cv2.imencode(ext, frame, params)
    assert ok
    return data.tobytes()


def test_every_real_photo_has_the_size_opencv_decodes(shared_data: Path) -> None:
    files = _images_in(shared_data) + _images_in(ROOT / "cloud-trainer" / "src")
    assert len(files) > 800
    formats: set[str] = set()
    for path in files:
        data = path.read_bytes()
        header = read_header(data)
        formats.add(header.format)
        assert (header.width, header.height) == _decoded_size(data), path
    # The pets folder holds a GIF and a PNG named .jpg: sniffed by content, not by name.
    assert formats >= {"jpeg", "png", "gif"}


@settings(max_examples=60, deadline=None)
@given(
    encoding=st.sampled_from(ENCODINGS),
    width=st.integers(1, 300),
    height=st.integers(1, 300),
)
def test_every_format_opencv_writes_is_sized_like_it_decodes(
    encoding: tuple[str, list[int]], width: int, height: int
) -> None:
    data = _encode(*encoding, width, height)
    header = read_header(data)
    assert (header.width, header.height) == (width, height) == _decoded_size(data)
    assert header.format in HEADER_FORMATS


@pytest.mark.parametrize(
    ("bomb", "fmt"),
    [(png_bomb, "png"), (jpeg_bomb, "jpeg"), (gif_bomb, "gif"), (webp_bomb, "webp")],
)
def test_bombs_are_sized_from_their_header_and_refused(bomb, fmt) -> None:
    data = bomb(16000, 9000) if fmt != "png" else bomb(1600, 900)
    header = read_header(data)
    expected = (16000, 9000) if fmt != "png" else (1600, 900)
    assert (header.format, header.width, header.height) == (fmt, *expected)
    with pytest.raises(ImageTooLarge) as info:
        check_image_size(data, max_pixels=1_000_000)
    w, h = expected
    assert str(info.value).startswith(f"{fmt} image of {w}x{h} px ({w * h / 1e6:.1f} MP)")
    assert str(info.value).endswith("exceeds the limit of 1.0 MP")


def test_bmp_header_sizes_and_top_down_rows() -> None:
    assert read_header(bmp_bomb(30000, 30000)) == ImageHeader("bmp", 30000, 30000)
    assert read_header(bmp_bomb(640, -480)).height == 480  # negative height: rows top-down


def test_big_tiff_is_read_from_its_first_directory() -> None:
    ifd = struct.pack("<Q", 2)
    ifd += struct.pack("<HHQQ", 256, 16, 1, 70000) + struct.pack("<HHQQ", 257, 4, 1, 50000)
    data = b"II+\x00" + struct.pack("<HHQ", 8, 0, 16) + ifd + bytes(8)
    assert read_header(data) == ImageHeader("tiff", 70000, 50000)


def test_a_jpeg_walk_skips_fill_bytes_and_app_segments() -> None:
    plain = _encode(".jpg", [], 40, 30)
    padded = plain[:2] + b"\xff\xe1\x00\x06Exif" + b"\xff\xff\xff" + plain[2:]
    assert (read_header(padded).width, read_header(padded).height) == (40, 30)
    assert _decoded_size(padded) == (40, 30)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        b"\x89PNG\r\n\x1a\n",  # signature and nothing else
        b"\xff\xd8\xff\xd9",  # SOI then EOI: no frame
        b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x00\x10",  # SOF with height 0 (DNL)
        b"GIF89a\x10\x00\x10\x00\x00\x00\x00\x3b",  # trailer before any frame
        b"RIFF\x00\x00\x00\x00WEBPVP8X",  # cut off
        b"P6\n30000 30000\n255\n",  # PPM: OpenCV reads it, this reader does not
    ],
)
def test_unknown_or_cut_off_headers_are_refused(data: bytes) -> None:
    with pytest.raises(ImageHeaderError):
        read_header(data)


def test_a_format_left_out_of_the_allowed_set_is_refused() -> None:
    tiff = _encode(".tiff", [], 8, 8)
    assert check_image_size(tiff, 100).format == "tiff"
    with pytest.raises(ImageHeaderError, match="tiff images are not accepted"):
        check_image_size(tiff, 100, frozenset({"jpeg", "png"}))


def _headed() -> st.SearchStrategy[bytes]:
    magics = st.sampled_from(
        [
            b"\x89PNG\r\n\x1a\n",
            b"\xff\xd8\xff",
            b"GIF89a",
            b"BM",
            b"RIFF\x00\x00\x00\x00WEBPVP8 ",
            b"RIFF\x00\x00\x00\x00WEBPVP8L",
            b"RIFF\x00\x00\x00\x00WEBPVP8X",
            b"II*\x00",
            b"MM\x00*",
            b"II+\x00",
        ]
    )
    return st.tuples(magics, st.binary(max_size=512)).map(lambda t: t[0] + t[1])


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=256), _headed()))
def test_arbitrary_bytes_raise_only_the_header_error(data: bytes) -> None:
    try:
        header = read_header(data)
    except ImageHeaderError:
        return
    assert header.width > 0 and header.height > 0


_REAL = [_encode(ext, params, 37, 23) for ext, params in ENCODINGS]


@settings(max_examples=600, deadline=None)
@given(
    which=st.sampled_from(range(len(_REAL))),
    cut=st.integers(0, 400),
    flips=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
)
def test_damaged_real_headers_raise_only_the_header_error(
    which: int, cut: int, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(_REAL[which][:cut])
    for at, value in flips:
        if at < len(data):
            data[at] = value
    try:
        header = read_header(bytes(data))
    except ImageHeaderError:
        return
    assert header.pixels > 0


def test_opencv_refuses_a_bomb_by_itself_in_the_agent_process() -> None:
    # The second line: the agent's entry point sets OpenCV's own cap before cv2 loads, so a
    # decode that skipped the header check still cannot allocate a 272 MP frame.
    script = (
        "import sys\n"
        "from edge_agent.cli import build_parser\n"
        "build_parser()\n"  # what `edge-agent ...` does first; it loads cv2 on the way
        "import cv2, numpy as np\n"
        "from tests.support.image_bombs import gif_bomb\n"
        "bomb = np.frombuffer(gif_bomb(16500, 16500), np.uint8)\n"
        "try:\n"
        "    cv2.imdecode(bomb, cv2.IMREAD_COLOR)\n"
        "except cv2.error:\n"
        "    sys.exit(0)\n"
        "sys.exit(3)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0
