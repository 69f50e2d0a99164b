"""The torch-free weight reader: the real file, refused classes, truncation and tampering."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.catdog.backbone.efficientnet_lite import (
    WEIGHTS_SHA256,
    default_weights_path,
    load_lite0_weights,
)
from cloud_trainer.catdog.backbone.torch_legacy import (
    LEGACY_MAGIC,
    LEGACY_PROTOCOL,
    ForbiddenPickleError,
    WeightFileError,
    load_legacy_weights,
    read_legacy_state_dict,
)


@pytest.fixture(scope="module")
def weight_bytes() -> bytes:
    return default_weights_path().read_bytes()


def _header() -> bytes:
    out = io.BytesIO()
    for item in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}):
        pickle.dump(item, out, protocol=2)
    return out.getvalue()


class _RunsCommand:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_real_file_loads_with_expected_tensors() -> None:
    weights = load_lite0_weights()
    assert len(weights) == 296
    assert sum(int(v.size) for v in weights.values()) == 4_694_073
    assert weights["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert weights["_blocks.1._expand_conv.weight"].shape == (96, 16, 1, 1)
    assert weights["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert weights["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert weights["_fc.weight"].shape == (1000, 1280)
    assert weights["_bn0.num_batches_tracked"].dtype == np.int64
    assert all(np.isfinite(v).all() for v in weights.values() if v.dtype == np.float32)


def test_pickle_naming_another_class_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    path.write_bytes(_header() + pickle.dumps(_RunsCommand(), protocol=2))
    with pytest.raises(ForbiddenPickleError, match=r"posix\.system|os\.system"):
        load_legacy_weights(path)


def test_header_naming_a_builtin_is_refused() -> None:
    payload = pickle.dumps(eval, protocol=4)  # a global reference to builtins.eval
    with pytest.raises(ForbiddenPickleError, match=r"builtins\.eval"):
        read_legacy_state_dict(payload)


@pytest.mark.parametrize("keep", [2_000, 40_000, 9_000_000])
def test_truncated_file_gives_clear_error(tmp_path: Path, weight_bytes: bytes, keep: int) -> None:
    path = tmp_path / "cut.pth"
    path.write_bytes(weight_bytes[:keep])
    with pytest.raises(WeightFileError, match="truncated"):
        load_legacy_weights(path)


def test_tampered_file_fails_the_sha256_check(tmp_path: Path, weight_bytes: bytes) -> None:
    data = bytearray(weight_bytes)
    data[-100] ^= 0x01  # one bit of one weight
    path = tmp_path / default_weights_path().name
    path.write_bytes(bytes(data))
    assert hashlib.sha256(data).hexdigest() != WEIGHTS_SHA256
    with pytest.raises(WeightFileError, match="sha256"):
        load_lite0_weights(path)


def test_not_a_weight_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "photo.pth"
    path.write_bytes(b"\xff\xd8\xff\xe0 not a pickle at all")
    with pytest.raises(WeightFileError, match=r"photo\.pth"):
        load_legacy_weights(path)
