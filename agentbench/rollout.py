"""The one loop that plays an agent against a batch of envs.

Up to ``num_envs`` episodes run at once; each decision step asks the agent
for all live envs in one call (an LLM agent batches its generation). When an
episode ends, its slot starts the next seed, so episodes of different lengths
(tic-tac-toe) keep the batch full. Every random draw is seeded from the
episode's seed, never from the batch composition: the same seed gives the
same episode whatever ``num_envs`` is (``sample`` gives a seed further
independent streams for the agent).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from agentbench.agent.interface import Agent, Decision, Turn, resolved_settings
from agentbench.envs import get_preset, make, text_env
from agentbench.envs.protocol import TextEnv
from agentbench.errors import ConfigError
from agentbench.records import Episode, Step, to_jsonable

# Independent random streams derived from an episode seed.
_AGENT_STREAM = 1  # the agent's own draws (random baseline, epsilon, sampling)
_FALLBACK_STREAM = 2  # the random legal action that replaces an invalid answer


def agent_rng(seed: int, sample: int = 0) -> np.random.Generator:
    """The agent's generator for the episode with this seed.

    ``sample`` j > 0 gives sample j of the same seed its own stream (the k samples per
    context of expert iteration): the env, so its reward tape, and the fallback for an
    invalid answer stay the seed's, while the agent's draws (the LLM's sampling seeds,
    epsilon) differ. Sample 0 is the stream of every ordinary rollout.
    """
    if sample < 0:
        raise ConfigError(f"sample must be 0 or more, got {sample}")
    return np.random.default_rng(
        [seed, _AGENT_STREAM] if sample == 0 else [seed, _AGENT_STREAM, sample]
    )


@dataclass
class _Slot:
    env: gym.Env
    view: TextEnv
    episode: Episode
    observation: Any
    info: dict[str, Any]
    rng: np.random.Generator
    fallback: np.random.Generator


def rollout(
    agent: Agent,
    env_id: str,
    seeds: Iterable[int],
    *,
    num_envs: int = 64,
    env_kwargs: dict[str, Any] | None = None,
    on_episode: Callable[[Episode], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    on_decision: Callable[[Episode, Step, Decision], None] | None = None,
    sample: int = 0,
) -> list[Episode]:
    """Play one episode per seed and return the episodes in the order they finished.

    ``on_episode`` gets each finished episode; ``on_step`` the number of env
    steps taken by each batched decision step (for progress bars);
    ``on_decision`` every recorded step with the agent's full Decision (its
    extras hold what the records leave out, e.g. token ids and log-probs for
    RL fine-tuning). ``sample`` picks the agent's random stream of every seed
    (:func:`agent_rng`); 0, the default, is the stream evaluations use.
    """
    env_kwargs = dict(env_kwargs or {})
    family = get_preset(env_id).family
    settings = resolved_settings(agent)
    pending = deque(int(seed) for seed in seeds)
    envs = [make(env_id, **env_kwargs) for _ in range(min(num_envs, len(pending)))]
    slots: list[_Slot] = [_start(env, env_id, env_kwargs, family, agent, settings,
                                 pending.popleft(), sample) for env in envs]  # fmt: skip
    finished: list[Episode] = []
    while slots:
        turns = [
            Turn(slot.view, env_id, slot.observation, slot.info, slot.episode.steps, slot.rng)
            for slot in slots
        ]
        decisions = agent.act(turns)
        if len(decisions) != len(turns):
            raise RuntimeError(
                f"agent {agent.name!r} returned {len(decisions)} decisions for {len(turns)} turns"
            )
        if on_step is not None:
            on_step(len(slots))
        still_live: list[_Slot] = []
        for slot, decision in zip(slots, decisions, strict=True):
            done = _advance(slot, decision)
            if on_decision is not None:
                on_decision(slot.episode, slot.episode.steps[-1], decision)
            if not done:
                still_live.append(slot)
                continue
            finished.append(slot.episode)
            if on_episode is not None:
                on_episode(slot.episode)
            if pending:
                still_live.append(_start(slot.env, env_id, env_kwargs, family, agent,
                                         settings, pending.popleft(), sample))  # fmt: skip
            else:
                slot.env.close()
        slots = still_live
    return finished


def _start(
    env: gym.Env,
    env_id: str,
    env_kwargs: dict[str, Any],
    family: str,
    agent: Agent,
    settings: dict[str, Any],
    seed: int,
    sample: int,
) -> _Slot:
    observation, info = env.reset(seed=seed)
    view = text_env(env)
    episode = Episode(
        agent=agent.name,
        env_id=env_id,
        seed=seed,
        n_actions=int(env.action_space.n),
        action_labels=list(view.action_labels()),
        env_kwargs=to_jsonable(env_kwargs),
        family=family,
        agent_settings=dict(settings),
    )
    fallback = np.random.default_rng([seed, _FALLBACK_STREAM])
    return _Slot(env, view, episode, observation, info, agent_rng(seed, sample), fallback)


def _advance(slot: _Slot, decision: Decision) -> bool:
    """Execute one decision in the slot's env and record the step; True when the episode ended.

    An answer that names no legal action is invalid: the env plays a random legal action
    (the fallback stream), or, when the agent forced an answer (``extras["forced"]``),
    the forced one."""
    legal = slot.view.legal_actions()
    forced = decision.extras.get("forced")
    proposed = forced["proposed"] if forced else decision.action
    valid = proposed is not None and proposed in legal
    if forced:
        action = int(decision.action)
    else:
        action = int(proposed) if valid else int(slot.fallback.choice(legal))
    in_space = proposed is not None and 0 <= proposed < slot.episode.n_actions
    state = slot.view.state_text()
    observation, reward, terminated, truncated, info = slot.env.step(action)
    executed = int(info.get("executed_action", action))
    slot.episode.steps.append(
        Step(
            t=len(slot.episode.steps) + 1,
            action=executed,
            label=slot.episode.action_labels[executed],
            reward=float(reward),
            valid=valid,
            # a real action of the env that the current state forbids
            illegal=bool(info.get("illegal", False)) or (in_space and not valid),
            proposed=None if proposed is None else int(proposed),
            expected_reward=_maybe_float(info.get("expected_reward")),
            optimal_action=_maybe_int(info.get("optimal_action")),
            regret=_maybe_float(info.get("regret")),
            state=state,
            observation=to_jsonable(slot.observation),
            text=decision.text,
            forced=bool(forced),
            forced_probability=float(forced["probability"]) if forced else None,
            shown_labels=decision.extras.get("shown_labels"),
            mechanism=decision.extras.get("mechanism"),
        )
    )
    slot.observation, slot.info = observation, info
    if terminated or truncated:
        slot.episode.outcome = info.get("outcome")
        return True
    return False


def _maybe_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _maybe_int(value: Any) -> int | None:
    return None if value is None else int(value)


def play(agent: Agent, env_id: str, seeds: Sequence[int], **kwargs: Any) -> list[Episode]:
    """:func:`rollout`, with the episodes sorted by seed."""
    return sorted(rollout(agent, env_id, seeds, **kwargs), key=lambda ep: ep.seed)
