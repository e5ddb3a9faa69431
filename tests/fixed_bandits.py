"""Shared by the learning tests: bandits with fixed arm means, the torch thread count,
the tiny model they learn with, and the figures they report.

A random-init tiny model cannot learn in-context bandit play in a CPU test; with
the same arm means in every episode, lower regret means the policy learned from
rewards (or expert data) which arm pays.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agentbench.envs import register_env
from agentbench.envs import registration as env_registration
from agentbench.envs.bandits import MultiArmedBanditEnv


def fixed_arms_bandit(means: Sequence[float], default_horizon: int = 5) -> type:
    """A Gaussian bandit class (sigma 0.1) whose arm means are ``means`` in every episode."""

    class FixedArmsBandit(MultiArmedBanditEnv):
        def __init__(self, horizon: int = default_horizon, render_mode: str | None = None) -> None:
            super().__init__("gaussian", len(means), "low", "continuous", horizon, render_mode)

        def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
            observation, info = super().reset(seed=seed, options=options)
            self._means = np.array(means, dtype=float)
            noise = self.np_random.standard_normal(self._tape.shape)
            self._tape = self._means[:, None] + 0.1 * noise
            return observation, info

    return FixedArmsBandit


@contextmanager
def registered(env_id: str, env_class: type) -> Iterator[str]:
    """Register ``env_class`` as ``env_id`` for the duration of the block."""
    register_env(env_id, env_class, family="mab", description="test", preset=False)
    try:
        yield env_id
    finally:
        gym.registry.pop(env_id, None)
        env_registration._PRESETS.pop(env_id, None)


@contextmanager
def learning_threads() -> Iterator[None]:
    """Torch threads for the learning tests: 1 unless ``AGENTBENCH_TEST_THREADS`` says
    otherwise (scripts/check_learning_tests.sh runs them with 1 and 2). The test machine
    has 2 cores shared with other jobs: two OpenMP threads fighting for them made
    tiny-model rollouts ~50x slower than one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("AGENTBENCH_TEST_THREADS", "1")))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# "ACTION=" as one token: a real BPE vocabulary spells it in one to three tokens, the
# byte tokenizer in seven. For expert iteration and return-conditioned training the
# format is then one decision instead of a chain of seven samples, learned early
# whichever CPU kernels (AVX2, AVX-512, AMX) do the arithmetic. The PPO tests keep the
# bytes (see their docstrings for why).
LEARNING_WORD_TOKENS = ("ACTION=",)


def learning_generator(word_tokens: tuple[str, ...] = LEARNING_WORD_TOKENS) -> Any:
    """The tiny model a learning test trains (float32; ``ACTION=`` one token unless
    ``word_tokens`` says otherwise), initialised from seed 0, or from
    ``AGENTBENCH_LEARNING_SEED``: another start, to check that a test does not hinge
    on one lucky initialisation."""
    from agentbench.models.tiny import tiny_generator

    seed = int(os.environ.get("AGENTBENCH_LEARNING_SEED", "0"))
    return tiny_generator(seed=seed, word_tokens=word_tokens)


def learning_compute_dtype() -> str:
    """The PPO learning tests' ``compute_dtype``: float32 (what their assertions were
    measured in), unless ``AGENTBENCH_LEARNING_COMPUTE_DTYPE`` says otherwise, to see
    how learning fares under bf16 autocast (README, "Training precision")."""
    return os.environ.get("AGENTBENCH_LEARNING_COMPUTE_DTYPE", "float32")


