"""Config as data: frozen dataclasses loaded from YAML and overridden by ``key=value``."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError
from .utils.atomic import write_text_atomic

T = TypeVar("T")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a YAML or command-line value to the field's annotated type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError("; ".join(errors))
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else str
        return tuple(_coerce(v, inner, key) for v in value)
    if origin is dict or hint is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}")
    if hint in (int, float, str):
        try:
            if hint is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return hint(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}") from None
    return value


def build(cls: type[T], values: dict[str, Any], source: str = "config") -> T:
    """Instantiate dataclass `cls` from a mapping, naming any unknown key or bad value.

    A field that is itself a dataclass takes a mapping, and ``field.key`` entries (from
    ``key=value`` overrides) are merged into it.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = dict(values)
    for key in [k for k in values if "." in k]:
        head, _, rest = key.partition(".")
        if head in fields and dataclasses.is_dataclass(hints[head]):
            nested = values.get(head) or {}
            if dataclasses.is_dataclass(nested):
                nested = dataclasses.asdict(nested)
            values[head] = {**nested, rest: values.pop(key)}
    for name in fields & set(values):
        if dataclasses.is_dataclass(hints[name]) and isinstance(values[name], dict):
            values[name] = build(hints[name], values[name], f"{source}: {name}")
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {k: _coerce(v, hints[k], f"{source}: {k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {e}") from e


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``["a=1", "b=x,y"]`` -> ``{"a": "1", "b": "x,y"}``: raw text; `build` applies the
    field's type (so ``name=1.10`` stays "1.10" and ``seed=010`` is 10, not YAML's octal)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


def read_yaml_mapping(path: str | os.PathLike, what: str = "config") -> dict[str, Any]:
    """The mapping in YAML file `path` ({} if empty), or a ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {what} file not found")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from e
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: expected a mapping of keys to values")
    return loaded


def load_config(cls: type[T], path: str | os.PathLike | None, overrides: list[str]) -> T:
    """Defaults of `cls`, then the YAML file at `path` (if any), then ``key=value`` overrides."""
    values: dict[str, Any] = read_yaml_mapping(path) if path is not None else {}
    values.update(parse_overrides(overrides))
    return build(cls, values, source=str(path) if path else "overrides")


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as plain data (tuples as lists), for YAML and JSON."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}


def to_yaml(config: Any) -> str:
    """A dataclass config as YAML text, loadable again with `load_config`."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def claim_file(path: str | os.PathLike, text: str, what: str = "config") -> None:
    """Write `text` to `path` (atomically), or, on a resume, check that the file there
    holds exactly it: a ConfigError names the file when it holds another `what`."""
    path = Path(path)
    if path.exists():
        if path.read_text() != text:
            raise ConfigError(
                f"{path}: this directory holds a different {what}; resume with the same "
                f"{what} and settings, or choose another --out"
            )
        return
    write_text_atomic(path, text)
