"""Image-folder ingestion: decode every file, convert or skip odd ones, drop exact duplicates."""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.features.image_header import ImageHeaderError, read_header, sniff_format

log = logging.getLogger(__name__)

MIN_SIDE = 32
MAX_SIDE = 4096
MAX_PIXELS = 64_000_000
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_PROBLEMS_LISTED = 200
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
_SUFFIX_FORMAT = {".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff"}
_GROUP = re.compile(r"^(?P<group>.+?)[_\- ]?\d+$")
# A class folder named ``none`` holds frames without a pet: the model's ``no_pet`` outcome.
NONE_FOLDER = "none"
NO_PET = "no_pet"
# Files of public data sets whose content is not what their folder says, by content hash:
# skipped with the reason in the data report rather than trained or scored as labelled.
KNOWN_MISLABELLED = {
    "d586a964aefbdd3450a4d151bfaa14a6dc2b38f42e7fa638bdc39735f9548f0b": (
        "known-mislabelled: OpenCV's chicky_512 sample shows a dog, not an empty scene"
    ),
}


class ImageRejected(Exception):
    """One file cannot be used as a training image; ``reason`` is the report's category."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class DatasetError(Exception):
    """The folder as a whole is unusable (missing, fewer than two classes, a class left empty)."""


@dataclass(frozen=True)
class ImageRecord:
    """One usable image: where it is, its class, its content hash and its source group."""

    path: Path
    label: str
    sha256: str
    group: str
    height: int
    width: int


class FileProblem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str
    outcome: str
    reason: str


class DataReport(BaseModel):
    """What ingestion found: counts, conversions and skips, so nothing vanishes silently."""

    model_config = ConfigDict(extra="forbid")

    root: str
    labels: list[str]
    n_files: int
    n_images: int
    per_class: dict[str, int]
    converted: dict[str, int] = Field(default_factory=dict)
    skipped: dict[str, int] = Field(default_factory=dict)
    duplicates: int = 0
    problems: list[FileProblem] = Field(default_factory=list)
    data_version: str


def _truncated(data: bytes, fmt: str) -> bool:
    # OpenCV decodes a cut-off JPEG or PNG into a partly grey image with only a warning.
    if fmt == "jpeg":
        return b"\xff\xd9" not in data[-1024:]
    if fmt == "png":
        return b"IEND" not in data[-64:]
    return False


def decode_image(data: bytes, suffix: str = "") -> tuple[npt.NDArray[np.uint8], list[str]]:
    """Decode to an HxWx3 uint8 BGR frame; the list says which conversions were needed.

    Raises ImageRejected for anything that cannot honestly become a training image.
    """
    if not data:
        raise ImageRejected("empty", "file has no bytes")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageRejected("not-an-image", "content is not a known image format")
    conversions: list[str] = []
    claimed = _SUFFIX_FORMAT.get(suffix.lower(), suffix.lower().lstrip("."))
    if claimed and claimed != fmt:
        conversions.append(f"{fmt}-named-{claimed}")
    if _truncated(data, fmt):
        raise ImageRejected("truncated", f"{fmt} data ends before its end marker")
    # The size comes from the header before decoding: a file of a few hundred bytes can
    # claim a frame of gigabytes, and the decoder would allocate it all.
    try:
        header = read_header(data)
    except ImageHeaderError as e:
        raise ImageRejected("corrupt", f"{fmt} header: {e}") from e
    if header.pixels > MAX_PIXELS:
        raise ImageRejected(
            "too-large", f"{header.width}x{header.height} exceeds {MAX_PIXELS} pixels"
        )
    try:
        image: Any = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # OpenCV's own size limits
        raise ImageRejected("corrupt", f"OpenCV refused this {fmt} data") from e
    if image is None or image.size == 0:
        raise ImageRejected("corrupt", f"OpenCV cannot decode this {fmt} data")
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageRejected("too-small", f"{w}x{h} is below {MIN_SIDE} px")
    if h * w > MAX_PIXELS:
        raise ImageRejected("too-large", f"{w}x{h} exceeds {MAX_PIXELS} pixels")
    if image.dtype != np.uint8:
        conversions.append(f"{image.dtype}-to-8bit")
        scale = 255.0 / max(float(np.iinfo(image.dtype).max), 1.0) if image.dtype.kind == "u" else 1
        image = np.clip(image.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        conversions.append("grayscale")
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        conversions.append("alpha")
        image = _flatten_alpha(image)
    elif image.shape[2] != 3:
        raise ImageRejected("corrupt", f"{image.shape[2]} colour channels")
    if max(h, w) > MAX_SIDE:
        conversions.append("downscaled")
        scale = MAX_SIDE / max(h, w)
        image = cv2.resize(
            image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
        )
    frame: npt.NDArray[np.uint8] = np.ascontiguousarray(image, dtype=np.uint8)
    return frame, conversions


def _flatten_alpha(bgra: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Composite on white: transparent pixels often hold arbitrary colours underneath."""
    alpha = bgra[..., 3:4].astype(np.float32) / 255.0
    bgr = bgra[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    out: npt.NDArray[np.uint8] = np.clip(bgr + 0.5, 0, 255).astype(np.uint8)
    return out


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    """Read and decode one file as ingestion does (conversions applied)."""
    image, _ = decode_image(_read_capped(path), path.suffix)
    return image


def _read_capped(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImageRejected("too-large", f"{size} bytes exceeds {MAX_FILE_BYTES}")
        return path.read_bytes()
    except OSError as e:
        raise ImageRejected("unreadable", str(e.strerror or e)) from e


def group_of(path: Path) -> str:
    """The source group a file belongs to (breed, camera, session): its name without a number."""
    match = _GROUP.match(path.stem)
    return match.group("group") if match else path.stem


def data_version(records: list[ImageRecord]) -> str:
    """A short, order-free fingerprint of what was trained on: labels and content hashes."""
    lines = sorted(f"{r.label}\t{r.sha256}" for r in records)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def class_folders(root: Path, min_classes: int = 2) -> list[Path]:
    if not root.is_dir():
        raise DatasetError(f"data folder {root} does not exist or is not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < min_classes:
        raise DatasetError(
            f"{root} must hold one sub-folder per class (at least {min_classes}); found "
            f"{[p.name for p in folders]}"
        )
    return folders


def label_of(folder: str) -> str:
    """The label a class folder's images carry (``none`` holds the no_pet frames)."""
    return NO_PET if folder == NONE_FOLDER else folder


def _files_under(folder: Path) -> list[Path]:
    return [f for f in sorted(folder.rglob("*")) if f.is_file() and not f.name.startswith(".")]


def scan_folder(
    root: Path,
    progress: Callable[[int, int], None] | None = None,
    *,
    min_classes: int = 2,
    negatives: Path | None = None,
) -> tuple[list[ImageRecord], DataReport]:
    """Every usable image under ``root/<class>/``, and the report of what was not used.

    A ``none/`` folder, and every image under ``negatives``, are frames without a pet
    (label ``no_pet``, listed last). Scoring may use a folder of one class (e.g. only cats);
    training needs two or more pet classes.
    """
    folders = class_folders(root, 1)
    pet_folders = [f for f in folders if f.name != NONE_FOLDER]
    if min_classes > 1 and len(pet_folders) < min_classes:
        raise DatasetError(
            f"{root} must hold at least {min_classes} pet class folders besides "
            f"{NONE_FOLDER}/; found {[p.name for p in pet_folders]}"
        )
    none_folder = root / NONE_FOLDER
    sources = [(f.name, f) for f in pet_folders]
    if none_folder.is_dir():
        sources.append((NO_PET, none_folder))
    if negatives is not None:
        if not negatives.is_dir():
            raise DatasetError(f"negatives folder {negatives} does not exist or is not a folder")
        sources.append((NO_PET, negatives))
    files = [(label, f) for label, folder in sources for f in _files_under(folder)]
    records: list[ImageRecord] = []
    seen: dict[str, Path] = {}
    converted: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    problems: list[FileProblem] = []
    duplicates = 0

    def shown(f: Path) -> str:
        return str(f.relative_to(root)) if f.is_relative_to(root) else str(f)

    def note(f: Path, outcome: str, reason: str) -> None:
        if len(problems) < MAX_PROBLEMS_LISTED:
            problems.append(FileProblem(file=shown(f), outcome=outcome, reason=reason))

    for i, (label, f) in enumerate(files):
        if progress is not None:
            progress(i + 1, len(files))
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            skipped["not-an-image"] += 1
            note(f, "skipped", f"not-an-image: suffix {f.suffix or '(none)'}")
            continue
        try:
            data = _read_capped(f)
            image, conversions = decode_image(data, f.suffix)
        except ImageRejected as e:
            skipped[e.reason] += 1
            note(f, "skipped", str(e))
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in KNOWN_MISLABELLED:
            skipped["known-mislabelled"] += 1
            note(f, "skipped", KNOWN_MISLABELLED[digest])
            continue
        if digest in seen:
            duplicates += 1
            note(f, "duplicate", f"same bytes as {shown(seen[digest])}")
            continue
        seen[digest] = f
        for c in conversions:
            converted[c] += 1
        if conversions:
            note(f, "converted", ", ".join(conversions))
        h, w = image.shape[:2]
        records.append(ImageRecord(f, label, digest, f"{label}/{group_of(f)}", h, w))

    labels = list(dict.fromkeys(label for label, _ in sources))
    per_class = {label: sum(1 for r in records if r.label == label) for label in labels}
    empty = [label for label, n in per_class.items() if n == 0]
    if empty:
        raise DatasetError(f"no usable images for class(es) {empty} under {root}")
    report = DataReport(
        root=str(root),
        labels=labels,
        n_files=len(files),
        n_images=len(records),
        per_class=per_class,
        converted=dict(converted),
        skipped=dict(skipped),
        duplicates=duplicates,
        problems=problems,
        data_version=data_version(records),
    )
    log.info(
        "ingested %s images of %s files from %s: converted %s, skipped %s, duplicates %s",
        report.n_images,
        report.n_files,
        root,
        dict(converted),
        dict(skipped),
        duplicates,
    )
    return records, report
