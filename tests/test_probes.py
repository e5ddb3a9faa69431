"""The failure-mode probes find the failures planted in scripted models, and only those.

Planted models (agentbench/testing/planted.py) read the prompt text like an LLM and fail
in a known way; each probe must report that failure with the numbers the
SPEC's definitions predict, also through the real runner and on a real (tiny)
model's scoring and generation path.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pytest

from agentbench.agent.context import ContextSettings, build_context
from agentbench.agent.llm import LLMAgent
from agentbench.agent.parsing import format_action
from agentbench.analysis.frequency_bias import (
    BUCKETS,
    FrequencyBiasResult,
    FrequencyPoint,
    bucket_of,
    classify_argmax,
    play_actions,
    run_frequency_bias_probe,
    shown_statistics,
)
from agentbench.analysis.knowing_doing import (
    argmax_set,
    classify_action,
    format_ucb_values,
    judge,
    knowing_doing_prompt,
    parse_ucb_values,
    run_knowing_doing_probe,
)
from agentbench.confidence_bounds import DEFAULT_UCB_C, ucb_values
from agentbench.envs import make
from agentbench.errors import ConfigError
from agentbench.metrics import (
    arm_statistics,
    coverage_curve,
    empirical_means,
    final_coverage,
    greedy_actions,
    suffix_failure,
)
from agentbench.models.interface import Chat, Generation, GenerationConfig
from agentbench.records import Step
from agentbench.rollout import play
from agentbench.testing.planted import (
    FrequencyBiasedModel,
    GreedyModel,
    KnowingButGreedyModel,
    ShareCopierModel,
    UCBModel,
    UniformModel,
    read_prompt,
)

ENV_10 = "agentbench/GaussianBandit-10arms-medium-button-v0"
RGB = ["blue", "green", "red"]


class ScriptedGenerator:
    """Answers every prompt with ``reply(chat)`` and records the prompts and score calls."""

    name = "scripted"

    def __init__(self, reply: Callable[[Chat], str], scorer: object | None = None) -> None:
        self.reply = reply
        self.scorer = scorer
        self.score_calls: list[tuple[list[Chat], list[list[str]]]] = []

    def generate(
        self, prompts: Sequence[Chat], config: GenerationConfig, seeds: Sequence[int] | None = None
    ) -> list[Generation]:
        return [Generation(self.reply(chat)) for chat in prompts]

    def score(self, prompts, continuations):
        self.score_calls.append((list(prompts), [list(c) for c in continuations]))
        return self.scorer.score(prompts, continuations)


def _steps(actions: list[int], rewards: list[float], labels: list[str] = RGB) -> list[Step]:
    return [
        Step(t=t, action=a, label=labels[a], reward=r)
        for t, (a, r) in enumerate(zip(actions, rewards, strict=True), start=1)
    ]


# ---------------------------------------------------------------- the <ucb_values> parser


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<ucb_values>blue: 1.5, green: inf, red: -0.25</ucb_values>", (1.5, math.inf, -0.25)),
        ("<UCB_VALUES>\nBlue = +1e-1;\n GREEN = Infinity\nred=.5\n</ucb_values>",
         (0.1, math.inf, 0.5)),
        ("<ucb_values>- **blue**: `2.00`\n- green: ∞\n- red: \u22120.5.</ucb_values>",
         (2.0, math.inf, -0.5)),
        ("<ucb_values>ｂｌｕｅ: １.５, green: +inf, red: 3</ucb_values>", (1.5, math.inf, 3.0)),
        ("<ucb_values>blue: 1, green: 2, red: 3, blue: 1.0</ucb_values>", (1.0, 2.0, 3.0)),
        # the last complete block wins: an echoed template before the real answer is ignored
        ("Format: <ucb_values>label: value</ucb_values>. Mine: "
         "<ucb_values>blue: 1, green: 2, red: -inf</ucb_values>", (1.0, 2.0, -math.inf)),
    ],
)  # fmt: skip
def test_ucb_values_parser_reads_tolerated_forms(text: str, expected: tuple[float, ...]) -> None:
    reading = parse_ucb_values(text, RGB)
    assert reading.reason == "ok"
    assert reading.values == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("blue: 1, green: 2, red: 3", "no <ucb_values>"),
        ("<ucb_values>blue: 1, green: 2, red: 3", "no <ucb_values>"),  # truncated: no closing tag
        ("<ucb_values>blue: 1, green: 2</ucb_values>", "no value for red"),
        ("<ucb_values>blue: 1, green: 2, red: 3, purple: 4</ucb_values>", "unknown action"),
        ("<ucb_values>blue: 0.5 + 0.7, green: 2, red: 3</ucb_values>", "is not a number"),
        ("<ucb_values>blue: lots, green: ???, red: 3</ucb_values>", "is not a number"),
        ("<ucb_values>blue 1, green: 2, red: 3</ucb_values>", "is not 'label: value'"),
        ("<ucb_values>blue: 1, green: 2, red: 3, blue: 4</ucb_values>", "two values"),
        ("<ucb_values>blue: 1,5, green: 2, red: 3</ucb_values>", "is not 'label: value'"),
        ("<ucb_values>label: value</ucb_values>", "unknown action"),
    ],
)
def test_ucb_values_parser_rejects_unreadable_values(text: str, reason: str) -> None:
    reading = parse_ucb_values(text, RGB)
    assert reading.values is None
    assert reason in reading.reason


def test_written_ucb_values_read_back_and_continuous_labels_match() -> None:
    values = [1.23456, math.inf, -0.5]
    assert parse_ucb_values(format_ucb_values(RGB, values), RGB).values == (1.2346, math.inf, -0.5)
    digits = ["0", "1", "10"]  # "1" must not swallow "10"
    reading = parse_ucb_values("<ucb_values>10: 3, 0: 1, 1: inf</ucb_values>", digits)
    assert reading.values == (1.0, math.inf, 3.0)


# ---------------------------------------------------------------- classification rules


def test_frequency_classes_keep_copying_apart_from_greed_and_ties() -> None:
    counts = np.array([3, 1, 0])
    bad_target = np.array([0.0, 0.5, 0.0])  # the target (0) is not the best mean
    good_target = np.array([2.7, 0.1, 0.0])
    assert classify_argmax(0, 0, counts, bad_target) == "frequent"
    assert classify_argmax(0, 0, counts, good_target) == "frequent_and_greedy"
    assert classify_argmax(1, 0, counts, bad_target) == "greedy"
    assert classify_argmax(1, 0, counts, good_target) == "other"
    assert classify_argmax(2, 0, counts, np.array([0.0, -5.0, 0.0])) == "other"  # untried
    # the most frequent action is not the target: following it is not "frequent"
    assert classify_argmax(0, 1, counts, bad_target) == "other"
    assert classify_argmax(0, 0, np.zeros(3), np.zeros(3)) == "other"  # no history
    tied = np.array([2, 2, 0])  # a count tie is its own case, whether greedy or not
    assert classify_argmax(0, 0, tied, np.array([0.0, 2.0, 0.0])) == "tie"
    assert classify_argmax(1, 0, tied, np.array([0.0, 2.0, 0.0])) == "tie"
    assert classify_argmax(2, 0, tied, np.array([0.0, 2.0, 0.0])) == "other"


def test_bucket_edges_are_inclusive() -> None:
    assert [bucket_of(r) for r in (0, 10, 11, 44, 45, 55, 56, 89, 90, 100, 101)] == [
        "0-10", "0-10", None, None, "45-55", "45-55", None, None, "90-100", "90-100", None,
    ]  # fmt: skip
    points = [FrequencyPoint(2, r, 0, 1.0, 0, "frequent") for r in (0, 10, 11, 45, 55, 56, 100)]
    result = FrequencyBiasResult("m", ENV_10, 0, points)
    data = result.to_dict()
    assert {name: row["n"] for name, row in data["buckets"].items()} == {
        "0-10": 2, "45-55": 2, "90-100": 1,
    }  # fmt: skip
    # constant entropy: no correlation, written as null; strict JSON
    assert data["correlation"] == {"pearson_r": None, "p_value": None, "spearman_rho": None}
    json.dumps(data, allow_nan=False)


def test_doing_classes_greedy_that_is_also_optimal_counts_as_optimal() -> None:
    assert classify_action(1, optimal={1}, greedy={1}) == "optimal"
    assert classify_action(0, optimal={1}, greedy={0}) == "greedy"
    assert classify_action(2, optimal={1}, greedy={0}) == "other"
    assert classify_action(None, optimal={1}, greedy={0}) == "other"
    # equal counts: the best mean also has the best UCB value -> optimal, not greedy
    even = _steps([0, 1, 2], [1.0, 0.0, 0.5])
    assert judge(even, RGB, "ACTION=blue", 2.0).doing == "optimal"
    # red untried: UCB says red, greedy says blue
    partial = _steps([0, 1], [1.0, 0.0])
    assert judge(partial, RGB, "ACTION=blue", 2.0).doing == "greedy"
    assert judge(partial, RGB, "ACTION=red", 2.0).doing == "optimal"
    assert argmax_set([1.0, math.inf, math.inf]) == {1, 2}


def test_knowing_needs_the_written_argmax_to_be_a_true_argmax() -> None:
    partial = _steps([0, 1], [1.0, 0.0])  # true argmax: red (untried)
    right = judge(partial, RGB, "<ucb_values>blue: 2, green: 1, red: inf</ucb_values>", 2.0)
    assert right.knowing and right.action is None and right.doing == "other"
    wrong = judge(partial, RGB, "<ucb_values>blue: inf, green: 1, red: 2</ucb_values>", 2.0)
    assert not wrong.knowing
    # a written tie that includes a wrong action does not name the argmax
    tie = judge(partial, RGB, "<ucb_values>blue: inf, green: 1, red: inf</ucb_values>", 2.0)
    assert not tie.knowing
    garbage = judge(partial, RGB, "<ucb_values>blue: big</ucb_values> ACTION=red", 2.0)
    assert not garbage.knowing and garbage.written is None and garbage.doing == "optimal"


# ---------------------------------------------------------------- planted models read prompts


def test_planted_models_read_the_agent_context() -> None:
    env = make(ENV_10)
    view, history = play_actions(env, [3, 3, 7, 1, 3], seed=4)
    prompt = read_prompt(build_context(view, history, ContextSettings()))
    assert prompt.labels == view.action_labels() and prompt.ucb_c is None
    assert [s.action for s in prompt.history] == [3, 3, 7, 1, 3]
    assert [s.reward for s in prompt.history] == [round(s.reward, 2) for s in history]
    chat = build_context(view, history, ContextSettings())
    assert FrequencyBiasedModel().generate([chat], GenerationConfig())[0].text == "ACTION=yellow"
    assert GreedyModel().generate([chat], GenerationConfig())[0].text == "ACTION=blue"  # untried
    asked = read_prompt(knowing_doing_prompt(view, history, ucb_c=0.5))
    assert asked.ucb_c == 0.5 and len(asked.history) == 5
    with pytest.raises(ConfigError, match="one of the actions"):
        read_prompt([{"role": "user", "content": "Hello"}])


# ---------------------------------------------------------------- frequency bias probe


@pytest.fixture(scope="module")
def frequency_results() -> dict[str, FrequencyBiasResult]:
    models = {
        "frequency": FrequencyBiasedModel(),
        "greedy": GreedyModel(),
        "greedy_no_tries": GreedyModel(try_all_first=False),
        "ucb": UCBModel(),
    }
    return {key: run_frequency_bias_probe(m, progress=False) for key, m in models.items()}


def test_frequency_probe_reports_the_planted_copier(frequency_results) -> None:
    result = frequency_results["frequency"]
    data = result.to_dict()
    assert data["forward_passes"] == 24 * 21 == len(data["points"])
    buckets = data["buckets"]
    # The copier's argmax is the most frequent action; once the target is repeated 10
    # times it is uniquely the most frequent (prefixes are at most 10 steps), so the
    # probe calls it "frequent", or "frequent_and_greedy" where it is the best mean too.
    copied = [p for p in data["points"] if p["repetitions"] >= 10]
    assert all(p["argmax"] == p["target"] for p in copied)
    assert {p["class"] for p in copied} == {"frequent", "frequent_and_greedy"}
    assert buckets["90-100"]["frequent"] > 0.6
    # ... and it grows more certain as the target is repeated.
    entropy = [buckets[name]["mean_entropy"] for name in ("0-10", "45-55", "90-100")]
    assert entropy[0] > entropy[1] > entropy[2]
    assert data["correlation"]["pearson_r"] < -0.5 and data["correlation"]["p_value"] < 1e-6
    assert data["correlation"]["spearman_rho"] < -0.9
    json.dumps(data, allow_nan=False)


def test_frequency_probe_does_not_call_greedy_or_ucb_models_frequent(frequency_results) -> None:
    copier = frequency_results["frequency"].buckets()["90-100"]["frequent"]
    for key in ("greedy", "greedy_no_tries", "ucb"):
        top = frequency_results[key].buckets()["90-100"]
        assert top["frequent"] < 0.2 < copier, key
    # pure exploitation is greedy; trying untried arms first (prefixes of <= 10 steps on
    # 10 arms leave some untried) is neither greedy nor frequent
    exploits = frequency_results["greedy_no_tries"].buckets()["90-100"]
    assert exploits["greedy"] + exploits["frequent_and_greedy"] > 0.9
    assert frequency_results["greedy"].buckets()["90-100"]["other"] > 0.9
    assert frequency_results["ucb"].buckets()["90-100"]["other"] > 0.9
    # their distributions do not depend on repetitions: no correlation to report
    assert frequency_results["ucb"].correlation()["pearson_r"] is None


@pytest.fixture(scope="module")
def copy_rate_results() -> dict[str, FrequencyBiasResult]:
    models = {"copier": ShareCopierModel(), "uniform": UniformModel()}
    return {key: run_frequency_bias_probe(m, progress=False) for key, m in models.items()}


def test_a_copiers_frequent_share_rises_with_repetitions_and_a_uniform_models_does_not(
    copy_rate_results,
) -> None:
    # The share copier copies the most frequent action with probability equal to its
    # share of the history: about 0.3 with no repetitions, above 0.9 at 90-100.
    names = list(BUCKETS)
    copier = [copy_rate_results["copier"].buckets()[name]["frequent"] for name in names]
    uniform = [copy_rate_results["uniform"].buckets()[name]["frequent"] for name in names]
    assert copier[0] < copier[1] and copier[0] < copier[2]
    assert copier[2] - copier[0] > 0.25
    top = copy_rate_results["copier"].buckets()["90-100"]
    assert top["frequent"] + top["frequent_and_greedy"] > 0.85
    # A model that ignores the history picks the target about 1 time in 10, at every count.
    assert max(uniform) < 0.2
    assert max(uniform) - min(uniform) < 0.15
    # With no repetitions, ties are common and reported apart, not as copying.
    at_zero = [p for p in copy_rate_results["uniform"].points if p.repetitions == 0]
    assert any(p.category == "tie" for p in at_zero)


def test_frequency_probe_histories_are_one_episode_sliced_with_one_score_call_per_chunk() -> None:
    recorder = ScriptedGenerator(lambda chat: "", scorer=FrequencyBiasedModel())
    result = run_frequency_bias_probe(
        recorder, n_prefixes=3, repetitions=(0, 5, 10), batch_size=4, progress=False
    )
    assert len(recorder.score_calls) == 3  # 9 prompts in chunks of 4
    candidates = [format_action(label) for label in make(ENV_10).unwrapped.action_labels()]
    chats = [chat for prompts, _ in recorder.score_calls for chat in prompts]
    assert all(c == candidates for _, lists in recorder.score_calls for c in lists)
    for i, point in enumerate(result.points):
        history = read_prompt(chats[i]).history
        assert len(history) == point.prefix_length + point.repetitions
        assert history[point.prefix_length - 1].action == point.target
        assert all(step.action == point.target for step in history[point.prefix_length :])
    longest = read_prompt(chats[2]).history  # prefix 0, 10 repetitions
    assert read_prompt(chats[1]).history == longest[: len(read_prompt(chats[1]).history)]
    assert len({step.reward for step in longest[result.points[0].prefix_length :]}) > 5


def test_probes_reject_non_bandit_envs() -> None:
    with pytest.raises(ConfigError, match="multi-armed bandit"):
        run_frequency_bias_probe(UCBModel(), env_id="agentbench/TicTacToe-random-v0")
    with pytest.raises(ConfigError, match="history_lengths"):
        run_knowing_doing_probe(UCBModel(), history_lengths=(50,), progress=False)


# ---------------------------------------------------------------- knowing-doing probe


def test_knowing_but_greedy_model_knows_and_does_not_do() -> None:
    result = run_knowing_doing_probe(KnowingButGreedyModel(), progress=False)
    data = result.to_dict()
    assert data["n"] == 100 and data["unparsed"] == 0 and data["invalid_actions"] == 0
    assert data["knowing_rate"] >= 0.95
    table = data["table"]
    assert math.isclose(sum(v for row in table.values() for v in row.values()), 100.0)
    assert table["correct"]["greedy"] > 60 and table["correct"]["optimal"] < 40
    # wherever UCB's choice differs from the greedy one, the action is the greedy one
    for record in result.records:
        if record.action not in argmax_set(record.true_ucb):
            assert record.doing == "greedy"
    json.dumps(data, allow_nan=False)


@pytest.mark.parametrize("ucb_c", [2.0, 0.5])
def test_ucb_model_knows_and_does(ucb_c: float) -> None:
    data = run_knowing_doing_probe(UCBModel(), ucb_c=ucb_c, n_histories=40, progress=False)
    data = data.to_dict()
    assert data["knowing_rate"] == 1.0
    assert data["table"]["correct"]["optimal"] == 100.0


def test_unreadable_values_count_as_not_knowing_and_stay_in_n() -> None:
    answers = iter(["<ucb_values>blue: lots, green: ???</ucb_values> ACTION=blue", "no idea"] * 5)
    garbage = ScriptedGenerator(lambda chat: next(answers))
    data = run_knowing_doing_probe(garbage, n_histories=10, progress=False).to_dict()
    assert data["n"] == 10 == len(data["records"])
    assert data["unparsed"] == 10 and data["knowing_rate"] == 0.0
    assert data["invalid_actions"] == 5
    assert sum(data["table"]["correct"].values()) == 0.0
    assert math.isclose(sum(data["table"]["incorrect"].values()), 100.0)
    assert all(r["written"] is None and r["knowing"] is False for r in data["records"])


# ---------------------------------------------------------------- planted models in the runner


def _greedy_share_after(episodes, first_step: int) -> float:
    greedy = total = 0
    for episode in episodes:
        for index in range(first_step - 1, len(episode.steps)):
            counts, sums = arm_statistics(episode.steps[:index], episode.n_actions)
            greedy += episode.steps[index].action in greedy_actions(empirical_means(counts, sums))
            total += 1
    return greedy / total


def test_greedy_model_through_the_runner_exploits_and_fails_more_than_ucb() -> None:
    seeds = range(32)
    greedy = play(LLMAgent(GreedyModel()), ENV_10, seeds)
    ucb = play(LLMAgent(UCBModel()), ENV_10, seeds)
    assert coverage_curve(greedy).mean[9] == 1.0  # each of the 10 arms once, first
    assert _greedy_share_after(greedy, first_step=11) > 0.99
    assert _greedy_share_after(ucb, first_step=11) < 0.6
    assert suffix_failure(greedy).mean >= suffix_failure(ucb).mean + 0.2


def test_frequency_biased_model_through_the_runner_keeps_copying() -> None:
    episodes = play(LLMAgent(FrequencyBiasedModel()), ENV_10, range(16))
    assert final_coverage(episodes).mean < 0.3


# ---------------------------------------------------------------- a real model's path


def test_probes_run_on_a_tiny_real_model() -> None:
    from agentbench.models.tiny import tiny_generator

    generator = tiny_generator(seed=0)
    frequency = run_frequency_bias_probe(
        generator, n_prefixes=2, prefix_lengths=(2, 3), repetitions=(0, 5, 50), progress=False
    ).to_dict()
    assert frequency["forward_passes"] == 6 and frequency["model"] == generator.name
    assert all(0.0 <= p["entropy"] <= math.log(10) + 1e-9 for p in frequency["points"])
    assert {p["class"] for p in frequency["points"]} <= {"frequent", "greedy", "other"}
    json.dumps(frequency, allow_nan=False)

    knowing = run_knowing_doing_probe(
        generator, n_histories=3, history_lengths=(2, 4), budget=12, progress=False
    ).to_dict()
    assert knowing["n"] == 3 and len(knowing["records"]) == 3
    assert knowing["unparsed"] == sum(r["written"] is None for r in knowing["records"])
    assert math.isclose(sum(v for row in knowing["table"].values() for v in row.values()), 100.0)
    assert [r["history_length"] for r in knowing["records"]] == [2, 4, 2]
    json.dumps(knowing, allow_nan=False)


# ---------------------------------------------------------------- the agent's own trajectories

ENV_5 = "agentbench/GaussianBandit-5arms-low-button-v0"


def test_knowing_doing_on_the_agents_own_episodes_takes_their_prefixes() -> None:
    from agentbench.baselines import make_agent

    played = play(make_agent("greedy"), ENV_5, range(3))
    prompts: list[Chat] = []

    def reply(chat: Chat) -> str:
        prompts.append(chat)
        return "ACTION=blue"

    result = run_knowing_doing_probe(
        ScriptedGenerator(reply), env_id=ENV_5, n_histories=6, history_lengths=(4, 9),
        episodes=played, progress=False,
    )  # fmt: skip
    assert result.histories == "episodes of greedy"
    assert result.to_dict()["histories"] == "episodes of greedy"
    assert [r.history_length for r in result.records] == [4, 9, 4, 9, 4, 9]
    # History i is the first steps of episode i mod 3, as the prompt shows them.
    for i, (chat, record) in enumerate(zip(prompts, result.records, strict=True)):
        episode = played[i % 3]
        shown = read_prompt(chat).history
        assert [s.action for s in shown] == [s.action for s in episode.steps[: len(shown)]]
        assert len(shown) == record.history_length
        counts, sums = shown_statistics(episode.steps[: len(shown)], 5)
        assert record.true_ucb == tuple(ucb_values(counts, sums, len(shown), DEFAULT_UCB_C))


def test_own_episodes_must_be_one_agents_on_the_env_and_long_enough() -> None:
    from agentbench.baselines import make_agent

    greedy = play(make_agent("greedy"), ENV_5, range(2))
    ucb = play(make_agent("ucb"), ENV_5, range(2))
    short = play(make_agent("ucb"), ENV_5, range(2), env_kwargs={"horizon": 6})
    generator = ScriptedGenerator(lambda chat: "ACTION=blue")
    with pytest.raises(ConfigError, match="several agents"):
        run_knowing_doing_probe(generator, env_id=ENV_5, episodes=[*greedy, *ucb], progress=False)
    with pytest.raises(ConfigError, match="no episodes on"):  # made with other settings
        run_knowing_doing_probe(generator, env_id=ENV_5, episodes=short, progress=False)
    with pytest.raises(ConfigError, match="fewer than 40 steps"):
        run_knowing_doing_probe(
            generator, env_id=ENV_5, episodes=[replace(greedy[0], steps=greedy[0].steps[:10])],
            progress=False,
        )  # fmt: skip


# ---------------------------------------------------------------- knowing-doing at k


class _SometimesUCB:
    """Answers as the UCB model does with probability 0.4 (by the seed it is given), else
    writes nothing readable and an untried-or-first action: sampled knowing and doing."""

    name = "sometimes-ucb"

    def generate(self, prompts, config, seeds=None):
        assert config.temperature == 1.0
        ucb, out = UCBModel(), []
        for chat, seed in zip(prompts, seeds, strict=True):
            if np.random.default_rng(seed).random() < 0.4:
                out += ucb.generate([chat], config)
            else:
                out.append(Generation(f"no idea ACTION={read_prompt(chat).labels[0]}"))
        return out


def test_knowing_doing_at_k_from_several_samples_per_history() -> None:
    result = run_knowing_doing_probe(_SometimesUCB(), ENV_10, n_histories=20, samples=6,
                                     ks=(1, 3, 6), temperature=1.0, progress=False)  # fmt: skip
    assert result.n == 120 and {r.history for r in result.records} == set(range(20))
    at_k = result.at_k()
    judged = {"knowing": lambda r: r.knowing, "optimal": lambda r: r.doing == "optimal"}
    for name, right in judged.items():
        rows = [[right(r) for r in result.records if r.history == h] for h in range(20)]
        for k in (1, 3, 6):
            subsets = list(itertools.combinations(range(6), k))
            brute = np.mean([np.mean([any(row[i] for i in s) for s in subsets]) for row in rows])
            assert at_k[name]["pass"][str(k)].mean == pytest.approx(brute)
            majority = np.mean([sum(row[:k]) > k / 2 for row in rows])
            assert at_k[name]["maj"][str(k)].mean == pytest.approx(majority)
    # about 40% of samples know: pass@1 ~ 0.4, pass@6 ~ 1 - 0.6^6 ~ 0.95
    assert 0.25 < at_k["knowing"]["pass"]["1"].mean < 0.55
    assert at_k["knowing"]["pass"]["6"].mean > 0.8
    data = result.to_dict()
    assert data["samples"] == 6 and set(data["at_k"]["knowing"]["pass"]) == {"1", "3", "6"}
    json.dumps(data, allow_nan=False)
    with pytest.raises(ConfigError, match="need a temperature > 0"):
        run_knowing_doing_probe(_SometimesUCB(), ENV_10, samples=2, ks=(1,), progress=False)
