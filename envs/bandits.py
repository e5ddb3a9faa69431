"""Multi-armed bandits: Gaussian and Bernoulli, as a single env and a native vector env.

Common random numbers: the n-th pull of arm a pays the same ``tape[a, n]``
whatever was pulled before, so two agents given the same seed see the same
draws from every arm, which makes agent comparisons paired. Two tape versions
exist, one per id suffix (a changed tape is a changed env):

- ``-v0``: at reset each episode draws its arm means and its whole reward tape,
  shape (n_arms, horizon), from the env's ``np.random.Generator``. Drawing
  n_arms x horizon values per episode for horizon pulls costs the vector env
  n_arms draws per step.
- ``-v1``: counter-based. The episode's key is a hash of (seed, episode number);
  the arm means and ``tape[a, n]`` are hashes of (key, index) turned into
  uniforms, normals (Box-Muller) or 0/1, so the vector env computes only the
  rewards that are pulled, for all sub-envs in a few numpy operations. The
  hash is SplitMix64's (Steele, Lea & Flood 2014). Rewards are a pure function
  of the seed; across CPUs numpy's SIMD ``log`` may round the last bit of a
  Gaussian reward differently.

The vector env plays the very same instances and tapes (sub-env i seeded with
seed + i, as Gymnasium's SyncVectorEnv does), so a single env with seed s and
sub-env i of a vector env reset with seed s - i play identical episodes.
"""

from __future__ import annotations

import math
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
from agentbench.envs.scenarios import DESCRIPTIONS, MAX_SCENARIO_ARMS, SCENARIOS
from agentbench.errors import ConfigError

# The button variant's labels (SPEC.md 1.1): one colour per arm, enough for 20 arms.
COLOUR_LABELS: tuple[str, ...] = (
    "blue", "green", "red", "yellow", "orange", "purple", "pink", "brown", "black", "white",
    "gray", "cyan", "magenta", "lime", "teal", "navy", "maroon", "olive", "gold", "silver",
)  # fmt: skip

DISTRIBUTIONS = ("gaussian", "bernoulli")
LABEL_VARIANTS = ("button", "continuous")  # the registered ids' variants
# labels= also takes a verbal scenario (envs/scenarios.py), given as an env setting
ACCEPTED_LABELS = (*LABEL_VARIANTS, *SCENARIOS)
# Gaussian reward standard deviation per noise level (SPEC.md 1.1).
GAUSSIAN_NOISE_STD = {"low": 0.1, "medium": 1.0, "high": 3.0}
# Bernoulli gap between the best arm and every other arm per noise level: best
# arm mean 0.5 + gap/2, the others 0.5 - gap/2 (low and medium match
# BanditBench's easy and hard settings).
BERNOULLI_GAP = {"low": 0.5, "medium": 0.2, "high": 0.1}
DEFAULT_HORIZON = 50
# Reward tapes, by the version suffix of the ids that use them (see the module docstring).
TAPE_VERSIONS = (0, 1)
MAX_SEED = 2**64 - 1  # a v1 seed is one 64-bit word

# SplitMix64: the state advances by the golden ratio, the output mixes the state.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_LOW_32 = np.uint64(0xFFFFFFFF)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function: a bijection of uint64 words (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * _MIX_1
    x = (x ^ (x >> np.uint64(27))) * _MIX_2
    return x ^ (x >> np.uint64(31))


