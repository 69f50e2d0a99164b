"""Markdown reference of the device config, generated from the same models that validate it."""

from __future__ import annotations

import inspect
import re
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from edge_agent.config.device import DeviceConfig


def _models(annotation: Any) -> list[type[BaseModel]]:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    text = re.sub(r"\b(edge_agent|typing|pathlib|pydantic)\.[\w.]*?(?=\w+\b(?!\.))", "", text)
    return text.replace("|", "\\|")


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    if field.default_factory is not None:
        return "(section)" if _models(field.annotation) else "[]"
    return f"`{field.default!r}`" if field.default is not None else "—"


def config_reference(root: type[BaseModel] = DeviceConfig) -> str:
    """One table per section, in the order an operator meets them in the YAML."""
    out: list[str] = []
    queue: list[tuple[str, type[BaseModel]]] = [("(top level)", root)]
    seen: set[type[BaseModel]] = set()
    while queue:
        path, model = queue.pop(0)
        if model in seen:
            continue
        seen.add(model)
        out += [f"### `{path}` — {model.__name__}", "", (model.__doc__ or "").strip(), ""]
        out += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, field in model.model_fields.items():
            meaning = (field.description or field.title or "").replace("|", "\\|")
            out.append(
                f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {meaning} |"
            )
            prefix = name if path == "(top level)" else f"{path}.{name}"
            queue += [(prefix, sub) for sub in _models(field.annotation)]
        out.append("")
    return "\n".join(out)
