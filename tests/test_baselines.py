"""Baseline agents: the UCB formula, each agent's defining behaviour, strength, determinism."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest
from scipy import stats

import agentbench  # noqa: F401  (registers the env ids)
from agentbench.agent.interface import Agent, Turn
from agentbench.baselines import (
    AGENT_NAMES,
    BetaPosterior,
    EpsilonGreedyAgent,
    GaussianPosterior,
    GreedyAgent,
    LinUCBAgent,
    RandomAgent,
    ThompsonSamplingAgent,
    UCBAgent,
    argmax_random_tie,
    arm_statistics,
    bandit_posterior,
    empirical_means,
    linucb_values,
    make_agent,
    ucb_values,
)
from agentbench.envs.bandits import MultiArmedBanditEnv
from agentbench.errors import ConfigError
from agentbench.records import Episode, Step
from agentbench.rollout import play

ALPHA = 1e-3  # significance level of the one-sided paired tests
SEEDS = range(64)  # the paper's 64 parallel envs
GAUSSIAN_10_MEDIUM = "agentbench/GaussianBandit-10arms-medium-button-v0"
BERNOULLI_5_LOW = "agentbench/BernoulliBandit-5arms-low-continuous-v0"
# Bernoulli with 20 arms: the low-noise level, because at gap 0.1 ("high") fifty
# steps cannot even pull each arm three times, and no agent beats random there.
BERNOULLI_20_LOW = "agentbench/BernoulliBandit-20arms-low-button-v0"
GAUSSIAN_20_LOW = "agentbench/GaussianBandit-20arms-low-button-v0"
TICTACTOE_RANDOM = "agentbench/TicTacToe-random-v0"
TICTACTOE_MINIMAX = "agentbench/TicTacToe-minimax-v0"
CONTEXTUAL_IDS = [f"agentbench/ContextualBandit-{k}arms-v0" for k in (5, 10, 20)]


def _regret(episodes: Sequence[Episode]) -> np.ndarray:
    """Cumulative expected regret per episode, in seed order."""
    return np.array([sum(step.regret for step in episode.steps) for episode in episodes])


def _assert_beats(agent: Agent, baseline: Agent, env_id: str, seeds: Sequence[int]) -> None:
    """One-sided paired t-test on per-seed regret (the envs use common random numbers)."""
    ours, theirs = _regret(play(agent, env_id, seeds)), _regret(play(baseline, env_id, seeds))
    result = stats.ttest_rel(ours, theirs, alternative="less")
    assert result.pvalue < ALPHA, (
        f"{agent.name} regret {ours.mean():.2f} vs {baseline.name} {theirs.mean():.2f} on "
        f"{env_id}: p = {result.pvalue:.3g}"
    )


def _prefix_stats(episode: Episode, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts and sums over the first ``t`` steps of ``episode``."""
    return arm_statistics(episode.steps[:t], episode.n_actions)


# -- the UCB formula -------------------------------------------------------------------
def test_ucb_values_hand_computed() -> None:
    counts, sums = np.array([2, 0, 1]), np.array([1.0, 0.0, 0.9])
    # t = 3: arm 0: 0.5 + sqrt(2 ln 3 / 2); arm 1 untried; arm 2: 0.9 + sqrt(2 ln 3).
    np.testing.assert_allclose(ucb_values(counts, sums, 3), [1.548147, np.inf, 2.382304], 1e-6)
    np.testing.assert_allclose(
        ucb_values(counts, sums, 3, c=1.0), [0.5 + 0.741152, np.inf, 0.9 + 1.048147], 1e-6
    )
    # ln 1 = 0: the bonus vanishes and the values are the means.
    np.testing.assert_allclose(ucb_values([1, 2], [0.3, 1.0], 1), [0.3, 0.5])
    assert np.isposinf(ucb_values([0, 0, 0], [0.0, 0.0, 0.0], 0)).all()


def test_arm_statistics_and_means_from_history() -> None:
    history = [Step(t=i + 1, action=a, label="", reward=r)
               for i, (a, r) in enumerate([(2, 1.0), (0, 0.5), (2, 0.0), (2, 0.5)])]  # fmt: skip
    counts, sums = arm_statistics(history, 4)
    assert counts.tolist() == [1, 0, 3, 0]
    np.testing.assert_allclose(sums, [0.5, 0.0, 1.5, 0.0])
    means = empirical_means(counts, sums)
    np.testing.assert_allclose(means[[0, 2]], [0.5, 0.5])
    assert np.isnan(means[[1, 3]]).all()


