"""An LLM agent's prompts rebuilt from its records equal the prompts its model was sent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from agentbench.agent.llm import LLMAgent, LLMAgentSettings
from agentbench.agent.prompts import episode_prompts
from agentbench.baselines import make_agent
from agentbench.errors import ConfigError
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
            labels = ACTION_LIST_PATTERN.findall(chat[-1]["content"])[-1].split(", ")
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
    first_pass = [chat for chat in recorder.chats if len(chat) == 1]  # not the review chats
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
