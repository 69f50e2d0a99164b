"""Torch-free reader for legacy (pre-1.6) PyTorch weight files: numpy and a restricted unpickler."""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_FILE_BYTES = 1024 * 1024 * 1024

# The whole vocabulary of the legacy state-dict format. Anything else in a downloaded file is
# refused: a general unpickler would run whatever callable the file names.
_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class WeightFileError(Exception):
    """The weight file is missing, corrupt, truncated, tampered with, or not the legacy format."""


class ForbiddenPickleError(WeightFileError):
    """The file's pickle names a class or function outside the legacy format's vocabulary."""


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: np.dtype[Any]


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype[Any]
    numel: int


@dataclass(frozen=True)
class _PendingTensor:
    """A tensor whose storage bytes come later in the file."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(
    storage: object, offset: object, size: object, stride: object, *_: object
) -> _PendingTensor:
    if not isinstance(storage, _StorageRef):
        raise WeightFileError(f"tensor built from {type(storage).__name__}, not a storage")
    if not isinstance(offset, int) or not isinstance(size, tuple) or not isinstance(stride, tuple):
        raise WeightFileError("tensor header has a malformed offset, size or stride")
    if len(size) != len(stride) or not all(isinstance(v, int) and v >= 0 for v in size + stride):
        raise WeightFileError(f"tensor size {size} and stride {stride} do not match")
    return _PendingTensor(storage, offset, tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise ForbiddenPickleError(f"weight file names {module}.{name}, which is not allowed")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise WeightFileError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise WeightFileError(f"malformed storage reference {pid!r:.80}")
        return _StorageRef(str(key), storage_type.dtype, numel)


def _load_pickle(stream: IO[bytes], what: str) -> Any:
    try:
        return _RestrictedUnpickler(stream).load()
    except WeightFileError:
        raise
    except EOFError as e:
        raise WeightFileError(f"weight file is truncated: it ends inside the {what}") from e
    except (pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError) as e:
        raise WeightFileError(f"weight file is corrupt in the {what}: {e}") from e


def _read_storage(stream: IO[bytes], ref: _StorageRef) -> npt.NDArray[Any]:
    head = stream.read(8)
    if len(head) < 8:
        raise WeightFileError(f"weight file is truncated: storage {ref.key} is missing")
    (count,) = struct.unpack("<q", head)
    if count != ref.numel:
        raise WeightFileError(f"storage {ref.key} holds {count} elements, header said {ref.numel}")
    nbytes = count * ref.dtype.itemsize
    raw = stream.read(nbytes)
    if len(raw) < nbytes:
        raise WeightFileError(
            f"weight file is truncated: storage {ref.key} has {len(raw)} of {nbytes} bytes"
        )
    return np.frombuffer(raw, dtype=ref.dtype)


def _materialise(name: str, t: _PendingTensor, storage: npt.NDArray[Any]) -> npt.NDArray[Any]:
    if not t.size:
        if t.offset >= storage.size:
            raise WeightFileError(f"tensor {name} points outside its storage")
        return np.array(storage[t.offset])
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride, strict=True))
    if any(n == 0 for n in t.size):
        return np.zeros(t.size, dtype=storage.dtype)
    if t.offset < 0 or last >= storage.size:
        raise WeightFileError(f"tensor {name} points outside its storage")
    view = np.lib.stride_tricks.as_strided(
        storage[t.offset :],
        shape=t.size,
        strides=tuple(s * storage.dtype.itemsize for s in t.stride),
        writeable=False,
    )
    return np.ascontiguousarray(view)


def read_legacy_state_dict(data: bytes) -> dict[str, npt.NDArray[Any]]:
    """Parse a legacy-format state dict from its bytes into name → numpy array."""
    stream = io.BytesIO(data)
    magic = _load_pickle(stream, "header")
    if magic != LEGACY_MAGIC:
        raise WeightFileError("not a legacy PyTorch weight file (magic number differs)")
    protocol = _load_pickle(stream, "header")
    if protocol != LEGACY_PROTOCOL:
        raise WeightFileError(f"unsupported legacy protocol version {protocol!r}")
    sys_info = _load_pickle(stream, "header")
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise WeightFileError("only little-endian legacy weight files are supported")
    state = _load_pickle(stream, "state dict")
    if not isinstance(state, dict):
        raise WeightFileError(f"weight file holds a {type(state).__name__}, not a state dict")
    keys = _load_pickle(stream, "storage index")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise WeightFileError("weight file has a malformed storage index")
    refs: dict[str, _StorageRef] = {}
    for name, value in state.items():
        if not isinstance(value, _PendingTensor):
            raise WeightFileError(f"state dict entry {name!r} is not a tensor")
        refs.setdefault(value.storage.key, value.storage)
    missing = set(refs) - set(keys)
    if missing:
        raise WeightFileError(f"storage index lacks {len(missing)} storages used by tensors")
    storages = {}
    for key in keys:
        if key not in refs:
            raise WeightFileError(f"storage index names unused storage {key}")
        storages[key] = _read_storage(stream, refs[key])
    if stream.read(1):
        raise WeightFileError("weight file has trailing bytes after its last storage")
    return {
        str(name): _materialise(str(name), t, storages[t.storage.key]) for name, t in state.items()
    }


def load_legacy_weights(
    path: Path, expected_sha256: str | None = None
) -> dict[str, npt.NDArray[Any]]:
    """Read ``path`` (checking its sha256 when given) into name → numpy array."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise WeightFileError(f"{path}: {size} bytes exceeds the {MAX_FILE_BYTES} byte cap")
        data = path.read_bytes()
    except OSError as e:
        raise WeightFileError(f"cannot read weight file {path}: {e.strerror or e}") from e
    if expected_sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected_sha256:
            raise WeightFileError(
                f"{path}: sha256 {digest} differs from the expected {expected_sha256}"
            )
    try:
        weights = read_legacy_state_dict(data)
    except WeightFileError as e:
        raise type(e)(f"{path}: {e}") from e
    log.debug("read %s tensors from %s", len(weights), path)
    return weights