def report_figures(**figures: float) -> None:
    """Print a learning test's measured figures on one line, and append them to the
    JSONL file named by ``AGENTBENCH_LEARNING_FIGURES`` (scripts/check_learning_tests.sh
    collects them per kernel setting and thread count)."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    rounded = {k: round(float(v), 3) for k, v in figures.items()}
    print(f"FIGURES {test} " + " ".join(f"{k}={v}" for k, v in rounded.items()))
    path = os.environ.get("AGENTBENCH_LEARNING_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"test": test, "figures": rounded}) + "\n")


WEAK_START_INVALID_TARGET = "I am not sure."


def weak_start(
    generator: Any,
    env_id: str,
    n_arms: int,
    steps: int = 30,
    valid_share: float = 0.25,
    seed: int = 0,
) -> None:
    """A few cross-entropy steps on real prompts of the env (no CoT): most targets are
    invalid text, a minority ``ACTION=k`` with k at random. The random-init tiny model
    never writes ``ACTION=``; after this it sometimes does, with no preference among
    arms: a start that learning from rewards can improve on both counts."""
    from agentbench.agent.llm import LLMAgent, LLMAgentSettings
    from agentbench.rlft.sft import SFTConfig, train_on_targets
    from agentbench.rollout import play

    rng = np.random.default_rng(seed)
    prompts: list[list[int]] = []
    agent = LLMAgent(generator, LLMAgentSettings(cot=False, temperature=1.0))

    def keep_prompt(episode: Any, step: Any, decision: Any) -> None:
        prompts.append(decision.extras["generation"].prompt_token_ids)

    play(agent, env_id, range(900_000, 900_008), num_envs=8, on_decision=keep_prompt)
    end = generator.tokenizer.eos_token_id

    def encode(text: str) -> list[int]:
        return list(generator.tokenizer(text, add_special_tokens=False)["input_ids"]) + [end]

    rows = rng.integers(len(prompts), size=16 * steps)
    targets = [
        encode(f"ACTION={rng.integers(n_arms)}")
        if rng.random() < valid_share
        else encode(WEAK_START_INVALID_TARGET)
        for _ in rows
    ]
    config = SFTConfig(learning_rate=3e-3, lr_min=3e-3, batch_size=16, seed=seed)
    train_on_targets(generator, [prompts[i] for i in rows], targets, config, "weak start")


def adam_weak_start(
    generator: Any,
    env_id: str,
    n_actions: int,
    settings: Any,
    seeds: range,
    valid_share: float,
    steps: int = 30,
) -> None:
    """The PPO learning tests' weak start: ``steps`` plain Adam steps (lr 3e-3, 16 rows)
    on prompts the agent (``settings``) meets in ``seeds``; a ``valid_share`` of the
    targets are ``ACTION=k`` with k uniform over ``n_actions``, the rest invalid text.
    The random-init tiny model never writes ``ACTION=``; after this it sometimes does,
    with no preference among actions. (The PPO tests' margins were measured from this
    start; :func:`weak_start` is the self-training tests' equivalent.)"""
    from agentbench.agent.llm import LLMAgent
    from agentbench.models.tiny import TURN_END
    from agentbench.rollout import play

    rng = np.random.default_rng(0)
    prompts: list[list[int]] = []
    agent = LLMAgent(generator, settings)

    def keep_prompt(episode: Any, step: Any, decision: Any) -> None:
        prompts.append(decision.extras["generation"].prompt_token_ids)

    play(agent, env_id, seeds, num_envs=len(seeds), on_decision=keep_prompt)
    end = generator.tokenizer.convert_tokens_to_ids(TURN_END)

    def encode(text: str) -> list[int]:
        return list(generator.tokenizer(text, add_special_tokens=False)["input_ids"]) + [end]

    optimizer = torch.optim.Adam(generator.model.parameters(), lr=3e-3)
    generator.model.train()
    for _ in range(steps):
        rows = rng.integers(len(prompts), size=16)
        targets = [
            encode(f"ACTION={rng.integers(n_actions)}")
            if rng.random() < valid_share
            else encode(WEAK_START_INVALID_TARGET)
            for _ in rows
        ]
        logprobs = generator.sequence_logprobs([prompts[i] for i in rows], targets)
        loss = -torch.cat(logprobs).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    generator.model.eval()
