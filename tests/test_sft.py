"""SFT on expert data: the dataset (prompts as the LLM agent builds them, targets ending
in the UCB expert's action, thought numbers equal to ucb_values by hand) and learning on
a tiny model: behaviour cloning and thought cloning take a model that never answers
validly to valid answers, and thought cloning to regret clearly below random."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest
from fixed_bandits import (
    fixed_arms_bandit,
    learning_generator,
    learning_threads,
    registered,
    report_figures,
)

from agentbench.agent.interface import Decision, Turn
from agentbench.agent.llm import LLMAgent, LLMAgentSettings
from agentbench.agent.parsing import format_action, parse_action
from agentbench.baselines import make_agent
from agentbench.baselines.bandit import UCBAgent, ucb_values
from agentbench.errors import ConfigError
from agentbench.metrics import summarize
from agentbench.models.tiny import tiny_generator
from agentbench.records import Step
from agentbench.rlft.sft import SFTConfig, expert_dataset, train_sft, ucb_thought
from agentbench.rollout import play

SFT_ENV = "agentbench-test/SFTFixedArmsBandit-v0"
MEANS = (0.0, 1.0)  # well separated: the UCB expert settles on arm 1 within 5 steps
HORIZON = 5
TRAIN_SEEDS = range(48)
EVAL_SEEDS = range(10_000, 10_032)  # held out


SFTFixedArmsBandit = fixed_arms_bandit(MEANS, HORIZON)


@pytest.fixture(scope="module", autouse=True)
def sft_env():
    with registered(SFT_ENV, SFTFixedArmsBandit) as env_id:
        yield env_id


@pytest.fixture(scope="module", autouse=True)
def torch_threads():
    with learning_threads():
        yield


# ---------------------------------------------------------------- dataset


@pytest.mark.parametrize("mode", ["behaviour", "thought"])
def test_targets_end_with_the_experts_action(mode: str):
    examples = expert_dataset(SFT_ENV, range(3), mode=mode)
    assert len(examples) == 3 * HORIZON
    episodes = play(UCBAgent(), SFT_ENV, range(3))
    actions = [step.action for ep in episodes for step in ep.steps]
    assert [ex.action for ex in examples] == actions  # the expert's own play, seed by seed
    for example in examples:
        labels = [str(a) for a in range(len(MEANS))]
        assert example.target.endswith(format_action(example.label))
        parsed = parse_action(example.target, labels)
        assert parsed.index == example.action and parsed.valid
        if mode == "behaviour":
            assert example.target == format_action(example.label)
        else:
            assert len(example.target.splitlines()) == len(MEANS) + 1


@pytest.mark.parametrize(("cot", "mode"), [(False, "behaviour"), (True, "thought")])
def test_prompts_equal_what_the_llm_agent_builds(cot: bool, mode: str):
    examples = expert_dataset(SFT_ENV, range(2), mode=mode)
    seen: list[tuple[int, int, Any]] = []
    agent = LLMAgent(tiny_generator(seed=0), LLMAgentSettings(cot=cot, budget=4))
    ucb = UCBAgent()

    class Both:  # the LLM agent's prompt, the expert's action: same histories
        name = "both"

        def act(self, turns: list[Turn]) -> list[Decision]:
            for turn in turns:
                chat = agent._prepare(0, turn).chat
                seen.append((len(turn.history), id(turn.history), chat))
            return ucb.act(turns)

        def supports(self, family: str) -> bool:
            return True

    play(Both(), SFT_ENV, range(2), num_envs=1)
    assert [chat for _, _, chat in seen] == [ex.chat for ex in examples]


def test_thought_numbers_equal_ucb_values_by_hand():
    history = [
        Step(t=1, action=0, label="0", reward=0.5, valid=True),
        Step(t=2, action=0, label="0", reward=0.25, valid=True),
        Step(t=3, action=1, label="1", reward=1.0, valid=True),
    ]
    text, values = ucb_thought(["0", "1", "2"], history)
    # arm 0: n=2 mean 0.375, ucb 0.375 + sqrt(2 ln 3 / 2); arm 1: 1 + sqrt(2 ln 3)
    by_hand = [0.375 + math.sqrt(math.log(3)), 1.0 + math.sqrt(2 * math.log(3)), math.inf]
    np.testing.assert_allclose(values, by_hand)
    np.testing.assert_allclose(values, ucb_values(np.array([2, 1, 0]), np.array([0.75, 1, 0]), 3))
    assert text.splitlines() == [
        f"0: n=2 mean=0.38 ucb={by_hand[0]:.2f}",
        f"1: n=1 mean=1 ucb={by_hand[1]:.2f}",
        "2: untried",
    ]
    assert expert_dataset(SFT_ENV, range(1), mode="thought")[0].target.startswith(
        "0: untried\n1: untried\nACTION="
    )


def test_config_and_mode_errors():
    with pytest.raises(ConfigError, match="mode"):
        expert_dataset(SFT_ENV, range(1), mode="dance")
    with pytest.raises(ConfigError, match="batch_size"):
        SFTConfig(batch_size=0)
    with pytest.raises(ConfigError, match="no SFT examples"):
        train_sft(tiny_generator(seed=0), [], SFTConfig())


# ---------------------------------------------------------------- learning


def _score(agent: Any) -> dict[str, float]:
    summary = summarize(play(agent, SFT_ENV, EVAL_SEEDS, num_envs=len(EVAL_SEEDS)))
    return {
        "valid": 1.0 - summary["invalid_rate"]["mean"],
        "regret": summary["final_regret"]["mean"],
    }


@pytest.fixture(scope="module")
def random_regret() -> float:
    return _score(make_agent("random"))["regret"]


def _clone(mode: str, cot: bool, epochs: int, budget: int) -> tuple[dict, dict, list, float]:
    start_time = time.perf_counter()
    generator = learning_generator(word_tokens=())  # byte-level: ACTION= spelled out
    agent = LLMAgent(generator, LLMAgentSettings(cot=cot, budget=budget))
    before = _score(agent)
    examples = expert_dataset(SFT_ENV, TRAIN_SEEDS, mode=mode)
    config = SFTConfig(learning_rate=3e-3, lr_min=3e-4, epochs=epochs, batch_size=16)
    records = train_sft(generator, examples, config)
    after = _score(agent)
    return before, after, records, time.perf_counter() - start_time


@pytest.mark.slow
@pytest.mark.learning
def test_behaviour_cloning_learns_valid_answers(random_regret: float):
    before, after, records, seconds = _clone("behaviour", cot=False, epochs=2, budget=16)
    report_figures(**{f"before_{k}": v for k, v in before.items()},
                   **{f"after_{k}": v for k, v in after.items()},
                   random_regret=random_regret, seconds=seconds)  # fmt: skip
    assert before["valid"] < 0.05
    assert after["valid"] > 0.9
    assert records[-1]["loss"] < 0.5 * records[0]["loss"]


@pytest.mark.slow
@pytest.mark.learning
def test_thought_cloning_learns_valid_answers_and_beats_random(random_regret: float):
    before, after, records, seconds = _clone("thought", cot=True, epochs=6, budget=96)
    report_figures(**{f"before_{k}": v for k, v in before.items()},
                   **{f"after_{k}": v for k, v in after.items()},
                   random_regret=random_regret, seconds=seconds)  # fmt: skip
    assert before["valid"] < 0.05
    # measured 0.86 (greedy, 32 held-out episodes); behaviour cloning reaches 1.0
    assert after["valid"] > 0.8
    assert after["regret"] < 0.7 * random_regret
    assert records[-1]["loss"] < 0.5 * records[0]["loss"]
