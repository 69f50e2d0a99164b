"""Encoding and decoding of payloads: canonical JSON in, typed messages or clear errors out."""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from pydantic import BaseModel, TypeAdapter, ValidationError

from edge_agent.protocol.errors import ProtocolError
from edge_agent.protocol.manifest import ReleaseManifest, RolloutRecord
from edge_agent.protocol.messages import (
    MESSAGE_TYPES,
    SUPPORTED_SCHEMA_VERSIONS,
    Message,
    MessageBase,
)

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES: Final = 256 * 1024
_MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)


def canonical_json(data: Any) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, UTF-8, NaN refused. Signatures use it."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def encode(model: BaseModel) -> bytes:
    """Serialise a message or manifest to its canonical wire form."""
    return canonical_json(model.model_dump(mode="json", exclude_none=True))


def _reject_constant(name: str) -> None:
    raise ProtocolError(f"payload contains {name}, which is not valid JSON")


def _load_object(payload: bytes, max_bytes: int) -> dict[str, Any]:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise ProtocolError(f"payload must be bytes, got {type(payload).__name__}")
    size = len(payload)
    if size == 0:
        raise ProtocolError("empty payload")
    if size > max_bytes:
        raise ProtocolError(f"payload of {size} bytes exceeds the limit of {max_bytes} bytes")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(
            f"payload is not UTF-8: invalid byte 0x{payload[e.start]:02x} at offset {e.start}"
        ) from e
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"payload is not valid JSON: {e.msg} at offset {e.pos}") from e
    except RecursionError as e:
        raise ProtocolError("payload is nested too deeply") from e
    except ValueError as e:  # e.g. integers longer than Python's digit limit
        raise ProtocolError(f"payload is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ProtocolError(f"payload must be a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if version is None:
        raise ProtocolError("missing schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError(f"schema_version must be an integer, got {version!r}")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        supported = ", ".join(str(v) for v in sorted(SUPPORTED_SCHEMA_VERSIONS))
        raise ProtocolError(f"unsupported schema_version {version} (this build reads {supported})")
    return data


def describe_validation_error(what: str, error: ValidationError, limit: int = 3) -> str:
    """One line naming the fields that failed, e.g. ``telemetry: cpu_percent: ...``."""
    parts = []
    for item in error.errors(include_url=False)[:limit]:
        where = ".".join(str(p) for p in item["loc"]) or "(message)"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return f"invalid {what}: " + "; ".join(parts)


def decode_message(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Message:
    """Parse a raw MQTT payload into a typed message, or raise ProtocolError."""
    data = _load_object(payload, max_bytes)
    kind = data.get("type")
    if kind is None:
        raise ProtocolError("missing message type")
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
        known = ", ".join(sorted(MESSAGE_TYPES))
        raise ProtocolError(f"unknown message type {kind!r} (known: {known})")
    try:
        return _MESSAGE_ADAPTER.validate_python(data)
    except ValidationError as e:
        raise ProtocolError(describe_validation_error(f"{kind} message", e)) from e


def decode_manifest(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> ReleaseManifest:
    """Parse a release manifest (signature not checked here; see ``signing.verify_manifest``)."""
    data = _load_object(payload, max_bytes)
    try:
        return ReleaseManifest.model_validate(data)
    except ValidationError as e:
        raise ProtocolError(describe_validation_error("release manifest", e)) from e


def decode_rollout_record(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> RolloutRecord:
    """Parse one staged-rollout record (the fleet's rollout history)."""
    data = _load_object(payload, max_bytes)
    try:
        return RolloutRecord.model_validate(data)
    except ValidationError as e:
        raise ProtocolError(describe_validation_error("rollout record", e)) from e


def safe_decode(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Message | ProtocolError:
    """Like ``decode_message`` but never raises: for use inside network threads."""
    try:
        return decode_message(payload, max_bytes=max_bytes)
    except ProtocolError as e:
        return e
    except Exception as e:
        log.exception("unexpected error while decoding a payload")
        return ProtocolError(f"payload could not be decoded: {type(e).__name__}: {e}")


def expect(message: Message, kind: type[MessageBase]) -> MessageBase:
    """Narrow a decoded message to ``kind`` or raise ProtocolError naming both types."""
    if not isinstance(message, kind):
        raise ProtocolError(f"expected a {kind.__name__}, got {type(message).__name__}")
    return message
