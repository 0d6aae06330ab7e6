"""Config as data: frozen dataclasses loaded from YAML and overridden by ``key=value``."""

from __future__ import annotations

import dataclasses
import math
import os
import textwrap
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
        if isinstance(value, str):  # a,b,c; or [a, b, c], (a, b, c) as --help prints them
            text = value.strip()
            if text[:1] + text[-1:] in ("[]", "()"):
                text = text[1:-1]
            value = [v.strip().strip("'\"") for v in text.split(",") if v.strip() != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else str
        return tuple(_coerce(v, inner, key) for v in value)
    if origin is dict or hint is dict:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as e:
                problem = getattr(e, "problem", None) or str(e).splitlines()[0]
                raise ConfigError(f"{key}: not a YAML mapping ({problem}): {value!r}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        if len(args) == 2:  # dict[K, V]: every key and value take their types
            return {_coerce(k, args[0], key): _coerce(v, args[1], key) for k, v in value.items()}
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
            if not isinstance(nested, dict):
                raise ConfigError(
                    f"{source}: {head}: expected a mapping of its keys, got {nested!r}"
                )
            values[head] = {**nested, rest: values.pop(key)}
    for name in fields & set(values):
        if not dataclasses.is_dataclass(hints[name]) or isinstance(values[name], hints[name]):
            continue
        if not isinstance(values[name], dict):
            raise ConfigError(
                f"{source}: {name}: expected a mapping of its keys, got {values[name]!r}"
            )
        values[name] = build(hints[name], values[name], f"{source}: {name}")
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {k: _coerce(v, hints[k], f"{source}: {k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {e}") from e


def check_ranges(
    config: Any,
    at_least: dict[str, int] | None = None,
    positive: tuple[str, ...] = (),
    non_negative: tuple[str, ...] = (),
) -> None:
    """ConfigError naming the first field of `config` out of its range: a count below its
    minimum (`at_least`), or a number that is not finite and > 0 (`positive`) or >= 0
    (`non_negative`). NaN fails every check; a None (an optional unset) passes."""
    for name, low in (at_least or {}).items():
        if getattr(config, name) < low:
            raise ConfigError(f"{name}={getattr(config, name)}: must be >= {low}")
    for names, bound, ok in ((positive, "> 0", float.__gt__), (non_negative, ">= 0", float.__ge__)):
        for name in names:
            value = getattr(config, name)
            if value is not None and not (math.isfinite(value) and ok(float(value), 0.0)):
                raise ConfigError(f"{name}={value}: must be a finite number {bound}")


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


#: a config file is a few kB; anything this large is a mistake (or an attack on the parser)
MAX_CONFIG_BYTES = 1 << 20


def read_yaml_mapping(path: str | os.PathLike, what: str = "config") -> dict[str, Any]:
    """The mapping in YAML file `path` ({} if empty), or a ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {what} file not found")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{p}: {p.stat().st_size} bytes, larger than a {what} file can be ({MAX_CONFIG_BYTES})"
        )
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML{where} ({problem})") from e
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


def save_config(config: Any, path: str | os.PathLike) -> Path:
    """Write the merged `config` beside a command's outputs as YAML (atomically), so that
    what made them can be read, and rerun with ``--config``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, to_yaml(config))
    return path


def claim_file(path: str | os.PathLike, text: str, what: str = "config") -> None:
    """Write `text` to `path` (atomically), or, on a resume, check that the file there
    holds exactly it: a ConfigError names the file when it holds another `what`."""
    path = Path(path)
    if path.exists():
        held = path.read_text()
        if held != text:
            changed = changed_keys(held, text)
            raise ConfigError(
                f"{path}: this directory holds a different {what}"
                + (f" ({changed})" if changed else "")
                + f"; resume with the same {what} and settings, or choose another --out"
            )
        return
    write_text_atomic(path, text)


def changed_keys(old_yaml: str, new_yaml: str, most: int = 6) -> str:
    """'key: old -> new' for the (dotted) keys two YAML configs differ in, up to `most`."""
    try:
        old, new = yaml.safe_load(old_yaml), yaml.safe_load(new_yaml)
    except yaml.YAMLError:
        return ""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return ""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(old), flat(new)
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    diff = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys]
    more = f"; and {len(diff) - most} more" if len(diff) > most else ""
    return "; ".join(diff[:most]) + more


# -- configs as command lines ---------------------------------------------------------------
def field_docs(cls: type) -> dict[str, str]:
    """Each field's documentation, read from the class source (and its dataclass bases'):
    the attribute docstring below it, else the ``#:`` comment above it, else the comment at
    the end of its line."""
    import ast  # lazy: only --help and the CLI tests read the docs
    import inspect

    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__[1:]):
        if dataclasses.is_dataclass(base):
            docs.update(field_docs(base))
    source = inspect.getsource(cls)
    lines = source.splitlines()
    body = ast.parse(textwrap.dedent(source)).body[0].body
    for i, node in enumerate(body):
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        name, doc = node.target.id, ""
        after = body[i + 1] if i + 1 < len(body) else None
        if isinstance(after, ast.Expr) and isinstance(getattr(after, "value", None), ast.Constant):
            doc = str(after.value.value)
        if not doc:
            above = []
            for line in reversed(lines[: node.lineno - 1]):
                if line.strip().startswith("#:"):
                    above.insert(0, line.strip()[2:].strip())
                else:
                    break
            doc = " ".join(above)
        if not doc and "#" in lines[node.lineno - 1]:
            doc = lines[node.lineno - 1].split("#", 1)[1].strip()
        docs[name] = " ".join(doc.split())
    return docs


