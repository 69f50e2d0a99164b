"""The provenance fields of a sample upload, typed and documented as a form really sends them.

A form has no null and no numbers, only text: FastAPI reads an empty optional field as not
sent, so each schema admits "" beside the field's own type and none of them admits null.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Form
from pydantic import AwareDatetime, BeforeValidator, Field, StringConstraints, WithJsonSchema

from edge_agent.protocol.topics import IDENT_PATTERN

# RFC 3339, as the schema's ``date-time`` says; pydantic alone would also take unix seconds.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
# The store's column is a 32-bit INTEGER on PostgreSQL: a larger version is a 422, not a 500.
MAX_MODEL_VERSION = 2**31 - 1


def _blank_or(schema: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [schema, {"type": "string", "const": ""}]})


def _rfc3339(value: object) -> object:
    if isinstance(value, str) and not RFC3339.fullmatch(value):
        raise ValueError("expected an RFC 3339 date-time such as 2026-01-31T12:00:00Z")
    return value


CapturedAt = Annotated[
    AwareDatetime | None,
    Form(description="When the device captured it."),
    BeforeValidator(_rfc3339),
    _blank_or({"type": "string", "format": "date-time"}),
]
ModelName = Annotated[
    Annotated[str, StringConstraints(pattern=IDENT_PATTERN)] | None,
    Form(description="The model that saw it."),
    _blank_or({"type": "string", "pattern": IDENT_PATTERN}),
]
ModelVersion = Annotated[
    Annotated[int, Field(ge=0, le=MAX_MODEL_VERSION)] | None,
    Form(description="That model's registry version."),
    _blank_or({"type": "integer", "minimum": 0, "maximum": MAX_MODEL_VERSION}),
]
SampleLabel = Annotated[
    str | None,
    Form(max_length=64, description="A label, if the device or a person knows it."),
    WithJsonSchema({"type": "string", "maxLength": 64}),
]
CaptureReason = Annotated[
    str | None,
    Form(max_length=256, description="Why it was captured (drift, low confidence, ...)."),
    WithJsonSchema({"type": "string", "maxLength": 256}),
]
