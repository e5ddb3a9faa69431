"""User errors of `agentbench run`, `analyze` and `report`: one line and exit 2, never a
traceback. One test per case: bad suite files, bad numbers, bad output directories,
a damaged config.json or episodes.jsonl in the run directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agentbench.agent import factory
from agentbench.cli import main
from agentbench.errors import ConfigError
from agentbench.records import read_episodes
from agentbench.testing.planted import KnowingButGreedyModel

BANDIT = "agentbench/GaussianBandit-5arms-low-button-v0"
GOOD_SUITE = f'episodes = 2\nagents = ["ucb"]\nenvs = ["{BANDIT}"]\n'


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    assert "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def _run(out: Path, *extra: str) -> list[str]:
    return ["run", "--env", BANDIT, "--agent", "ucb", "--episodes", "2",
            "--out", str(out), "--no-progress", *extra]  # fmt: skip


def test_a_suite_file_that_is_not_utf8(tmp_path: Path, capsys) -> None:
    suite = tmp_path / "latin1.toml"
    suite.write_bytes('description = "café"\n'.encode("latin-1") + GOOD_SUITE.encode())
    _one_line_error(["run", str(suite), "--out", str(tmp_path / "run")], capsys,
                    str(suite), "UTF-8", "0xe9")  # fmt: skip


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ('episodes = "x"', "episodes"),
        ('seed = "x"', "seed"),
        ('num_envs = "x"', "num_envs"),
        ("episodes = 2.7", "2.7"),  # not silently 2
        ("episodes = 2.0", "episodes"),
        ("episodes = true", "episodes"),
        ("episodes = 0", "episodes"),
        ("episodes = -3", "episodes"),
        ("seed = -1", "seed"),
        ("seed = 1.5", "seed"),
        ("num_envs = 0", "num_envs"),
    ],
)
def test_a_suite_number_that_is_not_a_valid_integer(
    tmp_path: Path, capsys, setting: str, named: str
) -> None:
    suite = tmp_path / "suite.toml"
    suite.write_text(f'{setting}\nagents = ["ucb"]\nenvs = ["{BANDIT}"]\n')
    _one_line_error(["run", str(suite), "--out", str(tmp_path / "run")], capsys, named)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("entries", "named"),
    [
        (f'envs = [3, "{BANDIT}"]\nagents = ["ucb"]', "envs entry"),
        (f'envs = [["{BANDIT}"]]\nagents = ["ucb"]', "envs entry"),
        (
            f'envs = "{BANDIT}"\nagents = ["ucb"]',
            f"envs = '{BANDIT}' has the wrong type; expected list",
        ),
        ('envs = [{ id = 3 }]\nagents = ["ucb"]', "'id' must be a string"),
        (f'envs = ["{BANDIT}"]\nagents = [3]', "agents entry"),
        (f'envs = ["{BANDIT}"]\nagents = [["ucb"]]', "agents entry"),
        (
            f'envs = ["{BANDIT}"]\nagents = "ucb"',
            "agents = 'ucb' has the wrong type; expected list",
        ),
        (f'envs = ["{BANDIT}"]\nagents = [{{ name = 1 }}]', "'name' string"),
    ],
)
def test_a_suite_entry_that_is_not_a_table_or_a_name(
    tmp_path: Path, capsys, entries: str, named: str
) -> None:
    suite = tmp_path / "suite.toml"
    suite.write_text(f"episodes = 2\n{entries}\n")
    _one_line_error(["run", str(suite), "--out", str(tmp_path / "run")], capsys, named)


@pytest.mark.parametrize("option", ["--seed", "--episodes", "--num-envs"])
def test_a_negative_run_option(tmp_path: Path, capsys, option: str) -> None:
    argv = _run(tmp_path / "run")
    argv[argv.index("--episodes") : argv.index("--episodes") + 2] = []
    _one_line_error([*argv, option, "-1"], capsys, "-1")


def test_a_negative_analyze_seed(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(factory._GENERATORS, ("planted-knowing", ()), KnowingButGreedyModel())
    _one_line_error(["analyze", "--model", "planted-knowing", "--seed", "-1",
                     "--out", str(tmp_path / "analysis")], capsys, "--seed", "-1")  # fmt: skip


def _unwritable_dir(tmp_path: Path) -> Path:
    """A directory nobody may create files in: read-only for a user, /sys for root."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and _can_create_in("/sys"):
        pytest.skip("no directory here that root cannot write to")
    return Path("/sys")


