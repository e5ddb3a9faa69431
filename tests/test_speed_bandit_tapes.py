"""Bandit reward tapes: v0 unchanged, v1 (counter-based) a pure function of the seed.

The v1 tapes exist so the native vector env computes only the rewards that are
pulled (scripts/bench_vector_bandit.py measures the speed); these tests hold the
behaviour: same seed same rewards, common random numbers across agents, the
vector env equal to single envs, and the spec's distributions.
"""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from scipy import stats

import agentbench  # noqa: F401  (registers the envs)
from agentbench.envs import check_text_env, get_preset, list_envs
from agentbench.envs.bandits import (
    GAUSSIAN_NOISE_STD,
    MultiArmedBanditEnv,
    MultiArmedBanditVectorEnv,
)
from agentbench.errors import ConfigError

ALPHA = 1e-3  # significance level of the statistical tests


def _rewards(env: gym.Env, seed: int | None, actions: list[int]) -> list[float]:
    env.reset(seed=seed)
    return [env.step(action)[1] for action in actions]


def test_v0_tapes_are_the_ones_results_were_played_on() -> None:
    """Figures drawn by the code before v1 existed: a changed v0 tape fails here."""
    gaussian = MultiArmedBanditEnv("gaussian", n_arms=3, noise="medium", horizon=4)
    assert _rewards(gaussian, 0, [0, 1, 1, 2]) == [
        0.741861804474494, 1.2168676768931124, -0.4339485220431223, 0.0822995032834383,
    ]  # fmt: skip
    bernoulli = MultiArmedBanditEnv("bernoulli", n_arms=3, noise="low", horizon=8)
    assert _rewards(bernoulli, 0, [0, 1, 2, 0, 1, 2, 0, 1]) == [0, 0, 1, 1, 0, 1, 1, 1]
    assert bernoulli.arm_means.tolist() == [0.25, 0.25, 0.75]


@pytest.mark.parametrize("distribution", ["gaussian", "bernoulli"])
def test_v1_same_seed_same_rewards_other_seed_or_episode_differs(distribution: str) -> None:
    env = MultiArmedBanditEnv(distribution, n_arms=5, tape_version=1)
    actions = [i % 5 for i in range(50)]
    first = _rewards(env, 7, actions)
    # reset() without a seed plays the seed's next episode, and the same one each time
    next_episode = _rewards(env, None, actions)
    assert next_episode != first
    assert _rewards(env, 7, actions) == first
    assert _rewards(env, None, actions) == next_episode
    other = MultiArmedBanditEnv(distribution, n_arms=5, tape_version=1)
    assert _rewards(other, 7, actions) == first
    assert _rewards(other, 8, actions) != first


@pytest.mark.parametrize("distribution", ["gaussian", "bernoulli"])
def test_v1_common_random_numbers_whatever_the_agent_does(distribution: str) -> None:
    """Two action sequences on one seed: every arm pays the same draws in pull order."""
    n_arms, horizon = 4, 40
    env = MultiArmedBanditEnv(distribution, n_arms=n_arms, horizon=horizon, tape_version=1)
    rng = np.random.default_rng(0)
    per_arm = []
    for _ in range(2):
        actions = rng.integers(0, n_arms, size=horizon).tolist()
        draws: dict[int, list[float]] = {arm: [] for arm in range(n_arms)}
        for arm, reward in zip(actions, _rewards(env, 11, actions), strict=True):
            draws[arm].append(reward)
        per_arm.append(draws)
    compared = 0
    for arm in range(n_arms):
        n = min(len(per_arm[0][arm]), len(per_arm[1][arm]))
        assert per_arm[0][arm][:n] == per_arm[1][arm][:n]
        compared += n
    assert compared >= horizon // 2  # the sequences shared enough pulls to compare


@pytest.mark.parametrize("distribution", ["gaussian", "bernoulli"])
def test_v1_vector_env_equals_single_envs_across_autoresets(distribution: str) -> None:
    """Sub-env i of a vector env seeded s plays the single env seeded s + i, bit for bit,
    through two autoresets (the vector env computes rewards lazily, the single env the
    whole tape)."""
    n_envs, n_arms, horizon = 5, 3, 4
    kwargs = dict(distribution=distribution, n_arms=n_arms, noise="high", horizon=horizon)
    vec = gym.make_vec(f"agentbench/{distribution.title()}Bandit-v1", num_envs=n_envs, **kwargs)
    assert isinstance(vec.unwrapped, MultiArmedBanditVectorEnv)
    actions = np.random.default_rng(1).integers(0, n_arms, size=(3 * (horizon + 1), n_envs))
    vec.reset(seed=2**64 - 3 - n_envs)  # near the top of the seed range
    steps = [vec.step(a) for a in actions]
    for i in range(n_envs):
        single = MultiArmedBanditEnv(**kwargs, tape_version=1)
        expected, regrets = [], []
        for episode in range(3):
            single.reset(seed=2**64 - 3 - n_envs + i if episode == 0 else None)
            for a in actions[episode * (horizon + 1) : episode * (horizon + 1) + horizon, i]:
                _, reward, _, _, info = single.step(int(a))
                expected.append(reward)
                regrets.append(info["regret"])
            expected.append(0.0)  # the autoreset step
            regrets.append(None)
        got = [float(step[1][i]) for step in steps]
        got_regrets = [float(s[4]["regret"][i]) if s[4]["_regret"][i] else None for s in steps]
        assert got == expected
        assert got_regrets == regrets