def describe_fields(cls: type, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(key, default, doc) for every field of `cls`, nested dataclass fields as
    ``parent.key`` (the spelling `key=value` overrides take)."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            out += describe_fields(hints[f.name], key + ".")
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "required"
        out.append((key, default, docs.get(f.name, "")))
    return out


def keys_help(cls: type) -> str:
    """The epilog every command's --help ends with: each config key, its default, its doc."""
    lines = [f"keys of {cls.__name__} (key=value, or in the --config YAML file):"]
    for key, default, doc in describe_fields(cls):
        shown = list(default) if isinstance(default, tuple) else default
        lines.append(f"  {key} = {shown!r}" + (f"\n      {doc}" if doc else ""))
    return "\n".join(lines)


def add_config_arguments(
    parser, cls: type, flags: dict[str, str | tuple[str, str]] | None = None, group=None
) -> None:
    """The one way a command takes its config: ``--config FILE.yaml``, then the `flags`
    (what people type often: {"--out": key}, a switch {"--with-head": (key, "true")}, a
    repeatable one {"--efficiency": (key, list)}), then positional ``key=value``
    overrides; each field with the default and doc its dataclass gives it (--help lists
    every key). A flag of a field without a default is required unless the YAML gives it."""
    docs = {k: (d, doc) for k, d, doc in describe_fields(cls)}
    parser.add_argument("--config", help=f"YAML file of {cls.__name__} keys")
    target = parser.add_argument_group(group) if group else parser
    keys = {}
    for flag, spec in (flags or {}).items():
        key, const = (spec, None) if isinstance(spec, str) else spec
        keys[key] = flag
        default, doc = docs[key]
        shown = "required" if default == "required" else f"default {default!r}"
        text = f"{doc} ({shown}; key {key}" + (f"={const})" if isinstance(const, str) else ")")
        if const == "false":  # a --no-X switch: the field's doc says what it turns off
            text = f"turn off: {text}"
        if const is None:
            target.add_argument(flag, dest=f"flag:{key}", metavar=key.upper(), help=text)
        elif const is list:
            kw = {"action": "append", "metavar": key.upper()}
            target.add_argument(
                flag, dest=f"flag:{key}", help=f"{doc} (repeatable; key {key})", **kw
            )
        else:
            target.add_argument(
                flag, dest=f"flag:{key}", action="store_const", const=const, help=text
            )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    parser.epilog = (parser.epilog + "\n\n" if parser.epilog else "") + keys_help(cls)
    parser.set_defaults(_config_flags=keys)


def config_from_args(cls: type[T], args, base: dict[str, Any] | None = None) -> T:
    """The config a command line asks for: defaults < `base` < --config file < flags <
    key=value; a required field nobody gave is named by its flag."""
    values: dict[str, Any] = dict(base or {})
    if args.config:
        values.update(read_yaml_mapping(args.config))
    for dest, value in vars(args).items():
        if dest.startswith("flag:") and value is not None:
            values[dest.removeprefix("flag:")] = value
    values.update(parse_overrides(args.overrides))
    flags = getattr(args, "_config_flags", {})
    missing = [
        flags.get(key, f"{key}=...")
        for key, default, _ in describe_fields(cls)
        if default == "required" and key not in values
    ]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)}")
    return build(cls, values, source=str(args.config) if args.config else "command line")
