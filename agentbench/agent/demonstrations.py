"""In-context demonstrations: whole episodes an expert played, shown before the task.

BanditBench's few-shot demonstrations (a form of algorithm distillation) in our own
code: ``demonstrations = k`` shows k episodes of UCB on the same multi-armed bandit,
with its settings, on seeds no suite, training or evaluation uses. Multi-armed
bandits only: the contextual bandit draws its movies per episode, so another
episode's actions are not this one's. The expert is computed here from the one place its
formula lives (:mod:`agentbench.confidence_bounds`), ties going to the first action,
so a demonstration is the same text on every call and every machine (up to the
env's own reward draws), and a record's prompts can be rebuilt exactly.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np

from agentbench.agent.context import ContextSettings, history_lines
from agentbench.confidence_bounds import ucb_values
from agentbench.envs import BANDIT_FAMILY, make, text_env
from agentbench.envs.protocol import TextEnv, format_reward
from agentbench.errors import ConfigError
from agentbench.metrics import arm_statistics
from agentbench.records import Step

DEMONSTRATION_SEED = 900_000_000  # expert episode i plays seed DEMONSTRATION_SEED + i
EXPERTS = {BANDIT_FAMILY: "UCB"}
HEADING = (
    "Examples: {k} earlier episode(s) of this task played by an expert strategy ({expert}), "
    "with other reward draws."
)


def demonstrations_text(env: TextEnv, family: str, k: int) -> str:
    """``k`` expert episodes on ``env``'s id and settings, as history lines under a heading."""
    if family not in EXPERTS:
        raise ConfigError(
            f"demonstrations are UCB's episodes on the same multi-armed bandit ({BANDIT_FAMILY!r})"
            f"; family {family!r} has none (the contextual bandit draws its actions per "
            "episode)"
        )
    spec = getattr(env, "spec", None)
    if spec is None:
        raise ConfigError("demonstrations need an env made by id (gymnasium.make), got none")
    return _demonstrations(spec.id, json.dumps(spec.kwargs, sort_keys=True), k)


@functools.lru_cache(maxsize=64)
def _demonstrations(env_id: str, kwargs: str, k: int) -> str:
    env = make(env_id, **json.loads(kwargs))
    try:
        parts = [HEADING.format(k=k, expert=EXPERTS[BANDIT_FAMILY])]
        for i in range(k):
            view, steps = _expert_episode(env, DEMONSTRATION_SEED + i)
            total = format_reward(sum(step.reward for step in steps))
            lines = history_lines(view, steps, ContextSettings(history_length=None))
            parts.append("\n".join([f"Example {i + 1} (total reward {total}):", *lines]))
    finally:
        env.close()
    return "\n\n".join(parts)


def _expert_episode(env: Any, seed: int) -> tuple[TextEnv, list[Step]]:
    env.reset(seed=seed)
    view = text_env(env)
    labels = view.action_labels()
    steps: list[Step] = []
    done = False
    while not done:
        values = ucb_values(*arm_statistics(steps, len(labels)), len(steps))
        action = int(np.argmax(values))  # ties: the first action
        _, reward, terminated, truncated, _ = env.step(action)
        steps.append(Step(t=len(steps) + 1, action=action, label=labels[action],
                          reward=float(reward)))  # fmt: skip
        done = terminated or truncated
    return view, steps