def _words(key: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Output number ``index`` (0, 1, ...) of SplitMix64 started from ``key``, elementwise."""
    return _mix64(key + (np.asarray(index).astype(np.uint64) + np.uint64(1)) * _GOLDEN)


def _uniforms(words: np.ndarray) -> np.ndarray:
    """Uniforms on [0, 1) from the top 53 bits of each word (exact)."""
    return (words >> np.uint64(11)).astype(np.float64) * 2.0**-53


# Box-Muller's angle 2 pi u, u = k / 1024 + f with f < 1 / 1024: the cosine and sine of
# 2 pi k / 1024 come from a table, those of 2 pi f from their Taylor series (terms below
# 1e-16 dropped), so no np.cos per draw (numpy's float64 cos is scalar libm, 20x np.log).
_ANGLE_TABLE_BITS = 10
_ANGLE_TABLE = 2.0 * np.pi * np.arange(2**_ANGLE_TABLE_BITS) / 2**_ANGLE_TABLE_BITS
_COS_TABLE = np.array([math.cos(angle) for angle in _ANGLE_TABLE])
_SIN_TABLE = np.array([math.sin(angle) for angle in _ANGLE_TABLE])
_FINE_BITS = 32 - _ANGLE_TABLE_BITS
_FINE_MASK = np.uint64(2**_FINE_BITS - 1)


def _cos_2pi(turns: np.ndarray) -> np.ndarray:
    """cos(2 pi turns / 2**32) of 32-bit integers ``turns`` (uint64), to a few ulp."""
    coarse = (turns >> np.uint64(_FINE_BITS)).astype(np.intp)
    fine = (turns & _FINE_MASK).astype(np.float64) * (2.0 * np.pi * 2.0**-32)  # < 0.0062
    fine_2 = fine * fine
    cos_fine = 1.0 - fine_2 * (0.5 - fine_2 * (1.0 / 24.0))
    sin_fine = fine * (1.0 - fine_2 * (1.0 / 6.0 - fine_2 * (1.0 / 120.0)))
    return _COS_TABLE[coarse] * cos_fine - _SIN_TABLE[coarse] * sin_fine


def _normals(words: np.ndarray) -> np.ndarray:
    """Standard normals by Box-Muller from the two 32-bit halves of each word."""
    radius_u = ((words >> np.uint64(32)).astype(np.float64) + 1.0) * 2.0**-32  # in (0, 1]
    return np.sqrt(-2.0 * np.log(radius_u)) * _cos_2pi(words & _LOW_32)


def episode_keys(seeds: np.ndarray, episodes: np.ndarray) -> np.ndarray:
    """The v1 key of episode ``episodes[i]`` (0 after a seeded reset) of seed ``seeds[i]``."""
    return _words(_mix64(np.asarray(seeds, dtype=np.uint64)), episodes)


def _fresh_seeds(rng: np.random.Generator, n: int) -> list[int]:
    """``n`` v1 seeds for resets given none (``rng`` seeded from fresh entropy)."""
    return [int(s) for s in rng.integers(MAX_SEED, size=n, dtype=np.uint64, endpoint=True)]


def seed_word(seed: Any) -> int:
    """A v1 seed: an integer in 0..2**64 - 1, or one ConfigError naming the bad value."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"a seed must be an integer in 0..2**64-1, got {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ConfigError(f"a seed must be an integer in 0..2**64-1, got {seed!r}")
    return int(seed)


@dataclass(frozen=True)
class BanditSpec:
    """The settings of one bandit family member; validated on construction."""

    distribution: str = "gaussian"
    n_arms: int = 10
    noise: str = "medium"
    labels: str = "button"
    horizon: int = DEFAULT_HORIZON
    tape_version: int = 0  # how rewards are drawn: the id's version suffix (module docstring)
    description: str = "base"  # "detailed" also says how each arm's rewards are distributed

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError(
                f"unknown bandit distribution {self.distribution!r}: accepted are "
                f"{', '.join(DISTRIBUTIONS)}"
            )
        if not isinstance(self.n_arms, (int, np.integer)) or self.n_arms < 2:
            raise ConfigError(f"n_arms must be an integer of at least 2, got {self.n_arms!r}")
        if self.labels not in ACCEPTED_LABELS:
            raise ConfigError(
                f"unknown label variant {self.labels!r}: accepted are {', '.join(ACCEPTED_LABELS)}"
            )
        if self.labels == "button" and self.n_arms > len(COLOUR_LABELS):
            raise ConfigError(
                f"the button variant has {len(COLOUR_LABELS)} colours, so at most "
                f"{len(COLOUR_LABELS)} arms; got n_arms={self.n_arms} (use labels='continuous')"
            )
        if self.labels in SCENARIOS and self.n_arms > MAX_SCENARIO_ARMS:
            raise ConfigError(
                f"the {self.labels} scenario names {MAX_SCENARIO_ARMS} actions, so at most "
                f"{MAX_SCENARIO_ARMS} arms; got n_arms={self.n_arms}"
            )
        if self.description not in DESCRIPTIONS:
            raise ConfigError(
                f"unknown description {self.description!r}: accepted are {', '.join(DESCRIPTIONS)}"
            )
        if self.noise not in GAUSSIAN_NOISE_STD:
            raise ConfigError(
                f"unknown noise level {self.noise!r}: accepted are {', '.join(GAUSSIAN_NOISE_STD)}"
            )
        if not isinstance(self.horizon, (int, np.integer)) or self.horizon < 1:
            raise ConfigError(f"horizon must be an integer of at least 1, got {self.horizon!r}")
        if self.tape_version not in TAPE_VERSIONS or isinstance(self.tape_version, bool):
            raise ConfigError(
                f"unknown tape_version {self.tape_version!r}: accepted are "
                f"{', '.join(map(str, TAPE_VERSIONS))}"
            )

    @property
    def arm_labels(self) -> list[str]:
        if self.labels == "button":
            return list(COLOUR_LABELS[: self.n_arms])
        if self.labels in SCENARIOS:
            return SCENARIOS[self.labels].names[: self.n_arms]
        return [str(i) for i in range(self.n_arms)]

    def draw_instance(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """v0: arm means (n_arms,) and reward tape (n_arms, horizon) for one episode."""
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

    # v1: outputs 0..n_arms-1 of an episode's stream set its means, output
    # n_arms + a * horizon + n its tape[a, n].
    def counter_means(self, keys: np.ndarray) -> np.ndarray:
        """v1: arm means (len(keys), n_arms) of the episodes with these keys."""
        k = self.n_arms
        if self.distribution == "gaussian":
            return _uniforms(_words(keys[:, None], np.arange(k)))
        gap = BERNOULLI_GAP[self.noise]
        best = (_uniforms(_words(keys, np.zeros(len(keys), np.int64))) * k).astype(np.int64)
        return np.where(np.arange(k) == best[:, None], 0.5 + gap / 2, 0.5 - gap / 2)

    def counter_rewards(
        self, keys: np.ndarray, means: np.ndarray, arms: np.ndarray, pulls: np.ndarray
    ) -> np.ndarray:
        """v1: ``tape[arms, pulls]`` of the episodes ``keys``, whose pulled arms' means are
        ``means`` (all four broadcast together)."""
        words = _words(keys, self.n_arms + arms * self.horizon + pulls)
        if self.distribution == "gaussian":
            return means + GAUSSIAN_NOISE_STD[self.noise] * _normals(words)
        return (_uniforms(words) < means).astype(np.float64)

    def counter_instance(self, key: int) -> tuple[np.ndarray, np.ndarray]:
        """v1: arm means (n_arms,) and the whole tape (n_arms, horizon) of one episode."""
        keys = np.array([key], dtype=np.uint64)
        means = self.counter_means(keys)[0]
        arms = np.arange(self.n_arms)[:, None]
        pulls = np.arange(self.horizon)[None, :]
        return means, self.counter_rewards(keys, means[:, None], arms, pulls)

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
        elif self.labels in SCENARIOS:
            scenario = SCENARIOS[self.labels]
            setting = scenario.setting.format(n=self.n_arms, labels=labels)
            thing, act = scenario.thing, scenario.act
            story = (
                scenario.gaussian_reward
                if self.distribution == "gaussian"
                else scenario.bernoulli_reward
            )
            reward_words = f"{reward_words} ({story})"
        else:
            setting = f"You are choosing among {self.n_arms} actions, numbered {labels}."
            thing, act = "action", "choose"
        text = (
            f"{setting} Each {thing} gives {reward_words} that is specific to that {thing} "
            f"and unknown to you; the distributions do not change over time. You have "
            f"{self.horizon} turns; at each turn you {act} one {thing}. Your goal is to "
            f"maximise the total reward over all {self.horizon} turns."
        )
        if self.description == "detailed":
            text += " " + self.distribution_text(thing)
        return text

    def distribution_text(self, thing: str) -> str:
        """The detailed description's sentence on how each arm's rewards are drawn."""
        if self.distribution == "gaussian":
            return (
                f"The rewards of each {thing} follow a normal distribution with a mean of its "
                f"own, between 0 and 1, and a standard deviation of "
                f"{GAUSSIAN_NOISE_STD[self.noise]:g}, the same for every {thing}."
            )
        return (
            f"Each {thing} gives 1 with a probability of its own and 0 otherwise; "
            f"the probabilities lie between 0 and 1."
        )


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
        tape_version: int = 0,
        description: str = "base",
    ) -> None:
        self.spec_params = BanditSpec(
            distribution, n_arms, noise, labels, horizon, tape_version, description
        )
        if render_mode not in (None, "ansi"):
            raise ConfigError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(n_arms)
        self.observation_space = spaces.Discrete(horizon + 1)
        self._labels = self.spec_params.arm_labels
        self._all_legal = np.ones(n_arms, dtype=np.int8)
        self._means = np.zeros(n_arms)
        self._tape = np.zeros((n_arms, horizon))
        self._pulls = np.zeros(n_arms, dtype=np.int64)
        self._steps = 0
        self._needs_reset = True
        self._seed: int | None = None  # v1: the last seed given to reset
        self._episode = 0  # v1: episodes since that reset (reset() without a seed counts on)

    # -- Gymnasium API -------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        if self.spec_params.tape_version == 0:
            super().reset(seed=seed)
            self._means, self._tape = self.spec_params.draw_instance(self.np_random)
        else:
            seed = None if seed is None else seed_word(seed)
            super().reset(seed=seed)
            if seed is None and self._seed is not None:
                self._episode += 1
            else:
                # An unseeded first reset: a seed from the entropy Gymnasium seeded np_random with.
                self._seed = seed if seed is not None else _fresh_seeds(self.np_random, 1)[0]
                self._episode = 0
            key = episode_keys(np.array([self._seed], np.uint64), np.array([self._episode]))[0]
            self._means, self._tape = self.spec_params.counter_instance(key)
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
        # Python scalars, the same values as the vector env's arrays.
        expected = float(self._means[arm])
        best = int(self._means.argmax())
        optimal_expected = float(self._means[best])
        info = {
            "expected_reward": expected,
            "optimal_action": best,
            "optimal_expected_reward": optimal_expected,
            "regret": optimal_expected - expected,
            "step": self._steps,
            INFO_LEGAL_ACTIONS: self._all_legal.copy(),
            INFO_ACTION_LABEL: self._labels[arm],
        }
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
        """Expected reward of every arm in the current episode (a copy)."""
        return self._means.copy()


class MultiArmedBanditVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` bandits stepped together as numpy arrays.

    Autoreset follows Gymnasium's default (next step): the step after a
    sub-env terminates resets it, ignores its action and returns reward 0.
    Infos are Gymnasium vector infos: arrays of length ``num_envs``. Each
    episode's best arm is found once, at its reset.
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
        tape_version: int = 0,
        description: str = "base",
    ) -> None:
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ConfigError(f"num_envs must be an integer of at least 1, got {num_envs!r}")
        self.spec_params = BanditSpec(
            distribution, n_arms, noise, labels, horizon, tape_version, description
        )
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.single_action_space = spaces.Discrete(n_arms)
        self.single_observation_space = spaces.Discrete(horizon + 1)
        self.action_space = spaces.MultiDiscrete(np.full(num_envs, n_arms))
        self.observation_space = spaces.MultiDiscrete(np.full(num_envs, horizon + 1))
        self._seeded = False
        self._rngs: list[np.random.Generator] = []  # v0: one generator per sub-env
        self._tape = np.zeros((num_envs, n_arms, horizon))  # v0: the whole tapes
        self._seeds = np.zeros(num_envs, dtype=np.uint64)  # v1: each sub-env's seed ...
        self._episodes = np.zeros(num_envs, dtype=np.int64)  # ... episodes since it
        self._keys = np.zeros(num_envs, dtype=np.uint64)  # ... and the episode's key
        self._means = np.zeros((num_envs, n_arms))
        self._best = np.zeros(num_envs, dtype=np.int64)
        self._best_mean = np.zeros(num_envs)
        self._pulls = np.zeros((num_envs, n_arms), dtype=np.int64)
        self._steps = np.zeros(num_envs, dtype=np.int64)
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._row_starts = np.arange(num_envs) * n_arms  # row i of an (envs, arms) array, flat
        self._labels = np.array(self.spec_params.arm_labels, dtype=object)
        self._all_legal = np.ones((num_envs, n_arms), dtype=np.int8)
        self._all_legal.flags.writeable = False  # every arm is always legal: one shared mask

    def _start_episodes(self, which: np.ndarray, *, next_episode: bool) -> None:
        """New episodes in the sub-envs ``which`` (a mask): the next ones of their seeds
        (autoreset), or the first ones (just seeded)."""
        if self.spec_params.tape_version == 0:
            for i in np.flatnonzero(which):
                self._means[i], self._tape[i] = self.spec_params.draw_instance(self._rngs[i])
        else:
            if next_episode:
                self._episodes[which] += 1
            self._keys[which] = episode_keys(self._seeds[which], self._episodes[which])
            self._means[which] = self.spec_params.counter_means(self._keys[which])
        self._best[which] = self._means[which].argmax(axis=1)
        self._best_mean[which] = self._means[which].max(axis=1)
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
        everything = np.ones(self.num_envs, dtype=bool)
        if self.spec_params.tape_version == 0:
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
            self._start_episodes(everything, next_episode=False)
        else:
            # As SyncVectorEnv: a sub-env given no seed plays its seed's next episode, or
            # (never seeded) the first episode of a seed drawn from fresh entropy.
            unseeded = np.array([s is None for s in seeds])
            if not self._seeded:
                fresh = _fresh_seeds(np.random.default_rng(), self.num_envs)
                seeds = [f if s is None else s for s, f in zip(seeds, fresh, strict=True)]
                unseeded[:] = False
            self._seeds[~unseeded] = [seed_word(s) for s in seeds if s is not None]
            self._episodes[~unseeded] = 0
            self._start_episodes(~unseeded, next_episode=False)
            self._start_episodes(unseeded, next_episode=True)
        self._seeded = True
        self._autoreset[:] = False
        return self._steps.copy(), self._legal_info(everything)

    def _legal_info(self, live: np.ndarray) -> dict[str, Any]:
        return {INFO_LEGAL_ACTIONS: self._all_legal, f"_{INFO_LEGAL_ACTIONS}": live.copy()}

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._seeded:
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = np.asarray(actions)
        n_arms = self.spec_params.n_arms
        if (
            actions.shape != (self.num_envs,)
            or not np.issubdtype(actions.dtype, np.integer)
            or actions.min() < 0
            or actions.max() >= n_arms
        ):
            raise ConfigError(
                f"actions must be {self.num_envs} integers in 0..{n_arms - 1}, got {actions!r}"
            )
        resetting = self._autoreset
        any_resetting = bool(resetting.any())
        if any_resetting:
            self._start_episodes(resetting, next_episode=True)
        live = ~resetting
        pulled = self._row_starts + actions  # the pulled (env, arm) cells, flat
        pulls = self._pulls.reshape(-1)
        pull_index = pulls[pulled]
        expected = self._means.reshape(-1)[pulled]
        if self.spec_params.tape_version == 0:
            rewards = self._tape.reshape(-1, self.spec_params.horizon)[pulled, pull_index]
        else:
            rewards = self.spec_params.counter_rewards(self._keys, expected, actions, pull_index)
        if any_resetting:
            rewards[resetting] = 0.0
            pulls[pulled] += live
            self._steps += live
        else:
            pulls[pulled] += 1
            self._steps += 1
        terminated = self._steps >= self.spec_params.horizon  # a reset sub-env is at step 0
        self._autoreset = terminated

        info = {
            "expected_reward": expected,
            "optimal_action": self._best.copy(),
            "optimal_expected_reward": self._best_mean.copy(),
            "regret": self._best_mean - expected,
            "step": self._steps.copy(),
            **self._legal_info(live),
            INFO_ACTION_LABEL: self._labels[actions],
        }
        for key in list(info):
            if not key.startswith("_"):
                info[f"_{key}"] = live.copy()
        return (
            self._steps.copy(),
            rewards,
            terminated.copy(),
            np.zeros(self.num_envs, dtype=bool),
            info,
        )

    @property
    def arm_means(self) -> np.ndarray:
        """Expected reward of every arm of every sub-env, shape (num_envs, n_arms)."""
        return self._means.copy()
