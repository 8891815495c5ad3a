"""Run configurations from and to files: TOML with ``--set table.key=value`` overrides, dicts, ``--help`` text.

The schema and its checks are :mod:`llm.config`; this module converts untrusted input into it, naming the
field of any error (:class:`llm.config.ConfigError`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from llm.config import ConfigError, RunConfig, choices

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["add_config_arguments", "config_from_args", "describe_fields", "from_dict", "load_config", "to_dict"]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, field: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (bool, int, float, str, list[...], dataclass)."""
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{field}: expected a table [{field}], got {type(value).__name__}")
        return from_dict(tp, value, prefix=f"{field}.")
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1]
        if not isinstance(value, list):
            raise ConfigError(f"{field}: expected a list of {_type_name(item)}, got {value!r}")
        return [_convert(v, item, f"{field}[{i}]") for i, v in enumerate(value)]
    if origin is types.UnionType:
        raise ConfigError(f"{field}: union-typed fields are not supported")
    if origin is Literal:  # membership is checked by the dataclass (_check_choices), naming the choices
        tp = str
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
        if ok and not math.isfinite(value):  # TOML reads nan and inf: refused here, before any comparison
            raise ConfigError(f"{field}: must be a finite number, got {value}")
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise ConfigError(f"{field}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from a (TOML) dict, overriding defaults; nested tables build nested dataclasses.

    Raises:
        ConfigError: For unknown keys (with the closest valid name), wrong types or invalid values.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(fields)}"
            raise ConfigError(f"{prefix}{key}: unknown field{hint}")
    values = {key: _convert(value, hints[key], f"{prefix}{key}") for key, value in data.items()}
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {err}") from None


def load_config(path: Path | str, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a TOML run configuration, then apply ``table.key=value`` overrides (e.g. for a threshold sweep).

    An override's value is read as a TOML value (``caid.iterations=2``, ``scorers.thresholds=[0.02]``,
    ``model.train="lora"``); a bare word that is not one is taken as a string (``model.train=lora``).

    Raises:
        ConfigError: If the file is missing, is not valid TOML, an override is malformed, or the result is
            an invalid configuration.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config: {path} not found (see configs/ for examples)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config: {path} is not valid TOML ({err})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config: {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"config: cannot read {path} ({err.strerror})") from None
    for override in overrides:
        _apply_override(data, override)
    return from_dict(RunConfig, data)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and repeatable ``--set TABLE.KEY=VALUE``, read back by :func:`config_from_args`."""
    parser.add_argument("--config", type=Path, required=True, help="the TOML run configuration (see configs/)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
        help="override one configuration field (a TOML value), e.g. --set caid.iterations=2; repeatable",
    )  # fmt: skip


def config_from_args(args: argparse.Namespace) -> RunConfig | None:
    """:func:`load_config` of ``args.config`` with ``args.overrides``, or None after printing why it is invalid."""
    try:
        return load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def _apply_override(data: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    names = key.strip().split(".")
    if not sep or not all(names):
        raise ConfigError(f"override {override!r}: write table.key=value, e.g. caid.iterations=2")
    try:
        value = tomllib.loads(f"value = {text.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    table = data
    for name in names[:-1]:
        table = table.setdefault(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"override {override!r}: {name} is not a table")
    table[names[-1]] = value


def describe_fields(cls: type = RunConfig, prefix: str = "") -> Iterator[str]:
    """One line per configuration field: ``table.key = default  # help``, for ``--help``."""
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for field in dataclasses.fields(cls):
        name, value = f"{prefix}{field.name}", getattr(defaults, field.name)
        if dataclasses.is_dataclass(hints[field.name]):
            yield f"[{name}]  # {field.metadata.get('help', '')}"
            yield from describe_fields(hints[field.name], f"{name}.")
        else:
            options = choices(hints[field.name])
            listed = f" [one of: {', '.join(options)}]" if options else ""
            yield f"{name} = {value!r}  # {field.metadata.get('help', '')}{listed}"


def to_dict(config: Any) -> dict[str, Any]:
    """The resolved configuration as plain data (for ``config.json`` in the run directory)."""
    return dataclasses.asdict(config)