def _can_create_in(folder: str) -> bool:
    try:
        (Path(folder) / "agentbench-probe").open("a").close()
    except OSError:
        return False
    (Path(folder) / "agentbench-probe").unlink()
    return True


def _bad_outs(tmp_path: Path) -> dict[str, Path]:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    return {"file": a_file, "under-file": a_file / "run", "unwritable": _unwritable_dir(tmp_path)}


@pytest.mark.parametrize("kind", ["file", "under-file", "unwritable"])
def test_a_run_out_that_cannot_be_a_run_directory(tmp_path: Path, capsys, kind: str) -> None:
    out = _bad_outs(tmp_path)[kind]
    _one_line_error(_run(out), capsys, str(out), "--out")


@pytest.mark.parametrize("kind", ["file", "under-file", "unwritable"])
def test_an_analyze_or_report_out_that_cannot_be_written(
    tmp_path: Path, capsys, monkeypatch, kind: str
) -> None:
    out = _bad_outs(tmp_path)[kind]
    if kind == "unwritable" and os.geteuid() == 0:
        out = out / "analysis"  # root: a folder /sys will not let anyone create
    monkeypatch.setitem(factory._GENERATORS, ("planted-knowing", ()), KnowingButGreedyModel())
    _one_line_error(["analyze", "--model", "planted-knowing", "--prefixes", "1",
                     "--histories", "1", "--out", str(out)], capsys, str(out))  # fmt: skip
    run = tmp_path / "good-run"
    assert main(_run(run)) == 0
    _one_line_error(["report", str(run), "--out", str(out)], capsys, str(out))


DAMAGED_CONFIGS = {
    "empty": b"",
    "truncated": b'{"suite": {"name": "custom", "env_ids": [',
    "list": b"[1, 2]",
    "string": b'"config"',
    "not-utf8": b"\xff\xfe",
    "no-suite": b'{"seeds": [0, 1]}',
}


@pytest.mark.parametrize("content", DAMAGED_CONFIGS.values(), ids=DAMAGED_CONFIGS.keys())
def test_a_damaged_config_json_on_resume(tmp_path: Path, capsys, content: bytes) -> None:
    out = tmp_path / "run"
    assert main(_run(out)) == 0
    (out / "config.json").write_bytes(content)
    _one_line_error(_run(out), capsys, str(out / "config.json"), "not a run config")


def _record(drop: str = "", **changes: object) -> bytes:
    record = {"agent": "ucb", "env_id": "x", "seed": 9, "n_actions": 5, "action_labels": []}
    record = {key: value for key, value in {**record, **changes}.items() if key != drop}
    return json.dumps(record).encode()


BAD_LINES = {
    "list": (b"[1, 2, 3]", "expected a JSON object, got list"),
    "string": (b'"an episode"', "expected a JSON object, got str"),
    "unknown-key": (_record(colour="red"), "unknown field 'colour'"),
    "missing-key": (_record(drop="seed"), "missing field 'seed'"),
    "key-type": (_record(agent=["ucb"]), "agent must be str"),
    "step-key": (_record(steps=[{"t": 1}]), "step 0: missing field 'action'"),
    "step-type": (_record(steps=[7]), "step 0 is not a JSON object"),
    "cut-mid-file": (_record()[:40], "not a line of JSON"),
}


@pytest.mark.parametrize(("line", "named"), BAD_LINES.values(), ids=BAD_LINES.keys())
def test_an_episode_line_that_is_not_a_record(
    tmp_path: Path, capsys, line: bytes, named: str
) -> None:
    out = tmp_path / "run"
    assert main(_run(out)) == 0
    episodes = out / "episodes.jsonl"
    first, second = episodes.read_bytes().splitlines()
    episodes.write_bytes(first + b"\n" + line + b"\n" + second + b"\n")
    where = f"{episodes}:2"
    with pytest.raises(ConfigError, match="is not an episode record") as error:
        read_episodes(episodes)
    assert where in str(error.value) and named in str(error.value)
    _one_line_error(_run(out), capsys, where, named)  # resume
    _one_line_error(["report", str(out), "--out", str(tmp_path / "report")], capsys, where)
