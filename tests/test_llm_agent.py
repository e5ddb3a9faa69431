"""The LLM agent with a scripted text generator: context, parsing, invalid answers,
batching and every exploration switch."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from agentbench.agent.context import ContextSettings, build_context
from agentbench.agent.interface import Turn
from agentbench.agent.llm import (
    EPSILON_RATIONALE,
    LLMAgent,
    LLMAgentSettings,
    settings_from_dict,
)
from agentbench.baselines import make_agent
from agentbench.envs import make, text_env
from agentbench.errors import ConfigError
from agentbench.models.interface import Chat, Generation, GenerationConfig
from agentbench.records import Episode, Step
from agentbench.rollout import agent_rng, play

GOLDEN = Path(__file__).parent / "golden"


class ScriptedGenerator:
    """Answers each chat with ``reply(chat, config, seed)``; records every call."""

    name = "scripted"

    def __init__(self, reply: Callable[[Chat, GenerationConfig, int | None], str]) -> None:
        self.reply = reply
        self.calls: list[tuple[int, GenerationConfig]] = []

    def generate(
        self, prompts: Sequence[Chat], config: GenerationConfig, seeds: Sequence[int] | None = None
    ) -> list[Generation]:
        self.calls.append((len(prompts), config))
        seeds = seeds or [None] * len(prompts)
        return [
            Generation(self.reply(chat, config, seed))
            for chat, seed in zip(prompts, seeds, strict=True)
        ]

    def score(self, prompts, continuations):  # pragma: no cover - not used here
        raise NotImplementedError


def _first_listed_action(chat: Chat, config: GenerationConfig, seed: int | None) -> str:
    """Answer with the first action listed in the output instruction."""
    listed = re.search(r"one of the actions: ([^,.\n]+)", chat[0]["content"]).group(1)
    return f"Let me think. The first one looks fine. ACTION={listed.strip()}"


def _history(env_id: str, seed: int, actions: list[int]) -> tuple[object, list[Step]]:
    env = make(env_id)
    env.reset(seed=seed)
    view = text_env(env)
    steps = []
    for t, action in enumerate(actions, start=1):
        state = view.state_text()
        _, reward, *_ = env.step(action)
        label = view.action_labels()[action]
        steps.append(Step(t=t, action=action, label=label, reward=float(reward), state=state))
    return view, steps


GOLDEN_CASES = {
    "mab_button_cot": ("agentbench/GaussianBandit-5arms-medium-button-v0", [0, 3, 3], {}),
    "mab_continuous_direct": (
        "agentbench/BernoulliBandit-5arms-low-continuous-v0",
        [1, 2],
        {"cot": False},
    ),
    "mab_summary_last2": (
        "agentbench/GaussianBandit-5arms-low-button-v0",
        [0, 1, 1, 4],
        {"summary": True, "history_length": 2},
    ),
    "cb_cot": ("agentbench/ContextualBandit-5arms-v0", [2, 0], {}),
    "tictactoe_cot": ("agentbench/TicTacToe-random-v0", [4, 0], {}),
}


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_context_text_matches_the_golden_file(case: str) -> None:
    """Set UPDATE_GOLDEN=1 to rewrite the files after an intended change, then review the diff."""
    env_id, actions, settings = GOLDEN_CASES[case]
    view, history = _history(env_id, seed=7, actions=actions)
    chat = build_context(view, history, ContextSettings(**settings))
    assert len(chat) == 1 and chat[0]["role"] == "user"
    text = chat[0]["content"]
    path = GOLDEN / f"{case}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text()


def test_context_holds_the_spec_parts_in_order() -> None:
    view, history = _history("agentbench/GaussianBandit-5arms-medium-button-v0", 1, [0, 2])
    text = build_context(view, history)[0]["content"]
    order = [
        view.task_instruction(),
        "ACTION=X",
        "Step=1 Action=blue Reward=",
        "Step=2 Action=red Reward=",
        "Step 3: which action do you take?",
    ]
    positions = [text.index(part) for part in order]
    assert positions == sorted(positions)
    assert text.endswith("Step 3: which action do you take?")
    view, history = _history("agentbench/GaussianBandit-5arms-medium-button-v0", 1, [0, 1, 2, 3])
    short = build_context(view, history, ContextSettings(history_length=1))[0]["content"]
    assert "History of the last 1 of 4 steps" in short
    assert "Action=blue" not in short and "Step=4 Action=yellow" in short


def test_agent_plays_through_the_runner_with_one_generate_call_per_step() -> None:
    generator = ScriptedGenerator(_first_listed_action)
    agent = LLMAgent(generator, LLMAgentSettings(budget=64))
    episodes = play(agent, "agentbench/GaussianBandit-5arms-medium-button-v0", range(6), num_envs=6)
    assert len(generator.calls) == 50  # one batched call per step, not per env
    assert all(size == 6 for size, _ in generator.calls)
    assert generator.calls[0][1].max_new_tokens == 64 and generator.calls[0][1].temperature == 0
    for episode in episodes:
        assert all(step.valid and step.label == "blue" for step in episode.steps)
        assert episode.steps[0].text.endswith("ACTION=blue")


def test_episodes_record_the_settings_the_agent_ran_with_defaults_included() -> None:
    agent = LLMAgent(ScriptedGenerator(_first_listed_action), LLMAgentSettings(budget=64))
    (episode,) = play(agent, "agentbench/GaussianBandit-5arms-medium-button-v0", [0])
    settings = episode.agent_settings
    assert settings["model"] == "scripted" and settings["budget"] == 64
    assert settings == {"model": "scripted", **dataclasses.asdict(LLMAgentSettings(budget=64))}
    restored = Episode.from_dict(json.loads(episode.to_json()))
    assert restored.agent_settings == settings  # through the JSONL record
    (ucb,) = play(make_agent("ucb", c=0.5), "agentbench/GaussianBandit-5arms-medium-button-v0", [0])
    assert ucb.agent_settings == {"c": 0.5}


def test_without_cot_the_budget_is_16_tokens() -> None:
    generator = ScriptedGenerator(lambda chat, config, seed: "ACTION=0")
    agent = LLMAgent(generator, LLMAgentSettings(cot=False, budget=512))
    play(agent, "agentbench/BernoulliBandit-5arms-low-continuous-v0", [0])
    assert {config.max_new_tokens for _, config in generator.calls} == {16}


def test_an_unparseable_answer_is_a_random_legal_action_flagged_invalid() -> None:
    generator = ScriptedGenerator(lambda chat, config, seed: "I like turtles.")
    agent = LLMAgent(generator)
    (episode,) = play(agent, "agentbench/TicTacToe-random-v0", [3])
    assert all(not step.valid for step in episode.steps)
    assert not any(step.illegal for step in episode.steps)
    assert len({step.action for step in episode.steps}) == len(episode.steps)  # legal moves


def test_a_known_but_occupied_cell_is_invalid_and_illegal() -> None:
    generator = ScriptedGenerator(lambda chat, config, seed: "Centre is best. ACTION=4")
    (episode,) = play(LLMAgent(generator), "agentbench/TicTacToe-random-v0", [0])
    assert episode.steps[0].valid and episode.steps[0].action == 4
    assert not episode.steps[1].valid and episode.steps[1].illegal


def test_try_all_plays_every_arm_once_with_a_template_then_asks_the_model() -> None:
    generator = ScriptedGenerator(_first_listed_action)
    agent = LLMAgent(generator, LLMAgentSettings(try_all=True))
    (episode,) = play(agent, "agentbench/GaussianBandit-10arms-medium-button-v0", [2])
    first_ten = episode.steps[:10]
    assert sorted(step.action for step in first_ten) == list(range(10))
    assert all("have not tried" in s.text and s.valid for s in first_ten)
    assert len(generator.calls) == 40  # the model only from step 11 on
    # not on tic-tac-toe, where cells are not arms
    ttt = LLMAgent(ScriptedGenerator(_first_listed_action), LLMAgentSettings(try_all=True))
    (game,) = play(ttt, "agentbench/TicTacToe-random-v0", [2])
    assert "have not tried" not in game.steps[0].text


def test_epsilon_greedy_explores_at_the_configured_rate() -> None:
    generator = ScriptedGenerator(_first_listed_action)
    agent = LLMAgent(generator, LLMAgentSettings(epsilon=0.3))
    episodes = play(agent, "agentbench/GaussianBandit-5arms-medium-button-v0", range(20))
    steps = [s for ep in episodes for s in ep.steps]
    explored = [s for s in steps if s.text.startswith(EPSILON_RATIONALE.split("{")[0])]
    assert 0.24 < len(explored) / len(steps) < 0.36
    assert {s.label for s in explored} == {"blue", "green", "red", "yellow", "orange"}
    assert all(s.label == "blue" for s in steps if s not in explored)


def test_context_randomisation_shuffles_labels_and_maps_the_answer_back() -> None:
    seen_first_labels = set()

    def answer_first(chat, config, seed):
        listed = re.search(r"one of the actions: ([^\n]+)\.", chat[0]["content"]).group(1)
        seen_first_labels.add(listed.split(", ")[0])
        return _first_listed_action(chat, config, seed)

    agent = LLMAgent(ScriptedGenerator(answer_first), LLMAgentSettings(randomise_labels=True))
    (episode,) = play(agent, "agentbench/GaussianBandit-5arms-medium-button-v0", [4])
    # The instruction lists labels in env order, so "the first listed" is always blue, but
    # blue stands for a different arm each step: the executed actions vary.
    assert seen_first_labels == {"blue"}
    assert len({s.action for s in episode.steps}) == 5
    # The history shown at a step names each past action by that step's shuffle.
    turn_env = make("agentbench/GaussianBandit-5arms-medium-button-v0")
    turn_env.reset(seed=4)
    view = text_env(turn_env)
    history = episode.steps[:3]
    turn = Turn(view, "agentbench/GaussianBandit-5arms-medium-button-v0", 3, {}, history,
                agent_rng(99))  # fmt: skip
    decision = LLMAgent(ScriptedGenerator(_first_listed_action),
                        LLMAgentSettings(randomise_labels=True)).act([turn])[0]  # fmt: skip
    shown = decision.extras["shown_labels"]
    prompt = decision.extras["prompt"][0]["content"]
    for step in history:
        assert f"Step={step.t} Action={shown[step.action]} " in prompt
    assert decision.action == shown.index("blue")
    shuffling = LLMAgent(
        ScriptedGenerator(_first_listed_action), LLMAgentSettings(randomise_labels=True)
    )
    with pytest.raises(ConfigError, match="interchangeable action labels"):
        play(shuffling, "agentbench/TicTacToe-random-v0", [0])


def test_context_summary_is_in_the_prompt() -> None:
    prompts = []

    def capture(chat, config, seed):
        prompts.append(chat[0]["content"])
        return "ACTION=green"

    agent = LLMAgent(ScriptedGenerator(capture), LLMAgentSettings(summary=True))
    play(agent, "agentbench/GaussianBandit-5arms-medium-button-v0", [0])
    assert "blue: never chosen" in prompts[0]
    assert re.search(r"green: chosen 3 times, mean reward -?\d", prompts[3])


def test_self_correction_revises_and_the_final_answer_counts() -> None:
    def reply(chat, config, seed):
        if len(chat) == 1:
            return "First thought. ACTION=blue"
        assert chat[1] == {"role": "assistant", "content": "First thought. ACTION=blue"}
        assert "Check your reasoning" in chat[2]["content"]
        return "On reflection, ACTION=red"

    generator = ScriptedGenerator(reply)
    agent = LLMAgent(generator, LLMAgentSettings(self_correction=True))
    (episode,) = play(agent, "agentbench/GaussianBandit-5arms-medium-button-v0", [1])
    assert all(s.label == "red" for s in episode.steps)
    assert "[self-correction]" in episode.steps[0].text
    assert len(generator.calls) == 100  # two passes per step, each batched


def test_self_consistency_takes_the_majority_of_k_samples() -> None:
    def reply(chat, config, seed):
        assert config.temperature == 1.0
        return ["ACTION=green", "ACTION=green", "ACTION=red", "no idea"][seed % 4]

    # seeds come from the agent's generator; make the vote depend on them via seed % 4
    generator = ScriptedGenerator(reply)
    agent = LLMAgent(generator, LLMAgentSettings(self_consistency=16))
    (episode,) = play(agent, "agentbench/GaussianBandit-5arms-medium-button-v0", [5])
    assert generator.calls[0][0] == 16  # k samples in one batched call
    assert {s.label for s in episode.steps} <= {"green", "red"}
    assert sum(s.label == "green" for s in episode.steps) > 35


def test_settings_are_validated_with_clear_messages() -> None:
    with pytest.raises(ConfigError, match="unknown LLM agent settings \\['temprature'\\]"):
        settings_from_dict({"temprature": 1.0})
    with pytest.raises(ConfigError, match="epsilon must lie in"):
        LLMAgentSettings(epsilon=2.0)
    with pytest.raises(ConfigError, match="budget must be at least 1"):
        LLMAgentSettings(budget=0)
