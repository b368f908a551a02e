"""Config plumbing: documented frozen dataclasses hold the fields, YAML holds only values.

``from_dict(cls, data)`` builds a (nested) dataclass from plain values and names the offending field
(``rollout.group_size``) on any unknown key or wrong type, and a removed or renamed one with what to write instead
(the class's ``RETIRED`` table); ``apply_overrides`` applies command-line
``key.path=value`` strings (values parsed as YAML scalars); ``load_yaml`` reports the file name.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml

C = TypeVar("C")


class InputError(ValueError):
    """Bad user input (a config, a ``--set`` value, a data file, a run folder); the message names the place.
    The CLI prints it as one line and exits with code 2."""


class ConfigError(InputError):
    """A config value that does not fit its field; the message names the field (and file)."""


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """One line from a PyYAML error: ``line L, column C: problem (context at line l, column c)``, 1-based.

    PyYAML's own ``str(exc)`` spans several lines and names the stream (``"<unicode string>"``), not the file."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return " ".join(str(exc).split())
    parts = []
    mark = exc.problem_mark or exc.context_mark
    if mark is not None:
        parts.append(f"line {mark.line + 1}, column {mark.column + 1}: ")
    parts.append(exc.problem or exc.context or "invalid YAML")
    if exc.problem and exc.context:
        at = exc.context_mark
        where = f" started at line {at.line + 1}, column {at.column + 1}" if at is not None and at != mark else ""
        parts.append(f" ({exc.context}{where})")
    return "".join(parts)


def from_dict(cls: type[C], data: dict[str, Any] | None, *, where: str = "") -> C:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError naming the field.

    A dataclass lists the fields it no longer has in a class attribute ``RETIRED: ClassVar[dict[str, str]]`` (old
    name -> why it went and what to write instead); such a key gets that one line instead of "unknown field".
    ``RETIRED_DEFAULTS: ClassVar[dict[str, Any]]`` (old name -> its old default) lets a retired key through, ignored,
    when it holds that default: it then meant what the current default means, and every ``config.yaml`` a run saved
    before the field went holds it (so older runs still resume and evaluate)."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    retired: dict[str, str] = getattr(cls, "RETIRED", {})
    old_defaults: dict[str, Any] = getattr(cls, "RETIRED_DEFAULTS", {})
    for name in [n for n in unknown if n in old_defaults and data[n] == old_defaults[n]]:
        del data[name]  # a retired field at its old default: what the current default does
        unknown.remove(name)
    for name in unknown:
        if name in retired:  # a field that was removed or renamed: say so, and what to write instead
            raise ConfigError(f"{_path(where, name)}: {retired[name]}")
    if unknown:
        raise ConfigError(
            f"{_path(where, unknown[0])}: unknown field; known fields of {cls.__name__}: {sorted(fields)}"
        )
    kwargs = {name: _coerce(hints[name], value, _path(where, name)) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # a range check in the dataclass's __post_init__ names the field, not its section
        raise ConfigError(_path(where, str(exc))) from None


def to_dict(obj: Any) -> Any:
    """Plain (YAML-serialisable) values of a dataclass tree."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; errors are one line naming the file (and the line and column of a syntax error)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, expected a YAML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML at {yaml_error_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, returning a new dict.
    A list item is addressed by its index (``loss.1.options.lam=0.1``)."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: invalid YAML value {raw!r} at {yaml_error_line(exc)}") from None
        node: Any = out
        parts = key.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):  # a list item is addressed by its index: loss.1.options.lam
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set {item!r}: {part!r} is not an index of the {len(node)}-item list")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise ConfigError(f"--set {item!r}: {parts[i - 1]} is not a section")
    return out


def save_yaml(obj: Any, path: str | Path) -> None:
    """Write a dataclass tree (or plain values) as YAML, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))
    tmp.replace(path)


def _path(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {tp}")
    if origin is typing.Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, where=where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads 1e-4 as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value
