"""Metrics against values computed by hand on small recorded episodes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from agentbench.errors import ConfigError
from agentbench.metrics import (
    coverage_curve,
    episode_greedy_fraction,
    episode_k_minfrac,
    episode_suffix_failure,
    final_coverage,
    final_regret,
    greedy_fraction,
    group_episodes,
    illegal_rate,
    invalid_rate,
    k_minfrac,
    mean_return,
    outcome_rates,
    regret_curve,
    return_curve,
    suffix_failure,
    summarize,
    summarize_run,
    t_interval,
    wilson_interval,
)
from agentbench.records import Episode, Step

# A 3-arm bandit with expected rewards [0.2, 0.5, 0.8]: arm 2 is best and the
# per-step regret of arms 0, 1, 2 is 0.6, 0.3, 0.0.
MEANS = [0.2, 0.5, 0.8]
T_975_DF2 = 4.302652729749462  # t quantile 0.975 with 2 degrees of freedom (tables: 4.303)


def bandit_episode(
    seed: int,
    actions: list[int],
    rewards: list[float],
    valid: list[bool] | None = None,
    optimal: list[int] | None = None,
    agent: str = "agent",
    env_id: str = "agentbench/GaussianBandit-v0",
) -> Episode:
    optimal = optimal or [2] * len(actions)
    valid = valid or [True] * len(actions)
    steps = [
        Step(
            t=t,
            action=a,
            label=f"arm{a}",
            reward=r,
            valid=v,
            expected_reward=MEANS[a],
            optimal_action=o,
            regret=MEANS[o] - MEANS[a],
        )
        for t, (a, r, v, o) in enumerate(zip(actions, rewards, valid, optimal, strict=True), 1)
    ]
    return Episode(agent, env_id, seed, 3, ["arm0", "arm1", "arm2"], steps, family="mab")


# Episode A: actions 0 1 1 2, rewards 0 1 .5 1, step 2 invalid.
#   regret .6 .3 .3 0 -> cumulative .6 .9 1.2 1.2; coverage 1/3 2/3 2/3 1
#   greedy: step 1 excluded; step 2 arm 1 untried -> no; step 3 means {0: 0, 1: 1} -> arm 1 yes;
#           step 4 arm 2 untried -> no: 1/3
#   suffix (T=4: steps 3..4) pulls arm 2 at step 4 -> no failure; counts 1 2 1 -> K*MinFrac 3*1/4
#   invalid 1/4; return 2.5
# Episode B: actions 1 0 1 0, rewards .5 .5 0 1.
#   regret .3 .6 .3 .6 -> cumulative .3 .9 1.2 1.8; coverage 1/3 2/3 2/3 2/3
#   greedy: step 2 arm 0 untried -> no; step 3 means {1: .5, 0: .5}, a tie -> arm 1 yes;
#           step 4 means {1: .25, 0: .5} -> arm 0 yes: 2/3
#   suffix steps 3..4 pull arms 1, 0 -> failure; counts 2 2 0 -> K*MinFrac 0; invalid 0; return 2
# Episode C: actions 2 2 2 2, rewards 1 1 0 1, steps 1-2 invalid.
#   regret 0 everywhere; coverage 1/3 throughout; greedy 3/3; no failure; K*MinFrac 0
#   invalid 2/4; return 3
EPISODE_A = bandit_episode(0, [0, 1, 1, 2], [0.0, 1.0, 0.5, 1.0], [True, False, True, True])
EPISODE_B = bandit_episode(1, [1, 0, 1, 0], [0.5, 0.5, 0.0, 1.0])
EPISODE_C = bandit_episode(2, [2, 2, 2, 2], [1.0, 1.0, 0.0, 1.0], [False, False, True, True])
BANDITS = [EPISODE_A, EPISODE_B, EPISODE_C]


def ttt_episode(
    seed: int, rewards: list[float], outcome: str | None, valid: list[bool], illegal: list[bool]
) -> Episode:
    steps = [
        Step(t=t, action=t - 1, label=str(t - 1), reward=r, valid=v, illegal=i)
        for t, (r, v, i) in enumerate(zip(rewards, valid, illegal, strict=True), 1)
    ]
    labels = [str(cell) for cell in range(9)]
    return Episode("agent", "agentbench/TicTacToe-v0", seed, 9, labels, steps,
                   family="tictactoe", outcome=outcome)  # fmt: skip


# Ragged games: a 3-move win, a 5-move draw with one illegal move (also invalid),
# a 4-move loss with one unparseable answer (invalid, not illegal).
GAMES = [
    ttt_episode(0, [0, 0, 1], "win", [True] * 3, [False] * 3),
    ttt_episode(1, [0] * 5, "draw", [True, False, True, True, True], [False, True] + [False] * 3),
    ttt_episode(2, [0, 0, 0, -1], "loss", [True, True, False, True], [False] * 4),
]


def test_regret_curve_and_final_regret() -> None:
    curve = regret_curve(BANDITS)
    # per step: (.6+.3+0)/3, (.9+.9+0)/3, (1.2+1.2+0)/3, (1.2+1.8+0)/3
    np.testing.assert_allclose(curve.mean, [0.3, 0.6, 0.8, 1.0])
    np.testing.assert_array_equal(curve.running, [3, 3, 3, 3])
    final = final_regret(BANDITS)
    # finals 1.2 1.8 0: mean 1, sample variance (.04+.64+1)/2 = .84,
    # half width 4.3027 * sqrt(.84/3) = 2.27675
    assert final.n == 3
    assert final.mean == pytest.approx(1.0)
    assert final.low == pytest.approx(1.0 - T_975_DF2 * math.sqrt(0.84 / 3))
    low, high = stats.t.interval(0.95, 2, loc=1.0, scale=math.sqrt(0.84 / 3))
    assert (final.low, final.high) == pytest.approx((low, high))
    assert (final.low, final.high) == pytest.approx((-1.27675, 3.27675), abs=1e-4)
    # the last point of the curve is the final regret
    assert (curve.low[-1], curve.high[-1]) == pytest.approx((final.low, final.high))
    # step 1 values .6 .3 0: mean .3, sample sd .3
    assert curve.high[0] == pytest.approx(0.3 + T_975_DF2 * 0.3 / math.sqrt(3))


def test_coverage_per_step_and_final() -> None:
    curve = coverage_curve(BANDITS)
    # step 1: all 1/3; steps 2, 3: (2/3 + 2/3 + 1/3)/3 = 5/9; step 4: (1 + 2/3 + 1/3)/3 = 2/3
    np.testing.assert_allclose(curve.mean, [1 / 3, 5 / 9, 5 / 9, 2 / 3])
    # step 1 has no spread: the interval collapses onto the mean
    assert curve.low[0] == pytest.approx(1 / 3) and curve.high[0] == pytest.approx(1 / 3)
    assert final_coverage(BANDITS).mean == pytest.approx(2 / 3)


def test_greedy_fraction_excludes_the_first_step_and_counts_ties() -> None:
    assert episode_greedy_fraction(EPISODE_A) == pytest.approx(1 / 3)
    assert episode_greedy_fraction(EPISODE_B) == pytest.approx(2 / 3)  # step 3 is a tie
    assert episode_greedy_fraction(EPISODE_C) == pytest.approx(1.0)
    assert greedy_fraction(BANDITS).mean == pytest.approx(2 / 3)
    # one step: nothing was tried before it, so the episode has no greedy fraction
    single = bandit_episode(3, [1], [1.0])
    assert math.isnan(episode_greedy_fraction(single))
    assert greedy_fraction([single, EPISODE_C]).n == 1


def test_greedy_tie_up_to_float_rounding() -> None:
    # arm 0 mean (0.1 + 0.2)/2 = 0.15000000000000002, arm 1 mean 0.15: arm 1 ties for best
    episode = bandit_episode(0, [0, 0, 1, 1], [0.1, 0.2, 0.15, 0.0])
    # step 2: arm 0 greedy; step 3: arm 1 untried -> no; step 4: arm 1 tied -> greedy
    assert episode_greedy_fraction(episode) == pytest.approx(2 / 3)


def test_suffix_failure_mab_and_boundary() -> None:
    assert [episode_suffix_failure(ep) for ep in BANDITS] == [0.0, 1.0, 0.0]
    estimate = suffix_failure(BANDITS)
    # Wilson 1/3 at 95%: z = 1.96, centre (1/3 + z^2/6)/(1 + z^2/3) = .42691,
    # half z*sqrt(2/27 + z^2/36)/(1 + z^2/3) = .36542
    assert estimate.mean == pytest.approx(1 / 3) and estimate.n == 3
    assert (estimate.low, estimate.high) == pytest.approx((0.06149, 0.79234), abs=1e-4)
    # T = 5: the suffix is steps 3..5; the best arm at step 2 does not count, at step 3 it does
    assert episode_suffix_failure(bandit_episode(0, [0, 2, 0, 1, 1], [0.0] * 5)) == 1.0
    assert episode_suffix_failure(bandit_episode(0, [0, 0, 2, 1, 1], [0.0] * 5)) == 0.0


def test_suffix_failure_contextual_uses_the_optimal_action_of_each_step() -> None:
    optimal = [0, 1, 2, 0, 1]
    # suffix steps 3..5 choose 0, 1, 2 while their optima are 2, 0, 1: arms that are optimal
    # on other steps are chosen, yet never on their own step -> failure
    missed = bandit_episode(0, [0, 1, 0, 1, 2], [0.0] * 5, optimal=optimal)
    assert episode_suffix_failure(missed) == 1.0
    hit = bandit_episode(0, [0, 1, 0, 0, 2], [0.0] * 5, optimal=optimal)  # step 4 chooses 0
    assert episode_suffix_failure(hit) == 0.0


def test_k_minfrac() -> None:
    assert [episode_k_minfrac(ep) for ep in BANDITS] == [0.75, 0.0, 0.0]
    assert k_minfrac(BANDITS).mean == pytest.approx(0.25)
    even = bandit_episode(0, [0, 1, 2, 0, 1, 2], [0.0] * 6)
    assert episode_k_minfrac(even) == pytest.approx(1.0)


def test_invalid_and_illegal_rates_are_separate() -> None:
    # bandits: invalid shares .25, 0, .5; nothing illegal
    assert invalid_rate(BANDITS).mean == pytest.approx(0.25)
    zero = illegal_rate(BANDITS)
    assert (zero.mean, zero.low, zero.high) == (0.0, 0.0, 0.0)
    # games: invalid 0, 1/5, 1/4 -> .15; illegal 0, 1/5, 0 -> 1/15
    assert invalid_rate(GAMES).mean == pytest.approx(0.15)
    assert illegal_rate(GAMES).mean == pytest.approx(1 / 15)


def test_mean_return() -> None:
    # returns 2.5 2 3: mean 2.5, sample sd .5
    estimate = mean_return(BANDITS)
    assert estimate.mean == pytest.approx(2.5)
    assert estimate.high - estimate.mean == pytest.approx(T_975_DF2 * 0.5 / math.sqrt(3))


def test_tictactoe_outcomes_and_ragged_return_curve() -> None:
    rates = outcome_rates(GAMES)
    assert [rates[o].mean for o in ("win", "draw", "loss")] == pytest.approx([1 / 3] * 3)
    assert rates["win"] == wilson_interval(1, 3)
    # returns 1 0 -1: mean 0, sd 1
    estimate = mean_return(GAMES)
    assert estimate.mean == pytest.approx(0.0)
    assert estimate.high == pytest.approx(T_975_DF2 / math.sqrt(3))
    curve = return_curve(GAMES)
    # finished games keep their final return: step 3 [1,0,0], steps 4-5 [1,0,-1]
    np.testing.assert_allclose(curve.mean, [0, 0, 1 / 3, 0, 0], atol=1e-12)
    np.testing.assert_array_equal(curve.running, [3, 3, 3, 2, 1])
    assert curve.n == 3


def test_outcome_rates_count_unfinished_games_as_none_of_three() -> None:
    games = GAMES + [ttt_episode(3, [0, 0], None, [True] * 2, [False] * 2)]
    rates = outcome_rates(games)
    assert rates["win"].mean == pytest.approx(0.25) and rates["win"].n == 4


def test_wilson_known_values() -> None:
    # 8/10: the textbook Wilson interval (Newcombe 1998) is 0.4902 .. 0.9433
    estimate = wilson_interval(8, 10)
    assert estimate.mean == 0.8
    assert (estimate.low, estimate.high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    # 0/10: lower bound 0, upper 0.2775 (not the degenerate Wald [0, 0])
    none = wilson_interval(0, 10)
    assert none.low == 0.0 and none.high == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(8, 10, confidence=0.99).low < estimate.low


def test_t_interval_edge_cases() -> None:
    empty = t_interval([])
    assert empty.n == 0 and math.isnan(empty.mean)
    one = t_interval([2.0])
    assert one.mean == 2.0 and one.n == 1 and math.isnan(one.low) and math.isnan(one.high)
    assert t_interval([1.0, math.nan, 3.0]).n == 2  # undefined values are left out


def test_summarize_bandits_keys_values_and_json_round_trip() -> None:
    summary = summarize(BANDITS)
    assert summary["n_episodes"] == 3 and summary["confidence"] == 0.95
    for key in ("final_regret", "coverage", "greedy_fraction", "suffix_failure", "k_minfrac",
                "invalid_rate", "illegal_rate", "return"):  # fmt: skip
        assert set(summary[key]) == {"mean", "low", "high", "n"}, key
    assert "win_rate" not in summary
    assert summary["final_regret"]["mean"] == pytest.approx(1.0)
    assert summary["coverage"]["mean"] == pytest.approx(2 / 3)
    assert summary["curves"]["coverage"]["mean"] == pytest.approx([1 / 3, 5 / 9, 5 / 9, 2 / 3])
    assert set(summary["curves"]) == {"regret", "coverage", "return"}
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text) == summary


def test_summarize_tictactoe_skips_bandit_metrics() -> None:
    summary = summarize(GAMES)
    assert "final_regret" not in summary and "coverage" not in summary
    assert "suffix_failure" not in summary and "greedy_fraction" not in summary
    assert summary["win_rate"]["mean"] == pytest.approx(1 / 3)
    assert summary["illegal_rate"]["mean"] == pytest.approx(1 / 15)
    assert set(summary["curves"]) == {"return"}
    assert summary["curves"]["return"]["running"] == [3, 3, 3, 2, 1]
    json.dumps(summary, allow_nan=False)
    with pytest.raises(ConfigError, match="regret"):
        final_regret(GAMES)


def test_single_and_empty_groups() -> None:
    single = summarize([EPISODE_A])
    assert single["final_regret"] == {"mean": pytest.approx(1.2), "low": None, "high": None,
                                      "n": 1}  # fmt: skip
    assert single["suffix_failure"]["mean"] == 0.0 and single["suffix_failure"]["high"] > 0
    assert single["curves"]["regret"]["low"] == [None] * 4
    json.dumps(single, allow_nan=False)
    assert summarize([]) == {"n_episodes": 0, "confidence": 0.95, "curves": {}}
    assert summarize_run([]) == []
    assert final_regret([]).n == 0


def test_group_episodes_and_summarize_run_are_order_independent() -> None:
    other = bandit_episode(5, [2, 2, 2, 2], [1.0] * 4, agent="ucb")
    other_env = bandit_episode(6, [0, 0, 0, 0], [0.0] * 4, env_id="agentbench/Other-v0")
    episodes = [EPISODE_C, other_env, EPISODE_A, other, EPISODE_B]
    groups = group_episodes(episodes)
    assert list(groups) == [
        ("agent", "agentbench/GaussianBandit-v0"),
        ("agent", "agentbench/Other-v0"),
        ("ucb", "agentbench/GaussianBandit-v0"),
    ]
    assert [ep.seed for ep in groups[("agent", "agentbench/GaussianBandit-v0")]] == [0, 1, 2]
    rows = summarize_run(episodes)
    assert rows == summarize_run(list(reversed(episodes)))
    assert [(row["agent"], row["env_id"], row["n_episodes"]) for row in rows] == [
        ("agent", "agentbench/GaussianBandit-v0", 3),
        ("agent", "agentbench/Other-v0", 1),
        ("ucb", "agentbench/GaussianBandit-v0", 1),
    ]
    assert rows[0]["family"] == "mab"
    assert rows[0]["final_regret"]["mean"] == pytest.approx(1.0)
    assert rows[1]["final_regret"]["mean"] == pytest.approx(2.4)  # 4 * 0.6
