"""Settings declared once, with their help, and read by one type-checked loader.

Every config dataclass of agentbench (the LLM agent's settings, PPO, SFT, the
self-training methods) declares each field with :func:`setting`: its default and
one help string that says what it does and where the default comes from ("paper"
is the published RLFT setting of SPEC.md section 3), as TRL's configs do. The help
is the documentation: ``agentbench train --help`` and ``agentbench sft --help``
print it with each default (:func:`settings_help_text`).

:func:`config_from_dict` is the one loader for plain values (a TOML table, a suite
entry, CLI options): an unknown key, or a value of the wrong type, is one
:class:`~agentbench.errors.ConfigError` naming it and what is accepted.
"""

from __future__ import annotations

import dataclasses
import textwrap
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from agentbench.errors import ConfigError

ALL_HISTORY = "all"  # TOML spelling of history_length = None (the whole episode)
HELP = "help"  # the metadata key of a field's help


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field with its ``help``; ``factory`` for a mutable default."""
    if not help:
        raise TypeError("every setting needs its help text")
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={HELP: help})
    return dataclasses.field(default=default, metadata={HELP: help})


def field_help(cls: type, name: str) -> str:
    """The help declared with field ``name`` of config class ``cls``."""
    return next(f.metadata.get(HELP, "") for f in dataclasses.fields(cls) if f.name == name)


def default_text(field: dataclasses.Field) -> str:
    """How a help page writes a field's default."""
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if value is None:
        return "none"
    if dataclasses.is_dataclass(value):
        return f"a [{field.name}] table ({type(value).__name__}, below)"
    return repr(value) if isinstance(value, str) else str(value)


def settings_help_text(cls: type, skip: Sequence[str] = (), width: int = 88) -> str:
    """Every setting of ``cls`` as ``name = default`` and its help, for a --help page."""
    lines = []
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.init:
            continue
        lines.append(f"  {field.name} = {default_text(field)}")
        help_text = field.metadata.get(HELP, "")
        lines += textwrap.wrap(help_text, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


def config_from_dict(
    cls: type, data: dict[str, Any], what: str, also_accepted: Sequence[str] = ()
) -> Any:
    """``cls(**data)`` for a config dataclass, with one clear error for unknown keys
    (``also_accepted`` are keys the caller took out before, named in that error) and
    for values of the wrong type; ``history_length = "all"`` reads as None (TOML has no
    null), and an int is accepted for a float."""
    if not isinstance(data, dict):
        raise ConfigError(f"{what} settings must be a table of key = value, got {data!r}")
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        accepted = sorted(known | set(also_accepted))
        raise ConfigError(f"unknown {what} settings {unknown}: accepted are {accepted}")
    values = dict(data)
    if values.get("history_length") == ALL_HISTORY:
        values["history_length"] = None
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if dataclasses.is_dataclass(hints[name]) and not isinstance(value, hints[name]):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{name} must be a [{name}] table of {hints[name].__name__} settings, "
                    f"got {value!r}"
                )
            value = config_from_dict(hints[name], value, f"[{name}]")  # a nested table
        values[name] = checked_value(name, value, hints[name])
    return cls(**values)


def moved_settings_error(data: dict[str, Any], moved: Sequence[str], table: str) -> None:
    """A ConfigError when ``data`` still holds settings that now live in ``[table]``."""
    found = [key for key in moved if key in data]
    if found:
        verb = "belongs" if len(found) == 1 else "belong"
        raise ConfigError(
            f"{', '.join(found)} now {verb} in the [{table}] table (e.g. [{table}] "
            f"{found[0]} = ...): the {table}'s settings are declared once, there"
        )


def check_types(config: Any) -> None:
    """Each field of a (non-frozen) config against its annotation; ints become floats."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        converted = checked_value(field.name, value, hints[field.name])
        if converted is not value:
            setattr(config, field.name, converted)


def checked_value(name: str, value: Any, expected: Any) -> Any:
    """``value`` if it has the annotated type (an int given for a float becomes that
    float), else a ConfigError naming the setting and the type expected."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not _matches(value, expected):
        raise ConfigError(f"{name} = {value!r} has the wrong type; expected {_type_name(expected)}")
    return value


def _matches(value: Any, expected: Any) -> bool:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if expected is Any:
        return True
    if origin is list:
        (item,) = typing.get_args(expected)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool))
    return isinstance(value, expected)


def _type_name(expected: Any) -> str:
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(option) for option in typing.get_args(expected))
    if expected is type(None):
        return "nothing (leave the key out)"
    return getattr(expected, "__name__", str(expected))
