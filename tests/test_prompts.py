"""An LLM agent's prompts rebuilt from its records equal the prompts its model was sent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from agentbench.agent.llm import SELF_CORRECTION_PROMPT, LLMAgent, LLMAgentSettings
from agentbench.agent.prompts import episode_prompts
from agentbench.baselines import make_agent
from agentbench.confidence_bounds import linucb_terms, ucb_values
from agentbench.envs.protocol import format_reward
from agentbench.errors import ConfigError
from agentbench.metrics import arm_statistics
from agentbench.models.interface import Chat, Generation, GenerationConfig
from agentbench.records import Episode, read_episodes
from agentbench.rollout import play
from agentbench.testing.planted import ACTION_LIST_PATTERN

BANDIT = "agentbench/GaussianBandit-5arms-medium-button-v0"
SHORT = {"horizon": 8}


class Recorder:
    """Keeps every chat it is sent; answers a listed label, or (1 time in 4) nothing
    parseable, by the seed it is given."""

    name = "recorder"

    def __init__(self) -> None:
        self.chats: list[Chat] = []

    def generate(
        self, prompts: Sequence[Chat], config: GenerationConfig, seeds: Sequence[int] | None = None
    ) -> list[Generation]:
        replies = []
        for chat, seed in zip(prompts, seeds, strict=True):
            self.chats.append(chat)
            text = "\n".join(message["content"] for message in chat)
            labels = ACTION_LIST_PATTERN.findall(text)[-1].split(", ")
            draw = np.random.default_rng(seed)
            replies.append(
                Generation("no idea" if draw.random() < 0.25 else f"ACTION={draw.choice(labels)}")
            )
        return replies


def _played(
    env_id: str, settings: dict[str, Any], env_kwargs: dict[str, Any] | None = None
) -> tuple[list[Episode], list[Chat]]:
    recorder = Recorder()
    agent = LLMAgent(recorder, LLMAgentSettings(**settings), name="llm")
    episodes = play(agent, env_id, range(3), num_envs=1, env_kwargs=env_kwargs or {})
    review = SELF_CORRECTION_PROMPT.split("{", 1)[0]
    first_pass = [chat for chat in recorder.chats if not chat[-1]["content"].startswith(review)]
    return episodes, first_pass


@pytest.mark.parametrize(
    ("env_id", "settings", "env_kwargs"),
    [
        (BANDIT, {}, SHORT),
        (BANDIT, {"cot": False, "history_length": 3, "summary": True}, SHORT),
        (BANDIT, {"randomise_labels": True}, SHORT),
        (BANDIT, {"try_all": True, "epsilon": 0.3}, SHORT),
        (BANDIT, {"return_token": "good", "self_correction": True}, SHORT),
        ("agentbench/TicTacToe-random-v0", {"history_length": 0}, None),
        ("agentbench/TicTacToe-random-v0", {}, {"show_legal_actions": False}),
        ("agentbench/ContextualBandit-5arms-v0", {"history_length": 4}, {"horizon": 6}),
        (BANDIT, {"guide": "ucb", "randomise_labels": True}, SHORT),
        (BANDIT, {"demonstrations": 2, "cot": False}, SHORT),
        ("agentbench/ContextualBandit-5arms-v0", {"guide": "linucb"}, {"horizon": 6}),
        (BANDIT, {"context_layout": "turns", "summary": True, "history_length": 3}, SHORT),
        (
            BANDIT,
            {
                "context_layout": "turns",
                "return_token": "good",
                "self_correction": True,
                "try_all": True,
            },
            SHORT,
        ),  # fmt: skip
        ("agentbench/TicTacToe-random-v0", {"context_layout": "turns"}, None),
        (
            "agentbench/ContextualBandit-5arms-v0",
            {"context_layout": "turns", "guide": "linucb"},
            {"horizon": 6},
        ),  # fmt: skip
    ],
)
def test_rebuilt_prompts_are_the_prompts_the_model_was_sent(
    tmp_path, env_id: str, settings: dict[str, Any], env_kwargs: dict[str, Any] | None
) -> None:
    episodes, sent = _played(env_id, settings, env_kwargs)
    # through the records file, as a later analysis reads them
    path = tmp_path / "episodes.jsonl"
    path.write_text("".join(ep.to_json() + "\n" for ep in episodes))
    rebuilt = [chat for ep in read_episodes(path) for chat in episode_prompts(ep)]
    assert sent and [chat for chat in rebuilt if chat is not None] == sent
    templated = [step.mechanism for ep in episodes for step in ep.steps if step.mechanism]
    assert rebuilt.count(None) == len(templated)
    if settings.get("try_all"):
        assert templated and set(templated) <= {"try-all", "epsilon"}
    if settings.get("randomise_labels"):
        assert all(step.shown_labels for ep in episodes for step in ep.steps)
    assert any(not step.valid for ep in episodes for step in ep.steps)  # fallbacks replayed


def test_a_baselines_episode_has_no_prompts_to_rebuild() -> None:
    (episode,) = play(make_agent("ucb"), BANDIT, [0], env_kwargs=SHORT)
    with pytest.raises(ConfigError, match="holds no LLM agent settings"):
        episode_prompts(episode)


def test_the_ucb_guide_shows_ucbs_values_for_the_history() -> None:
    episodes, sent = _played(BANDIT, {"guide": "ucb", "cot": False}, SHORT)
    steps = episodes[0].steps
    chat = sent[6]  # the prompt after 6 steps of the first episode
    counts, sums = arm_statistics(steps[:6], 5)
    values = ucb_values(counts, sums, 6)
    text = chat[0]["content"]
    assert "t = 6 steps so far" in text
    for label, count, value in zip(episodes[0].action_labels, counts, values, strict=True):
        if count == 0:
            assert f"{label}: never chosen, value inf" in text
        else:
            assert f"= {format_reward(value)}" in text.split(f"\n{label}: ")[-1].split("\n")[0]


def test_the_linucb_guide_shows_linucbs_values_for_the_context() -> None:
    env = "agentbench/ContextualBandit-5arms-v0"
    episodes, sent = _played(env, {"guide": "linucb", "cot": False}, {"horizon": 6})
    steps = episodes[0].steps
    prediction, width = linucb_terms(steps[:3], np.asarray(steps[3].observation), 5)
    text = sent[3][0]["content"]
    for label, p, w in zip(episodes[0].action_labels, prediction, width, strict=True):
        assert f"{label}: {format_reward(p)} + {format_reward(w)} = {format_reward(p + w)}" in text


def test_a_guide_for_another_family_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"the linucb guide is for 'cb' envs \(contextual"):
        _played(BANDIT, {"guide": "linucb"}, SHORT)
    with pytest.raises(ConfigError, match="guide must be one of ucb, linucb"):
        LLMAgentSettings(guide="thompson")


def test_demonstrations_are_ucbs_own_episodes_on_the_same_env() -> None:
    from agentbench.agent.demonstrations import DEMONSTRATION_SEED

    episodes, sent = _played(BANDIT, {"demonstrations": 2, "cot": False}, SHORT)
    text = sent[0][0]["content"]
    assert "Examples: 2 earlier episode(s) of this task played by an expert strategy (UCB)" in text
    # Example 1 is what the UCB baseline plays on the first demonstration seed, at the
    # env's settings (8 steps), ties aside: UCB tries every arm first, then exploits.
    (ucb,) = play(make_agent("ucb"), BANDIT, [DEMONSTRATION_SEED], env_kwargs=SHORT)
    example = text.split("Example 1 (total reward ")[1].split("\n\n")[0].splitlines()[1:]
    assert len(example) == 8
    rewards = [float(line.split("Reward=")[1]) for line in example]
    actions = [line.split("Action=")[1].split(" ")[0] for line in example]
    assert sorted(actions[:5]) == sorted(episodes[0].action_labels)  # all five tried first
    by_arm = {step.label: [] for step in ucb.steps}
    for step in ucb.steps:
        by_arm[step.label].append(step.reward)
    assert rewards[:5] == [round(by_arm[a][0], 2) for a in actions[:5]]  # the same draws
    assert "Example 1" in text.split("Answer only with")[0]  # before the output instruction


def test_demonstrations_are_for_multi_armed_bandits_and_fixed_labels() -> None:
    with pytest.raises(ConfigError, match="family 'cb' has none"):
        _played("agentbench/ContextualBandit-5arms-v0", {"demonstrations": 1}, {"horizon": 4})
    with pytest.raises(ConfigError, match="cannot be combined with randomise_labels"):
        LLMAgentSettings(demonstrations=1, randomise_labels=True)
