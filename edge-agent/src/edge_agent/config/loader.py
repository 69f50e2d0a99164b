"""Reads a device YAML (with ``extends:`` site defaults) and reports errors by file and line."""

from __future__ import annotations

import difflib
import inspect
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from edge_agent.config.device import DeviceConfig
from edge_agent.config.files import path_problem, required_paths

Loc = tuple[str | int, ...]
Origins = dict[Loc, tuple[str, int]]

_SECRET_KEY = re.compile(r"(password|passwd|token|secret|private)", re.IGNORECASE)
# The password runs to the last "@" before the path, as FFmpeg reads it: "p@ss" is hidden too.
_URI_CREDENTIALS = re.compile(r"(?<=://)([^:/@\s]+):([^/\s]*)@")
_MAX_EXTENDS = 8


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem, printed as ``file:line · key.path · value · message``."""

    file: str
    line: int | None
    path: str
    value: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where} · {self.path} · {self.value} · {self.message}"


class ConfigError(ValueError):
    """The config cannot be used; ``issues`` lists every problem found, not just the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


# -- YAML with line numbers ---------------------------------------------------------------


def _walk_nodes(
    node: yaml.Node, file: str, loc: Loc, origins: Origins, issues: list[ConfigIssue]
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                issues.append(ConfigIssue(file, line, _dotted((*loc, key)), "—", "duplicate key"))
            seen.add(key)
            origins[(*loc, key)] = (file, line)
            _walk_nodes(value_node, file, (*loc, key), origins, issues)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            origins[(*loc, index)] = (file, item.start_mark.line + 1)
            _walk_nodes(item, file, (*loc, index), origins, issues)


def _read_yaml(path: Path) -> tuple[dict[str, Any], Origins]:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(
            [ConfigIssue(file, None, "(file)", "—", f"cannot read: {e.strerror or e}")]
        ) from e
    except UnicodeDecodeError as e:
        raise ConfigError([ConfigIssue(file, None, "(file)", "—", "not UTF-8 text")]) from e
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(
            [ConfigIssue(file, line, "(yaml)", "—", f"invalid YAML: {problem}")]
        ) from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [ConfigIssue(file, 1, "(top level)", type(data).__name__, "expected a mapping of keys")]
        )
    origins: Origins = {(): (file, 1)}
    issues: list[ConfigIssue] = []
    if node is not None:
        _walk_nodes(node, file, (), origins, issues)
    if issues:
        raise ConfigError(issues)
    return data, origins


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key (the device wins); lists and scalars are replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_document(path: Path, _depth: int = 0) -> tuple[dict[str, Any], Origins]:
    """The device mapping with its ``extends:`` chain merged in, and where each key came from."""
    data, origins = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data, origins
    line = origins.get(("extends",), (str(path), None))[1]
    if not isinstance(parent, str):
        raise ConfigError(
            [
                ConfigIssue(
                    str(path), line, "extends", _show(parent, ("extends",)), "must be a file path"
                )
            ]
        )
    if _depth >= _MAX_EXTENDS:
        raise ConfigError(
            [ConfigIssue(str(path), line, "extends", parent, "extends chain too deep (a loop?)")]
        )
    if "\0" in parent:
        raise ConfigError(
            [ConfigIssue(str(path), line, "extends", parent, "a path cannot hold a NUL byte")]
        )
    parent_path = (path.parent / parent).resolve()
    if not parent_path.is_file():
        raise ConfigError(
            [ConfigIssue(str(path), line, "extends", parent, f"no such file {parent_path}")]
        )
    base, base_origins = load_document(parent_path, _depth + 1)
    merged_origins = {**base_origins, **{k: v for k, v in origins.items() if k}}
    return _deep_merge(base, data), merged_origins


# -- validation errors as issues ----------------------------------------------------------


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _show(value: Any, loc: Loc) -> str:
    if any(
        isinstance(p, str) and _SECRET_KEY.search(p) and not p.endswith(("_env", "_file"))
        for p in loc
    ):
        return "***"
    if isinstance(value, dict):
        return "{…}"
    if isinstance(value, list):
        return "[…]"
    text = _URI_CREDENTIALS.sub(r"\1:***@", repr(value) if isinstance(value, str) else str(value))
    return text if len(text) <= 60 else text[:57] + "…"


def _real_path(data: Any, loc: Loc) -> Loc:
    """``loc`` without the union tags pydantic inserts (``source.camera.fps`` → ``source.fps``)."""
    path: list[str | int] = []
    current = data
    for part in loc:
        in_dict = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            current = current[part]
            path.append(part)
        elif isinstance(current, dict) and isinstance(part, str) and current.get("type") == part:
            continue  # the discriminator tag
        else:
            path.append(part)
            current = None
    return tuple(path)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_models_in(arg))
    return found


def _fields_at(root: type[BaseModel], loc: Loc) -> list[str]:
    """Field names valid at ``loc``, for "did you mean" (union tags and list indexes allowed)."""
    current: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        models = _models_in(current)
        for model in models:
            if part in model.model_fields:
                current = model.model_fields[part].annotation
                break
        else:
            tagged = [
                m
                for m in models
                if "type" in m.model_fields
                and part in typing.get_args(m.model_fields["type"].annotation)
            ]
            if not tagged:
                return []
            current = tagged[0]
    return sorted({name for model in _models_in(current) for name in model.model_fields})


def _origin(origins: Origins, path: Loc, fallback_file: str) -> tuple[str, int | None]:
    """File and line of ``path``, or of its nearest parent written in the YAML."""
    probe = path
    while True:
        if probe in origins:
            return origins[probe]
        if not probe:
            return fallback_file, None
        probe = probe[:-1]


def _issue(data: dict[str, Any], origins: Origins, error: Any, fallback_file: str) -> ConfigIssue:
    loc: Loc = tuple(error["loc"])
    path = _real_path(data, loc)
    file, line = _origin(origins, path, fallback_file)
    message = str(error["msg"]).removeprefix("Value error, ")
    value = "—" if error["type"] == "missing" else _show(error.get("input"), path)
    if error["type"] == "extra_forbidden" and path and isinstance(path[-1], str):
        message = "unknown key"
        close = difflib.get_close_matches(
            path[-1], _fields_at(DeviceConfig, loc[:-1]), n=1, cutoff=0.6
        )
        if close:
            message += f"; did you mean {close[0]!r}?"
    return ConfigIssue(file, line, _dotted(path), value, message)


def validate_document(data: dict[str, Any], origins: Origins, file: str) -> DeviceConfig:
    try:
        return DeviceConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(
            [_issue(data, origins, err, file) for err in e.errors(include_url=False)]
        ) from e


def missing_files(config: DeviceConfig, origins: Origins, file: str) -> list[ConfigIssue]:
    """One issue per file, device or folder the config names that is not there."""
    issues = []
    for required in required_paths(config):
        problem = path_problem(required)
        if problem is not None:
            where, line = _origin(origins, required.loc, file)
            value = _show(str(required.path), required.loc)
            issues.append(ConfigIssue(where, line, _dotted(required.loc), value, problem))
    return issues


def load_config(path: Path, *, check_files: bool = False) -> DeviceConfig:
    """Read, merge and validate one device YAML; ConfigError lists every problem.

    With ``check_files`` the files it names (model, CSV, video, keys, CA) must exist too.
    """
    path = Path(path)
    data, origins = load_document(path)
    config = validate_document(data, origins, str(path))
    if check_files:
        issues = missing_files(config, origins, str(path))
        if issues:
            raise ConfigError(issues)
    return config
