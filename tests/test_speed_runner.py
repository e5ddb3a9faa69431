"""The runner's speed-ups keep its output: records written by hand as asdict wrote them,
observations converted without a JSON round trip to the same values, and the bandit
baselines' incremental arm statistics equal to a recount."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from agentbench.agent.interface import Turn
from agentbench.baselines import make_agent
from agentbench.baselines.bandit import ArmStatistics
from agentbench.envs import make, text_env
from agentbench.metrics import arm_statistics
from agentbench.records import Episode, Step, read_episodes, to_jsonable, write_episodes
from agentbench.rollout import play


def _asdict_json(episode: Episode) -> str:
    """The record as the writer made it with dataclasses.asdict (the format's definition)."""
    data = asdict(episode)
    defaults = Step(t=0, action=0, label="", reward=0.0)
    kept = {"t", "action", "label", "reward"}
    data["steps"] = [
        {
            key: value
            for key, value in step.items()
            if key in kept
            or value != getattr(defaults, key)
            or type(value) is not type(getattr(defaults, key))
        }  # fmt: skip
        for step in data["steps"]
    ]
    return json.dumps(data, separators=(",", ":"))


def _random_episode(rng: np.random.Generator) -> Episode:
    def pick(options: list) -> object:
        return options[int(rng.integers(len(options)))]

    steps = []
    for t in range(1, int(rng.integers(0, 6)) + 1):
        steps.append(
            Step(
                t=t,
                action=int(rng.integers(3)),
                label=pick(["a", "b", "é"]),
                reward=pick([0.0, -0.0, 1.0, rng.normal()]),
                valid=bool(rng.random() < 0.7),
                illegal=bool(rng.random() < 0.2),
                proposed=None if rng.random() < 0.3 else int(rng.integers(-1, 4)),
                expected_reward=None if rng.random() < 0.5 else float(rng.random()),
                optimal_action=None if rng.random() < 0.5 else int(rng.integers(3)),
                regret=None if rng.random() < 0.5 else 0.0,
                state=pick(["", "x..", "\n"]),
                observation=pick([None, 0, 3, "", [1, [2.5, None]], {"k": [0]}]),
                text=pick(["", "ACTION=a", 'quote " and \\']),
            )
        )
    return Episode(
        agent="a", env_id="e", seed=int(rng.integers(10**6)), n_actions=3,
        action_labels=["a", "b", "é"], steps=steps, env_kwargs={"n": 1, "x": [1, 2]},
        family=pick(["", "mab"]), outcome=pick([None, "win"]),
    )  # fmt: skip


def test_records_are_written_as_asdict_wrote_them_and_read_back_equal(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    episodes = [_random_episode(rng) for _ in range(300)]
    for episode in episodes:
        assert episode.to_json() == _asdict_json(episode)
    # an int reward of 0 is kept: it is not the default 0.0 float
    step = Step(t=1, action=0, label="a", reward=0)
    assert json.loads(Episode("a", "e", 0, 1, ["a"], [step]).to_json())["steps"][0] == {
        "t": 1, "action": 0, "label": "a", "reward": 0,
    }  # fmt: skip
    path = tmp_path / "episodes.jsonl"
    for i, episode in enumerate(episodes):
        episode.seed = i  # distinct keys: the reader keeps each (agent, env, seed) once
    write_episodes(path, episodes)
    again = read_episodes(path)
    assert [ep.to_json() for ep in again] == [ep.to_json() for ep in episodes]


def test_records_written_before_shaping_was_retired_still_read(tmp_path: Path) -> None:
    old = (
        '{"agent":"llm","env_id":"e","seed":0,"n_actions":2,"action_labels":["a","b"],'
        '"steps":[{"t":1,"action":1,"label":"b","reward":0.5,"valid":false,"shaping":-5.0}]}'
    )
    path = tmp_path / "episodes.jsonl"
    path.write_text(old + "\n", encoding="utf-8")
    (episode,) = read_episodes(path)
    assert not episode.steps[0].valid and episode.steps[0].reward == 0.5
    assert episode.agent_settings == {}  # not recorded then: nothing is guessed
    assert "shaping" not in episode.to_json()


@pytest.mark.parametrize(
    "value",
    [
        0, -3, 2**70, 1.5, float("inf"), "s", True, None,
        np.int64(4), np.float32(0.1), np.bool_(True),
        np.arange(6, dtype=np.int8).reshape(2, 3), np.array([0.1, np.nan], dtype=np.float32),
        np.array([True, False]), np.array(7, dtype=np.uint64), (1, np.int16(2)),
        {"board": np.zeros(3, dtype=np.int8), "turn": 1}, [np.float64(2.5)],
    ],
)  # fmt: skip
def test_to_jsonable_equals_the_json_round_trip(value: object) -> None:
    def encode(obj: object) -> object:
        return obj.item() if isinstance(obj, np.generic) else obj.tolist()

    round_trip = json.loads(json.dumps(value, default=encode))
    converted = to_jsonable(value)
    assert json.dumps(converted) == json.dumps(round_trip)
    assert type(converted) is type(round_trip)


def _turns_for(histories: list[list[Step]], n_arms: int) -> list[Turn]:
    env = text_env(make("agentbench/GaussianBandit-v0", n_arms=n_arms))
    return [Turn(env, "e", 0, {}, history, np.random.default_rng(0)) for history in histories]


def test_incremental_arm_statistics_equal_the_recount_on_random_histories() -> None:
    rng = np.random.default_rng(1)
    n_arms = 4
    statistics = ArmStatistics()
    histories: list[list[Step]] = [[] for _ in range(6)]
    for _ in range(60):
        # grow some histories by 0-2 steps, replace one, shrink one, rebuild one as a copy
        for history in histories:
            for _ in range(int(rng.integers(0, 3))):
                action = int(rng.integers(n_arms))
                history.append(Step(len(history) + 1, action, "x", float(rng.normal())))
        change = int(rng.integers(4))
        if change == 0:
            histories[int(rng.integers(6))] = []
        elif change == 1 and histories[0]:
            histories[0].pop()
        elif change == 2 and histories[1]:
            histories[1][-1] = Step(1, int(rng.integers(n_arms)), "x", float(rng.normal()))
        else:
            histories[2] = list(histories[2])
        batch = [histories[i] for i in rng.permutation(6)[: int(rng.integers(1, 7))]]
        for history, (counts, sums) in zip(
            batch, statistics.of_batch(_turns_for(batch, n_arms)), strict=True
        ):
            expected_counts, expected_sums = arm_statistics(history, n_arms)
            assert counts.tolist() == expected_counts.tolist()
            assert sums.tolist() == expected_sums.tolist()  # bit for bit, not approx
            assert sums.dtype == np.float64


@pytest.mark.parametrize("name", ["ucb", "thompson", "epsilon-greedy", "greedy"])
def test_incremental_agents_play_the_same_episodes_as_fresh_ones(name: str) -> None:
    """An agent reused across runs and batch sizes plays what a fresh agent plays."""
    env_id = "agentbench/GaussianBandit-5arms-medium-button-v0"
    seeds = list(range(10))
    reused = make_agent(name=name)
    first = play(reused, env_id, seeds, num_envs=3)
    again = play(reused, env_id, seeds, num_envs=7)
    fresh = play(make_agent(name=name), env_id, seeds, num_envs=1)
    for episodes in (again, fresh):
        assert [ep.to_json() for ep in episodes] == [ep.to_json() for ep in first]
