"""Multi-armed bandits: Gaussian and Bernoulli, as a single env and a native vector env.

Common random numbers: at reset each episode draws its arm means and a reward
*tape* of shape (n_arms, horizon): the n-th pull of arm a pays ``tape[a, n]``
whatever was pulled before. Two agents given the same seed therefore see the
same draws from every arm, which makes agent comparisons paired.

The vector env draws the very same instances and tapes (sub-env i seeded with
seed + i, as Gymnasium's SyncVectorEnv does), then steps all of them as numpy
arrays, so a single env with seed s and sub-env i of a vector env reset with
seed s - i play identical episodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode

from agentbench.envs.protocol import (
    INFO_ACTION_LABEL,
    INFO_LEGAL_ACTIONS,
    check_action,
    format_transition,
)
from agentbench.errors import ConfigError

# The button variant's labels (SPEC.md 1.1): one colour per arm, enough for 20 arms.
COLOUR_LABELS: tuple[str, ...] = (
    "blue", "green", "red", "yellow", "orange", "purple", "pink", "brown", "black", "white",
    "gray", "cyan", "magenta", "lime", "teal", "navy", "maroon", "olive", "gold", "silver",
)  # fmt: skip

DISTRIBUTIONS = ("gaussian", "bernoulli")
LABEL_VARIANTS = ("button", "continuous")
# Gaussian reward standard deviation per noise level (SPEC.md 1.1).
GAUSSIAN_NOISE_STD = {"low": 0.1, "medium": 1.0, "high": 3.0}
# Bernoulli gap between the best arm and every other arm per noise level: best
# arm mean 0.5 + gap/2, the others 0.5 - gap/2 (low and medium match
# BanditBench's easy and hard settings).
BERNOULLI_GAP = {"low": 0.5, "medium": 0.2, "high": 0.1}
DEFAULT_HORIZON = 50


@dataclass(frozen=True)
class BanditSpec:
    """The settings of one bandit family member; validated on construction."""

    distribution: str = "gaussian"
    n_arms: int = 10
    noise: str = "medium"
    labels: str = "button"
    horizon: int = DEFAULT_HORIZON

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError(
                f"unknown bandit distribution {self.distribution!r}: accepted are "
                f"{', '.join(DISTRIBUTIONS)}"
            )
        if not isinstance(self.n_arms, (int, np.integer)) or self.n_arms < 2:
            raise ConfigError(f"n_arms must be an integer of at least 2, got {self.n_arms!r}")
        if self.labels not in LABEL_VARIANTS:
            raise ConfigError(
                f"unknown label variant {self.labels!r}: accepted are {', '.join(LABEL_VARIANTS)}"
            )
        if self.labels == "button" and self.n_arms > len(COLOUR_LABELS):
            raise ConfigError(
                f"the button variant has {len(COLOUR_LABELS)} colours, so at most "
                f"{len(COLOUR_LABELS)} arms; got n_arms={self.n_arms} (use labels='continuous')"
            )
        if self.noise not in GAUSSIAN_NOISE_STD:
            raise ConfigError(
                f"unknown noise level {self.noise!r}: accepted are {', '.join(GAUSSIAN_NOISE_STD)}"
            )
        if not isinstance(self.horizon, (int, np.integer)) or self.horizon < 1:
            raise ConfigError(f"horizon must be an integer of at least 1, got {self.horizon!r}")

    @property
    def arm_labels(self) -> list[str]:
        if self.labels == "button":
            return list(COLOUR_LABELS[: self.n_arms])
        return [str(i) for i in range(self.n_arms)]

    def draw_instance(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Arm means (n_arms,) and reward tape (n_arms, horizon) for one episode."""
        k, t = self.n_arms, self.horizon
        if self.distribution == "gaussian":
            means = rng.uniform(0.0, 1.0, size=k)
            tape = means[:, None] + GAUSSIAN_NOISE_STD[self.noise] * rng.standard_normal((k, t))
        else:
            gap = BERNOULLI_GAP[self.noise]
            means = np.full(k, 0.5 - gap / 2)
            means[rng.integers(k)] = 0.5 + gap / 2
            tape = (rng.random((k, t)) < means[:, None]).astype(np.float64)
        return means, tape

    def task_instruction(self) -> str:
        reward_words = (
            "a real-valued reward drawn from a distribution"
            if self.distribution == "gaussian"
            else "a reward of 0 or 1, drawn from a distribution"
        )
        labels = ", ".join(self.arm_labels)
        if self.labels == "button":
            setting = f"You are in a room with {self.n_arms} buttons labelled {labels}."
            thing, act = "button", "press"
        else:
            setting = f"You are choosing among {self.n_arms} actions, numbered {labels}."
            thing, act = "action", "choose"
        return (
            f"{setting} Each {thing} gives {reward_words} that is specific to that {thing} "
            f"and unknown to you; the distributions do not change over time. You have "
            f"{self.horizon} turns; at each turn you {act} one {thing}. Your goal is to "
            f"maximise the total reward over all {self.horizon} turns."
        )