def test_ucb_agent_tries_every_arm_then_follows_the_formula() -> None:
    for episode in play(UCBAgent(), GAUSSIAN_10_MEDIUM, range(16)):
        k = episode.n_actions
        assert sorted(step.action for step in episode.steps[:k]) == list(range(k))
        for t in range(k, len(episode.steps)):
            values = ucb_values(*_prefix_stats(episode, t), t)
            assert values[episode.steps[t].action] == values.max()


def test_ucb_agent_takes_a_custom_formula() -> None:
    def prefer_last_arm(counts: np.ndarray, sums: np.ndarray, t: int) -> np.ndarray:
        return np.arange(len(counts), dtype=float)

    agent = UCBAgent(c=prefer_last_arm)
    assert agent.name == "ucb(prefer_last_arm)"
    episodes = play(agent, BERNOULLI_5_LOW, range(4))
    assert {step.action for episode in episodes for step in episode.steps} == {4}


@pytest.mark.parametrize("env_id", [GAUSSIAN_10_MEDIUM, BERNOULLI_5_LOW, BERNOULLI_20_LOW])
def test_ucb_beats_random(env_id: str) -> None:
    seeds = range(128) if env_id == BERNOULLI_20_LOW else SEEDS  # a small effect: more seeds
    _assert_beats(UCBAgent(), RandomAgent(), env_id, seeds)


def test_argmax_ties_are_broken_uniformly() -> None:
    rng = np.random.default_rng(0)
    picks = Counter(argmax_random_tie(np.array([1.0, 3.0, 3.0, 0.0]), rng) for _ in range(2000))
    assert set(picks) == {1, 2} and stats.binomtest(picks[1], 2000).pvalue > ALPHA
    assert argmax_random_tie(np.array([0.0, np.inf, 2.0]), rng) == 1


@pytest.mark.parametrize("name", ["ucb", "greedy", "linucb"])
def test_first_pull_is_uniform_over_untried_arms(name: str) -> None:
    """Untried arms are tied: a fixed first arm would bias coverage towards the first labels."""
    env_id = CONTEXTUAL_IDS[1] if name == "linucb" else GAUSSIAN_10_MEDIUM
    first = Counter(episode.steps[0].action for episode in play(make_agent(name), env_id, SEEDS))
    assert stats.chisquare([first[arm] for arm in range(10)]).pvalue > ALPHA


# -- Thompson sampling -----------------------------------------------------------------
@pytest.mark.parametrize("env_id", [GAUSSIAN_10_MEDIUM, BERNOULLI_5_LOW, GAUSSIAN_20_LOW])
def test_thompson_beats_random(env_id: str) -> None:
    _assert_beats(ThompsonSamplingAgent(), RandomAgent(), env_id, SEEDS)


def test_posterior_model_matches_the_reward_distribution() -> None:
    assert bandit_posterior(MultiArmedBanditEnv("bernoulli", noise="high")) == BetaPosterior()
    assert bandit_posterior(MultiArmedBanditEnv("gaussian", noise="low")) == GaussianPosterior(
        noise_std=0.1
    )
    assert bandit_posterior(MultiArmedBanditEnv("gaussian", noise="high")).noise_std == 3.0
    assert bandit_posterior(object()) == GaussianPosterior()  # no spec: N(0.5, 1), unit noise


def test_posterior_parameters_hand_computed() -> None:
    # N(0.5, 1) prior, unit noise, 3 pulls summing 3.3: precision 4, mean 3.8 / 4, std 1/2.
    mean, std = GaussianPosterior().parameters(np.array([3, 0]), np.array([3.3, 0.0]))
    np.testing.assert_allclose(mean, [0.95, 0.5])
    np.testing.assert_allclose(std, [0.5, 1.0])
    a, b = BetaPosterior().parameters(np.array([4, 0]), np.array([3.0, 0.0]))
    assert a.tolist() == [4.0, 1.0] and b.tolist() == [2.0, 1.0]


def test_beta_draws_are_probabilities_and_gaussian_draws_are_not() -> None:
    rng = np.random.default_rng(0)
    counts, sums = np.zeros(1000, dtype=int), np.zeros(1000)
    beta = BetaPosterior().sample(counts, sums, rng)
    gaussian = GaussianPosterior().sample(counts, sums, rng)
    assert ((beta >= 0) & (beta <= 1)).all()
    assert ((gaussian < 0) | (gaussian > 1)).mean() > 0.3  # N(0.5, 1) leaves [0, 1] 62% of the time