def test_v1_vector_env_infos_match_the_arm_means() -> None:
    vec = MultiArmedBanditVectorEnv(50, n_arms=6, horizon=3, tape_version=1)
    vec.reset(seed=3)
    means = vec.arm_means
    actions = np.arange(50) % 6
    _, _, _, _, info = vec.step(actions)
    rows = np.arange(50)
    assert info["expected_reward"].tolist() == means[rows, actions].tolist()
    assert info["optimal_action"].tolist() == means.argmax(axis=1).tolist()
    assert info["regret"].tolist() == (means.max(axis=1) - means[rows, actions]).tolist()
    assert info["legal_actions"].shape == (50, 6) and (info["legal_actions"] == 1).all()


def test_v1_gaussian_means_uniform_and_noise_with_the_spec_spread() -> None:
    vec = MultiArmedBanditVectorEnv(2000, "gaussian", n_arms=5, noise="high", tape_version=1)
    vec.reset(seed=0)
    assert stats.kstest(vec.arm_means.ravel(), "uniform").pvalue > ALPHA
    rng = np.random.default_rng(2)
    residuals = []
    for _ in range(20):
        _, reward, _, _, info = vec.step(rng.integers(0, 5, size=2000))
        residuals.append(reward - info["expected_reward"])
    residuals = np.concatenate(residuals)
    sigma = GAUSSIAN_NOISE_STD["high"]
    assert stats.kstest(residuals, "norm", args=(0.0, sigma)).pvalue > ALPHA
    assert stats.kstest(residuals, "norm", args=(0.0, 1.1 * sigma)).pvalue < ALPHA
    # Draws of one arm at successive pulls are uncorrelated.
    vec.reset(seed=1)
    pulls = np.array([vec.step(np.zeros(2000, dtype=np.int64))[1] for _ in range(2)])
    assert abs(stats.pearsonr(pulls[0], pulls[1]).statistic) < 0.1


def test_v1_bernoulli_best_arm_uniform_and_success_rates() -> None:
    n_envs, n_arms = 3000, 5
    vec = MultiArmedBanditVectorEnv(n_envs, "bernoulli", n_arms=n_arms, noise="low", tape_version=1)
    vec.reset(seed=5)
    best = vec.arm_means.argmax(axis=1)
    assert stats.chisquare(np.bincount(best, minlength=n_arms)).pvalue > ALPHA
    wins = [vec.step(best)[1].sum() for _ in range(5)]
    assert stats.binomtest(int(sum(wins)), 5 * n_envs, p=0.75).pvalue > ALPHA


def test_v1_seeds_must_be_64_bit_words() -> None:
    with pytest.raises(ConfigError, match="0..2\\*\\*64-1, got -1"):
        MultiArmedBanditEnv(tape_version=1).reset(seed=-1)
    with pytest.raises(ConfigError, match="got 18446744073709551616"):
        MultiArmedBanditVectorEnv(2, tape_version=1).reset(seed=[0, 2**64])
    with pytest.raises(ConfigError, match="unknown tape_version 2: accepted are 0, 1"):
        MultiArmedBanditEnv(tape_version=2)


def test_v1_unseeded_reset_draws_a_fresh_seed_then_counts_episodes() -> None:
    vec = MultiArmedBanditVectorEnv(2, n_arms=3, horizon=2, tape_version=1)
    vec.reset()
    first = vec.arm_means
    assert not np.array_equal(first[0], first[1])
    vec.reset(seed=[None, 9])  # sub-env 0: its seed's next episode; sub-env 1: seed 9
    single = MultiArmedBanditEnv(n_arms=3, horizon=2, tape_version=1)
    single.reset(seed=9)
    assert vec.arm_means[1].tolist() == single.arm_means.tolist()
    assert vec.arm_means[0].tolist() != first[0].tolist()


def test_every_bandit_id_has_a_v1_twin_outside_the_grid() -> None:
    # The built-in grid only: other tests register bandit ids of their own (without twins).
    builtin = re.compile(r"agentbench/(Gaussian|Bernoulli)Bandit-\d+arms-[a-z]+-[a-z]+-v0")
    grid = [p.env_id for p in list_envs() if p.family == "mab" and builtin.fullmatch(p.env_id)]
    assert len(grid) == 36
    for env_id in grid + ["agentbench/GaussianBandit-v0", "agentbench/BernoulliBandit-v0"]:
        twin = get_preset(env_id[: -len("v0")] + "v1")
        assert twin.family == "mab" and not twin.preset
        assert twin.kwargs == {**get_preset(env_id).kwargs, "tape_version": 1}
    env = gym.make("agentbench/BernoulliBandit-20arms-high-continuous-v1")
    assert env.unwrapped.spec_params.tape_version == 1


@pytest.mark.parametrize(
    "env_id",
    [
        "agentbench/GaussianBandit-5arms-low-button-v1",
        "agentbench/BernoulliBandit-10arms-high-continuous-v1",
    ],
)
def test_v1_ids_pass_the_gymnasium_and_text_checkers(env_id: str) -> None:
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    check_text_env(env, seed=3)