def _step_info(means: np.ndarray, action: np.ndarray, steps_done: np.ndarray) -> dict[str, Any]:
    """Per-step info for a batch: what analysis needs (expected reward, best arm, regret)."""
    rows = np.arange(means.shape[0])
    expected = means[rows, action]
    optimal_action = means.argmax(axis=1)
    optimal_expected = means[rows, optimal_action]
    return {
        "expected_reward": expected,
        "optimal_action": optimal_action,
        "optimal_expected_reward": optimal_expected,
        "regret": optimal_expected - expected,
        "step": steps_done,
    }


class MultiArmedBanditEnv(gym.Env):
    """A K-armed Gaussian or Bernoulli bandit with a fixed horizon.

    Observation: the number of steps taken so far (a bandit has no state; the
    reward is the signal). The episode terminates after ``horizon`` steps.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        distribution: str = "gaussian",
        n_arms: int = 10,
        noise: str = "medium",
        labels: str = "button",
        horizon: int = DEFAULT_HORIZON,
        render_mode: str | None = None,
    ) -> None:
        self.spec_params = BanditSpec(distribution, n_arms, noise, labels, horizon)
        if render_mode not in (None, "ansi"):
            raise ConfigError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(n_arms)
        self.observation_space = spaces.Discrete(horizon + 1)
        self._labels = self.spec_params.arm_labels
        self._means = np.zeros(n_arms)
        self._tape = np.zeros((n_arms, horizon))
        self._pulls = np.zeros(n_arms, dtype=np.int64)
        self._steps = 0
        self._needs_reset = True

    # -- Gymnasium API -------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        super().reset(seed=seed)
        self._means, self._tape = self.spec_params.draw_instance(self.np_random)
        self._pulls[:] = 0
        self._steps = 0
        self._needs_reset = False
        return 0, {INFO_LEGAL_ACTIONS: np.ones(self.spec_params.n_arms, dtype=np.int8)}

    def step(self, action: Any) -> tuple[int, float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise gym.error.ResetNeeded("the episode is over (or never started); call reset()")
        arm = check_action(action, self.spec_params.n_arms)
        reward = float(self._tape[arm, self._pulls[arm]])
        self._pulls[arm] += 1
        self._steps += 1
        terminated = self._steps >= self.spec_params.horizon
        self._needs_reset = terminated
        batch = _step_info(self._means[None], np.array([arm]), np.array([self._steps]))
        info = {key: value[0].item() for key, value in batch.items()}
        info[INFO_LEGAL_ACTIONS] = np.ones(self.spec_params.n_arms, dtype=np.int8)
        info[INFO_ACTION_LABEL] = self._labels[arm]
        return self._steps, reward, terminated, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        pulls = ", ".join(f"{lab}:{n}" for lab, n in zip(self._labels, self._pulls, strict=True))
        return f"step {self._steps}/{self.spec_params.horizon}; pulls {pulls}"

    # -- text protocol ------------------------------------------------------------
    def task_instruction(self) -> str:
        return self.spec_params.task_instruction()

    def action_labels(self) -> list[str]:
        return list(self._labels)

    def legal_actions(self) -> list[int]:
        return list(range(self.spec_params.n_arms))

    def state_text(self) -> str:
        return ""

    def transition_text(self, step: int, state: str, action: int, reward: float) -> str:
        return format_transition(step, self._labels[action], reward)

    # -- for analysis and tests ----------------------------------------------------
    @property
    def arm_means(self) -> np.ndarray:
        """Expected reward of each arm in the current episode (a copy)."""
        return self._means.copy()


class MultiArmedBanditVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` bandits stepped together as numpy arrays.

    Autoreset follows Gymnasium's default (next step): the step after a
    sub-env terminates resets it, ignores its action and returns reward 0.
    Infos are Gymnasium vector infos: arrays of length ``num_envs``.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int,
        distribution: str = "gaussian",
        n_arms: int = 10,
        noise: str = "medium",
        labels: str = "button",
        horizon: int = DEFAULT_HORIZON,
        render_mode: str | None = None,
    ) -> None:
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ConfigError(f"num_envs must be an integer of at least 1, got {num_envs!r}")
        self.spec_params = BanditSpec(distribution, n_arms, noise, labels, horizon)
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.single_action_space = spaces.Discrete(n_arms)
        self.single_observation_space = spaces.Discrete(horizon + 1)
        self.action_space = spaces.MultiDiscrete(np.full(num_envs, n_arms))
        self.observation_space = spaces.MultiDiscrete(np.full(num_envs, horizon + 1))
        self._rngs: list[np.random.Generator] = []
        self._means = np.zeros((num_envs, n_arms))
        self._tape = np.zeros((num_envs, n_arms, horizon))
        self._pulls = np.zeros((num_envs, n_arms), dtype=np.int64)
        self._steps = np.zeros(num_envs, dtype=np.int64)
        self._autoreset = np.zeros(num_envs, dtype=bool)

    def _redraw(self, which: np.ndarray) -> None:
        for i in np.flatnonzero(which):
            self._means[i], self._tape[i] = self.spec_params.draw_instance(self._rngs[i])
        self._pulls[which] = 0
        self._steps[which] = 0

    def reset(
        self,
        *,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ConfigError(
                    f"reset got {len(seeds)} seeds for {self.num_envs} envs: pass one int "
                    f"or a list of num_envs seeds"
                )
        self._rngs = [seeding.np_random(s)[0] for s in seeds]
        everything = np.ones(self.num_envs, dtype=bool)
        self._redraw(everything)
        self._autoreset[:] = False
        return self._steps.copy(), self._legal_info()

    def _legal_info(self) -> dict[str, Any]:
        mask = np.ones((self.num_envs, self.spec_params.n_arms), dtype=np.int8)
        return {INFO_LEGAL_ACTIONS: mask, f"_{INFO_LEGAL_ACTIONS}": np.ones(self.num_envs, bool)}

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._rngs:
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = np.asarray(actions)
        n_arms = self.spec_params.n_arms
        if (
            actions.shape != (self.num_envs,)
            or not np.issubdtype(actions.dtype, np.integer)
            or (actions < 0).any()
            or (actions >= n_arms).any()
        ):
            raise ConfigError(
                f"actions must be {self.num_envs} integers in 0..{n_arms - 1}, got {actions!r}"
            )
        resetting = self._autoreset.copy()
        self._redraw(resetting)
        live = ~resetting
        rows = np.arange(self.num_envs)
        pull_index = np.minimum(self._pulls[rows, actions], self.spec_params.horizon - 1)
        rewards = np.where(live, self._tape[rows, actions, pull_index], 0.0)
        self._pulls[rows[live], actions[live]] += 1
        self._steps[live] += 1
        terminated = live & (self._steps >= self.spec_params.horizon)
        self._autoreset = terminated.copy()

        info = _step_info(self._means, actions, self._steps.copy())
        info.update(self._legal_info())
        info[INFO_ACTION_LABEL] = np.array(self.spec_params.arm_labels, dtype=object)[actions]
        for key in list(info):
            if not key.startswith("_"):
                info[f"_{key}"] = live.copy()
        return (
            self._steps.copy(),
            rewards,
            terminated,
            np.zeros(self.num_envs, dtype=bool),
            info,
        )

    @property
    def arm_means(self) -> np.ndarray:
        """Expected reward of every arm of every sub-env, shape (num_envs, n_arms)."""
        return self._means.copy()