@pytest.mark.parametrize(
    ("distribution", "model"),
    [("bernoulli", BetaPosterior()), ("gaussian", GaussianPosterior(noise_std=0.1))],
)
def test_thompson_agent_samples_from_the_matching_posterior(
    distribution: str, model: BetaPosterior | GaussianPosterior
) -> None:
    """The agent's choice is the argmax of a draw from ``model`` with the same generator."""
    env = MultiArmedBanditEnv(distribution, n_arms=5, noise="low")
    agent = ThompsonSamplingAgent()
    history_rng = np.random.default_rng(1)
    for seed in range(50):
        env.reset(seed=seed)
        history = []
        for t in range(int(history_rng.integers(0, 20))):
            arm = int(history_rng.integers(5))
            history.append(Step(t=t + 1, action=arm, label="", reward=env.step(arm)[1]))
        turn = Turn(env, "x", len(history), {}, history, np.random.default_rng(seed))
        draws = model.sample(*arm_statistics(history, 5), np.random.default_rng(seed))
        assert agent.act([turn])[0].action == int(np.argmax(draws))


# -- greedy and epsilon-greedy ---------------------------------------------------------
def _is_greedy_step(episode: Episode, t: int) -> bool:
    """Whether step t (0-based) chose a best empirical mean among the arms tried before it."""
    means = empirical_means(*_prefix_stats(episode, t))
    if np.isnan(means).all():
        return True
    return means[episode.steps[t].action] == np.nanmax(means)


@pytest.mark.parametrize("env_id", [GAUSSIAN_10_MEDIUM, BERNOULLI_5_LOW])
def test_greedy_tries_each_arm_once_then_never_leaves_the_best_mean(env_id: str) -> None:
    for episode in play(GreedyAgent(), env_id, range(32)):
        k = episode.n_actions
        assert sorted(step.action for step in episode.steps[:k]) == list(range(k))
        assert all(_is_greedy_step(episode, t) for t in range(k, len(episode.steps)))


def test_epsilon_zero_is_greedy_from_the_first_pull() -> None:
    episodes = play(EpsilonGreedyAgent(epsilon=0.0), GAUSSIAN_10_MEDIUM, range(32))
    for episode in episodes:
        assert all(_is_greedy_step(episode, t) for t in range(len(episode.steps)))
    # No "try every arm first": with epsilon 0 it keeps the first arm it pulled.
    assert all(len({step.action for step in episode.steps}) == 1 for episode in episodes)


def test_epsilon_one_is_uniform() -> None:
    episodes = play(EpsilonGreedyAgent(epsilon=1.0), GAUSSIAN_10_MEDIUM, SEEDS)
    counts = Counter(step.action for episode in episodes for step in episode.steps)
    observed = np.array([counts[arm] for arm in range(10)])
    assert stats.chisquare(observed).pvalue > ALPHA


def test_epsilon_greedy_explores_about_epsilon_of_the_time() -> None:
    episodes = play(EpsilonGreedyAgent(epsilon=0.3), GAUSSIAN_10_MEDIUM, SEEDS)
    steps = [(e, t) for e in episodes for t in range(1, len(e.steps))]
    non_greedy = np.mean([not _is_greedy_step(e, t) for e, t in steps])
    # Exploring picks a non-greedy arm with probability 0.3 * (1 - 1/K) at most.
    assert 0.2 < non_greedy < 0.33


# -- LinUCB ----------------------------------------------------------------------------
def test_linucb_values_hand_computed() -> None:
    # 1-d context, no intercept, ridge 1: arm 0 saw x = 1 with rewards 2 and 2, so
    # A = 3, b = 4, theta = 4/3, bonus sqrt(1/3); arm 1 is untried: 0 + sqrt(1).
    history = [Step(t=t, action=0, label="", reward=2.0, observation=[1.0]) for t in (1, 2)]
    values = linucb_values(history, np.array([1.0]), 2, alpha=1.0, ridge=1.0, intercept=False)
    np.testing.assert_allclose(values, [4 / 3 + math.sqrt(1 / 3), 1.0])
    # With alpha 0 only the estimates remain; the intercept adds a constant feature.
    values = linucb_values(history, np.array([1.0]), 2, alpha=0.0, intercept=True)
    np.testing.assert_allclose(values, [8 / 5, 0.0])  # A = [[3, 2], [2, 3]], b = [4, 4]


@pytest.mark.parametrize("env_id", CONTEXTUAL_IDS)
def test_linucb_beats_random_and_context_free_ucb(env_id: str) -> None:
    _assert_beats(LinUCBAgent(), RandomAgent(), env_id, SEEDS)
    _assert_beats(LinUCBAgent(), UCBAgent(), env_id, SEEDS)


