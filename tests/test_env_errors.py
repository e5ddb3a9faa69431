"""User errors met while making an env: one ConfigError line, exit 2 from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentbench.cli import main
from agentbench.envs import make, make_vec
from agentbench.envs.movielens import load_movielens
from agentbench.errors import ConfigError

BANDIT = "agentbench/GaussianBandit-5arms-medium-button-v0"


def _ratings(tmp_path: Path, first_line: str) -> Path:
    """A small u.data whose first line is ``first_line``; every pair rated, 4 x 4."""
    lines = [first_line] + [f"{u}\t{m}\t{1 + (u * m) % 5}\t881250949"
                            for u in range(1, 5) for m in range(1, 5)]  # fmt: skip
    path = tmp_path / "u.data"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_unknown_env_kwarg_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        make(BANDIT, horizn=20)
    message = str(caught.value)
    assert "horizn" in message and "horizon" in message and BANDIT in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="horizn"):
        make_vec(BANDIT, 2, horizn=20)


def test_known_env_kwargs_still_work() -> None:
    env = make(BANDIT, horizon=7)
    env.reset(seed=0)
    assert env.unwrapped.spec_params.horizon == 7
    make("agentbench/TicTacToe-v0", opponent="random", max_episode_steps=9).close()


def test_the_cli_prints_an_unknown_env_kwarg_in_one_line_and_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["sft", "--env", BANDIT, "--env-arg", "horizn=20", "--episodes", "1",
                 "--out", str(tmp_path / "model")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2
    assert "horizn" in captured.err + captured.out
    assert "Traceback" not in captured.err + captured.out
    assert len((captured.err + captured.out).strip().splitlines()) == 1


def test_a_user_id_beyond_64_bits_names_the_file_and_line(tmp_path: Path) -> None:
    path = _ratings(tmp_path, f"{2**63}\t1\t4\t881250949")
    with pytest.raises(ConfigError, match=rf"line 1 of ratings file .*u\.data.*{2**63}"):
        load_movielens(path, rank=1, min_ratings=1)


def test_an_overflowing_rating_names_the_file_and_line(tmp_path: Path) -> None:
    path = _ratings(tmp_path, "9\t1\t1e308\t881250949")
    with pytest.raises(ConfigError, match=r"line 1 of ratings file .*u\.data.*1e308"):
        load_movielens(path, rank=1, min_ratings=1)


def test_an_unknown_kwarg_forwarded_by_the_movielens_env_is_one_line(tmp_path: Path) -> None:
    path = _ratings(tmp_path, "5\t1\t4\t881250949")
    with pytest.raises(ConfigError, match="MovieLensBandit-v0 takes no keyword argument 'n_arm'"):
        make("agentbench/MovieLensBandit-v0", ratings_path=str(path), min_ratings=1, rank=1,
             n_arm=3)  # fmt: skip
