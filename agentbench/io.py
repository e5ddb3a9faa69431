"""Files that readers can trust: atomic writes, and TOML / JSON reads with one-line errors.

Every file agentbench writes for later (run configs, metrics, summaries, reports,
probe results, checkpoints) goes through :func:`write_atomic` or
:func:`write_directory`: the new content is written beside the target and renamed
over it, so a reader (or a resumed run after a kill) sees the old file or the new
one, never half of one. Append-only logs (``metrics.jsonl``, ``episodes.jsonl``)
are the exception: a resumed run drops a cut last line instead.

:func:`read_toml` and :func:`read_json` turn every way a file can be unusable
(missing, unreadable, not UTF-8, malformed) into one sentence that names the file,
raised as :class:`~agentbench.errors.ConfigError` unless the caller names another
error class (checkpoints raise ``CorruptCheckpointError``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from agentbench.errors import ConfigError


def write_atomic(path: str | Path, content: str | bytes) -> Path:
    """Write ``content`` (text as UTF-8, or bytes) to ``path`` via a temporary file in
    the same directory and a rename; on any error the target is untouched and the
    temporary file removed."""
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any, indent: int | None = 1) -> Path:
    """``data`` as JSON (strict: NaN and infinity are refused), written atomically."""
    return write_atomic(path, json.dumps(data, indent=indent, allow_nan=False) + "\n")


def json_number(value: float) -> float | None:
    """A number for strict JSON: NaN and infinities become None (JSON has neither)."""
    return float(value) if math.isfinite(value) else None


def record_dict(record: Any, **extra: Any) -> dict[str, Any]:
    """A dataclass record as a JSON-ready dict: its fields in order (a value with its own
    ``to_dict`` converted by it, a tuple or list as a list of converted items), then
    ``extra``, the derived values a reader wants next to the fields."""
    row = {field.name: _json_value(getattr(record, field.name)) for field in fields(record)}
    row.update(extra)
    return row


def _json_value(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    return value


def package_tomls(folder: str) -> dict[str, Path]:
    """The TOML files in a folder of the agentbench package (suites, paper), by stem."""
    from importlib import resources

    entries = (resources.files("agentbench") / folder).iterdir()
    return {Path(str(e)).stem: Path(str(e)) for e in entries if str(e).endswith(".toml")}


def named_toml(name_or_path: str, known: dict[str, Path], what: str) -> Path:
    """A package TOML by name, or a TOML file by path; else one line naming the known ones."""
    path = known.get(name_or_path, Path(name_or_path))
    if not path.is_file():
        raise ConfigError(
            f"unknown {what} {name_or_path!r}: give a TOML file path or one of "
            f"{', '.join(sorted(known))}"
        )
    return path


def write_directory(target: str | Path, write: Callable[[Path], Any]) -> Path:
    """Fill a hidden staging directory beside ``target`` with ``write(staging)``, then
    rename it into place (replacing ``target``); on any error nothing is left behind."""
    target = Path(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        write(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_text(path: str | Path, what: str, error: type[Exception] = ConfigError) -> str:
    """The UTF-8 text of ``path``; ``what`` names the file in the error ("suite file")."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise error(
            f"{what} {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start}): save it as UTF-8"
        ) from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read ({exc.strerror})") from None


def read_toml(
    path: str | Path, what: str = "config file", error: type[Exception] = ConfigError
) -> dict[str, Any]:
    """A TOML file as a dict, or one ``error`` naming the file and what is wrong."""
    text = read_text(path, what, error)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path} is not valid TOML ({exc})") from None


def read_json(
    path: str | Path, what: str = "JSON file", error: type[Exception] = ConfigError
) -> Any:
    """A JSON file's value, or one ``error`` naming the file and what is wrong."""
    text = read_text(path, what, error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what} {path} is not valid JSON ({exc})") from None