# -- tic-tac-toe players ---------------------------------------------------------------
def _outcomes(agent: Agent, env_id: str, seeds: Sequence[int], **env_kwargs: object) -> Counter:
    episodes = play(agent, env_id, seeds, env_kwargs=env_kwargs)
    assert not any(step.illegal or not step.valid for e in episodes for step in e.steps)
    return Counter(episode.outcome for episode in episodes)


@pytest.mark.parametrize("side", ["X", "O"])
def test_minimax_never_loses_to_random_and_draws_with_minimax(side: str) -> None:
    minimax = make_agent("minimax")
    versus_random = _outcomes(minimax, TICTACTOE_RANDOM, range(200), agent_side=side)
    assert versus_random["loss"] == 0 and versus_random["win"] >= 150
    versus_minimax = _outcomes(minimax, TICTACTOE_MINIMAX, range(50), agent_side=side)
    assert versus_minimax == Counter({"draw": 50})


def test_mcts_beats_random_most_of_the_time() -> None:
    outcomes = _outcomes(make_agent("mcts-50"), TICTACTOE_RANDOM, range(100))
    assert outcomes["win"] >= 85 and outcomes["loss"] <= 3


def test_random_player_plays_legal_moves_and_loses_to_minimax() -> None:
    outcomes = _outcomes(RandomAgent(), TICTACTOE_MINIMAX, range(100))
    assert outcomes["win"] == 0 and outcomes["loss"] >= 50


# -- determinism -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "env_id"),
    [
        ("ucb", GAUSSIAN_10_MEDIUM),
        ("thompson", BERNOULLI_5_LOW),
        ("epsilon-greedy", GAUSSIAN_10_MEDIUM),
        ("greedy", BERNOULLI_5_LOW),
        ("random", GAUSSIAN_10_MEDIUM),
        ("linucb", CONTEXTUAL_IDS[0]),
        ("mcts-20", TICTACTOE_RANDOM),
        ("minimax", "agentbench/TicTacToe-noisy-mcts-v0"),
    ],
)
def test_same_seeds_same_episodes_whatever_the_batch(name: str, env_id: str) -> None:
    seeds = list(range(12))
    one = [e.to_json() for e in play(make_agent(name), env_id, seeds, num_envs=1)]
    eight = [e.to_json() for e in play(make_agent(name), env_id, seeds, num_envs=8)]
    assert one == eight
    other = [e.to_json() for e in play(make_agent(name), env_id, [s + 100 for s in seeds])]
    assert other != one


# -- registry --------------------------------------------------------------------------
def test_make_agent_unknown_name_lists_the_accepted_names() -> None:
    with pytest.raises(ConfigError) as caught:
        make_agent("ucb2")
    message = str(caught.value)
    assert "'ucb2'" in message
    assert all(name in message for name in AGENT_NAMES)


def test_make_agent_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="epsilon"):
        make_agent("epsilon-greedy", epsilon=1.5)
    with pytest.raises(ConfigError, match="greedy"):
        make_agent("greedy", temperature=1.0)
    with pytest.raises(ConfigError):
        make_agent("mcts-0")


def test_make_agent_names_and_settings() -> None:
    assert set(AGENT_NAMES) == {
        "ucb", "thompson", "epsilon-greedy", "greedy", "random", "linucb", "minimax", "mcts",
    }  # fmt: skip
    for name in AGENT_NAMES:
        agent = make_agent(name)
        assert isinstance(agent, Agent) and agent.name == name
    assert make_agent("mcts-50").name == "mcts-50"
    assert make_agent("mcts", simulations=50).name == "mcts-50"
    assert make_agent("ucb", c=1.0).name == "ucb(c=1)"
    assert make_agent("epsilon-greedy", epsilon=0.2).name == "epsilon-greedy(epsilon=0.2)"


def test_supports() -> None:
    expected = {
        "ucb": {"mab", "cb"},
        "thompson": {"mab"},
        "epsilon-greedy": {"mab", "cb"},
        "greedy": {"mab", "cb"},
        "random": {"mab", "cb", "tictactoe"},
        "linucb": {"cb"},
        "minimax": {"tictactoe"},
        "mcts": {"tictactoe"},
    }
    for name, families in expected.items():
        agent = make_agent(name)
        supported = {f for f in ("mab", "cb", "tictactoe") if agent.supports(f)}
        assert supported == families, name
