"""The strict base class of every config model: unknown keys are errors, fields documented."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """Base of all device config models (YAML in ``device-configs/``).

    Every field carries a title and a description: the same models validate the
    operator's YAML and generate the reference docs.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_default=True,
        use_attribute_docstrings=False,
    )
