"""agentbench.io: atomic writes and one-line read errors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentbench.errors import ConfigError
from agentbench.io import (
    json_number,
    read_json,
    read_toml,
    record_dict,
    write_atomic,
    write_directory,
    write_json,
)
from agentbench.metrics import Estimate
from agentbench.rlft.checkpoint import CorruptCheckpointError


def test_write_atomic_replaces_the_file_and_leaves_nothing_beside_it(tmp_path: Path):
    path = tmp_path / "summary.md"
    path.write_text("old", encoding="utf-8")
    write_atomic(path, "new \u00e9")
    assert path.read_text(encoding="utf-8") == "new \u00e9"
    write_atomic(path, b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]


def test_a_failed_json_write_keeps_the_old_file_whole(tmp_path: Path):
    path = tmp_path / "metrics.json"
    write_json(path, {"regret": 1.5})
    with pytest.raises(ValueError):  # NaN is not JSON: refused before anything is written
        write_json(path, {"regret": math.nan})
    assert read_json(path) == {"regret": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_write_directory_is_all_or_nothing(tmp_path: Path):
    target = tmp_path / "checkpoint"
    write_directory(target, lambda d: (d / "a.json").write_text("1"))
    assert (target / "a.json").read_text() == "1"

    def half_written(directory: Path) -> None:
        (directory / "b.json").write_text("2")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_directory(target, half_written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert sorted(p.name for p in target.iterdir()) == ["a.json"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "does not exist"),
        ("dir", "is a directory, not a file"),
        ('name = "caf\u00e9"\n'.encode("latin-1"), "is not UTF-8 text (byte 0xe9 at offset 11)"),
        (b"name = [unclosed\n", "is not valid TOML"),
    ],
)
def test_read_toml_errors_are_one_line_naming_the_file(tmp_path: Path, content, reason):
    path = tmp_path / "suite.toml"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as error:
        read_toml(path, "suite file")
    message = str(error.value)
    assert message.startswith(f"suite file {path} ") and reason in message
    assert "\n" not in message


def test_read_json_raises_the_error_class_asked_for(tmp_path: Path):
    path = tmp_path / "trainer_state.json"
    path.write_text('{"update": ', encoding="utf-8")
    with pytest.raises(CorruptCheckpointError, match="checkpoint file .* is not valid JSON"):
        read_json(path, "checkpoint file", CorruptCheckpointError)
    path.write_text('{"update": 3}', encoding="utf-8")
    assert read_json(path, "checkpoint file", CorruptCheckpointError) == {"update": 3}
    assert read_toml(_toml(tmp_path), "config file") == {"seed": 1, "agents": ["ucb"]}


def _toml(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('seed = 1\nagents = ["ucb"]\n', encoding="utf-8")
    return path


def test_json_number_makes_undefined_numbers_null():
    assert json_number(1.25) == 1.25
    assert json_number(math.nan) is None
    assert json_number(math.inf) is None
    assert json_number(-math.inf) is None


@dataclass
class _Record:
    name: str
    estimate: Estimate
    seeds: tuple[int, ...]
    nested: dict[str, list[Estimate]]


def test_record_dict_converts_fields_in_order_then_the_extras():
    estimate = Estimate(1.0, math.nan, 2.0, 3)
    record = _Record("ucb", estimate, (4, 5), {"rows": [estimate]})
    row = record_dict(record, n_seeds=2)
    assert list(row) == ["name", "estimate", "seeds", "nested", "n_seeds"]
    assert row["estimate"] == {"mean": 1.0, "low": None, "high": 2.0, "n": 3}
    assert row["seeds"] == [4, 5]
    assert row["nested"] == {"rows": [row["estimate"]]}
    assert row["n_seeds"] == 2
