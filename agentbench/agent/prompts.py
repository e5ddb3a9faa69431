"""The prompts an LLM agent answered, rebuilt from its episode records.

A record keeps what the prompt is made of rather than the prompt itself (which
would repeat the growing history at every step): the env id, its settings and the
episode's seed, the actions played, the agent's resolved settings, and at each
step the labels shown when they were shuffled and the mechanism that answered
from a template. Replaying the actions in a fresh env from that seed gives back
every state, legal-action list and history line, and :func:`build_context` the
exact chat, so any run can become SFT data, or be analysed again, without the
agent. ``tests/test_prompts.py`` checks the rebuilt chats against the ones a model
was sent, for every context setting and env family.
"""

from __future__ import annotations

from typing import Any

from agentbench.agent.context import build_context
from agentbench.agent.demonstrations import demonstrations_text
from agentbench.agent.llm import LLMAgentSettings, settings_from_dict
from agentbench.envs import make, text_env
from agentbench.errors import ConfigError
from agentbench.models.interface import Chat
from agentbench.records import Episode


def episode_prompts(episode: Episode) -> list[Chat | None]:
    """The chat each step's answer was generated for (the first pass, under
    self-correction), in step order; None for a step a template answered (try-all,
    epsilon-greedy: no model call). Raises ConfigError for a record without the LLM
    agent's settings (written by a baseline, or before agentbench recorded them)."""
    settings = _agent_settings(episode)
    env = make(episode.env_id, **episode.env_kwargs)
    try:
        observation, _ = env.reset(seed=episode.seed)
        view = text_env(env)
        k = settings.demonstrations
        shown = demonstrations_text(view, episode.family, k) if k else ""
        prompts: list[Chat | None] = []
        for t, step in enumerate(episode.steps):
            if step.mechanism is not None:
                prompts.append(None)
            else:
                prompts.append(build_context(view, episode.steps[:t], settings.context,
                                             display_labels=step.shown_labels,
                                             observation=observation,
                                             demonstrations=shown))  # fmt: skip
            observation, *_ = env.step(step.action)
    finally:
        env.close()
    return prompts


def _agent_settings(episode: Episode) -> LLMAgentSettings:
    recorded: dict[str, Any] = episode.agent_settings
    if "cot" not in recorded:
        raise ConfigError(
            f"episode {episode.agent} / {episode.env_name} / seed {episode.seed} holds no LLM "
            "agent settings: its prompts cannot be rebuilt (a baseline's episode, or a record "
            "written before agentbench recorded them)"
        )
    known = set(LLMAgentSettings.__dataclass_fields__)
    return settings_from_dict({k: v for k, v in recorded.items() if k in known})
