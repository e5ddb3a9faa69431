"""Return-conditioned training: the return token line in the context (only when set),
labels by hand (median, threshold, quantile; by episode or by step), training pairs
under each label's context, reproducibility, config errors, and learning on a tiny
model: conditioned on "good" it plays clearly better than before training and than
the same model conditioned on "bad"."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixed_bandits import (
    fixed_arms_bandit,
    learning_generator,
    learning_threads,
    registered,
    report_figures,
    weak_start,
)

from agentbench.agent.context import QUESTION, ContextSettings, build_context
from agentbench.agent.llm import LLMAgentSettings
from agentbench.envs import make, text_env
from agentbench.errors import ConfigError
from agentbench.models.tiny import tiny_generator
from agentbench.rlft import ReturnConditioned, ReturnConditionedConfig, return_labels
from agentbench.rlft.config import EnvSettings
from agentbench.rlft.return_conditioned import CONTEXTS_KEY
from agentbench.rlft.sampling import SampledEpisode, SampledStep
from agentbench.rlft.sft import SFTConfig

RC_ENV = "agentbench-test/RCFixedArmsBandit-v0"
MEANS = (0.2, 0.8)  # arm 1 is always best
HORIZON = 5
EVAL_SEEDS = range(10_000, 10_064)  # held out: training uses seeds from 0

RCFixedArmsBandit = fixed_arms_bandit(MEANS, HORIZON)


@pytest.fixture(scope="module", autouse=True)
def rc_env():
    with registered(RC_ENV, RCFixedArmsBandit) as env_id:
        yield env_id


@pytest.fixture(scope="module", autouse=True)
def torch_threads():
    with learning_threads():
        yield


def _config(**changes: Any) -> ReturnConditionedConfig:
    values: dict[str, Any] = dict(
        env=EnvSettings(RC_ENV, {"horizon": 2}),
        iterations=1,
        episodes_per_iteration=4,
        agent=LLMAgentSettings(cot=False),
        sft=SFTConfig(learning_rate=1e-3, batch_size=4),
    )
    values.update(changes)
    return ReturnConditionedConfig(**values)


# ---------------------------------------------------------------- the return token


def _text(settings: ContextSettings) -> str:
    env = make("agentbench/GaussianBandit-5arms-medium-button-v0")
    env.reset(seed=7)
    return build_context(text_env(env), [], settings)[0]["content"]


def test_the_return_token_is_one_line_before_the_question_only_when_set():
    plain = _text(ContextSettings())
    good = _text(ContextSettings(return_token="good"))
    assert "Target return" not in plain
    assert good.endswith("\n\nTarget return: good.\n\n" + QUESTION.format(step=1))
    assert good.replace("Target return: good.\n\n", "") == plain  # nothing else moves
    assert "Target return: bad." in _text(ContextSettings(return_token="bad"))
    # reachable from the agent's settings like the other context knobs
    assert LLMAgentSettings(return_token="good").context.return_token == "good"
    assert LLMAgentSettings().context == ContextSettings()
    with pytest.raises(ConfigError, match="return_token must be one non-empty line"):
        ContextSettings(return_token="")
    with pytest.raises(ConfigError, match="return_token must be one non-empty line"):
        LLMAgentSettings(return_token="good\nbad")


def test_collected_prompts_are_the_good_context_and_bad_pairs_get_the_bad_one():
    generator = tiny_generator(seed=0)
    trainer = ReturnConditioned(_config(), generator)
    sampled = trainer.collect(0)
    assert [s.seed for s in sampled] == [0, 1, 2, 3]
    text = generator.tokenizer.decode(sampled[0].steps[0].prompt_ids)
    assert "Target return: good." in text and "Target return: bad." not in text
    for item in sampled:
        for step in item.steps:
            chats = step.extras[CONTEXTS_KEY]
            assert generator.encode_chat(chats["good"]) == step.prompt_ids
    labels = [["good", "bad"], ["bad", "bad"], ["good", "good"], ["bad", "good"]]
    prompts, targets = trainer.training_pairs(sampled, labels)
    steps = [step for item in sampled for step in item.steps]
    flat = [label for row in labels for label in row]
    assert targets == [step.completion_ids for step in steps]  # always its own tokens
    for prompt, step, label in zip(prompts, steps, flat, strict=True):
        assert prompt == generator.encode_chat(step.extras[CONTEXTS_KEY][label])
        assert f"Target return: {label}." in generator.tokenizer.decode(prompt)


# ---------------------------------------------------------------- labels


def test_labels_median_threshold_and_quantile_by_hand():
    returns = [-10.0, 1.0, 3.0, 2.0]  # median 1.5
    assert return_labels(returns) == (["bad", "bad", "good", "good"], 1.5)
    assert return_labels([1.0, 1.0, 0.0]) == (["good", "good", "bad"], 1.0)  # ties are good
    assert return_labels(returns, threshold=1.0)[0] == ["bad", "good", "good", "good"]
    # the 0.75 quantile of [-10, 1, 2, 3] is 2.25: only the best quarter is good
    labels, line = return_labels(returns, quantile=0.75)
    assert labels == ["bad", "bad", "good", "bad"] and line == pytest.approx(2.25)


def _sampled(rewards: list[list[float]]) -> list[SampledEpisode]:
    return [
        SampledEpisode(
            episode=None,  # type: ignore[arg-type]  # labelling reads rewards only
            sample=0,
            steps=[SampledStep(t + 1, [1], [2], {}) for t in range(len(row))],
            rewards=np.array(row),
        )
        for row in rewards
    ]


def test_episode_credit_labels_every_step_alike_step_credit_each_step_alone():
    sampled = _sampled([[-5.0, 0.8], [0.2, 0.2], [0.8, 0.8]])  # returns -4.2, 0.4, 1.6
    by_episode = ReturnConditioned(_config(), None)
    assert by_episode.label_steps(sampled) == (
        [["bad", "bad"], ["good", "good"], ["good", "good"]],
        0.4,
    )
    # step rewards [-5, .8, .2, .2, .8, .8]: median 0.5
    by_step = ReturnConditioned(_config(credit="step"), None)
    assert by_step.label_steps(sampled) == (
        [["bad", "good"], ["bad", "bad"], ["good", "good"]],
        0.5,
    )


# ---------------------------------------------------------------- runs


def test_same_seeds_same_run(tmp_path: Path):
    def run(output_dir: Path) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
        generator = tiny_generator(seed=0)
        config = _config(iterations=2, output_dir=str(output_dir))
        records = ReturnConditioned(config, generator).train()
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records], {
            k: v.clone() for k, v in generator.model.state_dict().items()
        }

    records_a, weights_a = run(tmp_path / "a")
    records_b, weights_b = run(tmp_path / "b")
    assert records_a == records_b
    for name, value in weights_a.items():
        assert torch.equal(value, weights_b[name]), name
    assert not torch.equal(weights_a["lm_head.weight"], tiny_generator(seed=0).model.lm_head.weight)
    logged = [
        json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["iteration"] for r in logged] == [1, 2]
    assert {"return", "invalid_rate", "final_regret", "threshold", "good_fraction", "loss"} <= set(
        logged[0]
    )


def test_config_errors_name_the_bad_value():
    with pytest.raises(ConfigError, match="credit 'token' is not one of episode, step"):
        _config(credit="token")
    with pytest.raises(ConfigError, match=r"quantile must be a finite number in \[0, 1\], got 1.5"):
        _config(quantile=1.5)
    with pytest.raises(
        ConfigError, match=r"threshold must be a finite number in \(-inf, inf\), got inf"
    ):
        _config(threshold=float("inf"))
    with pytest.raises(ConfigError, match="episodes_per_iteration must be at least 1, got 0"):
        _config(episodes_per_iteration=0)
    with pytest.raises(
        ConfigError, match=r"invalid_penalty must be a finite number in \(-inf, 0\], got 5"
    ):
        _config(invalid_penalty=5.0)


# ---------------------------------------------------------------- learning


def _scores(trainer: ReturnConditioned, token: str) -> dict[str, float]:
    """Invalid rate and final regret on the held-out seeds, sampled at temperature 1."""
    summary, _ = trainer.evaluate(EVAL_SEEDS, temperature=1.0, return_token=token)
    return {"invalid": summary["invalid_rate"]["mean"], "regret": summary["final_regret"]["mean"]}


@pytest.mark.slow
@pytest.mark.learning
def test_conditioned_on_good_it_plays_better_than_before_and_than_on_bad(tmp_path: Path):
    """Measured (64 held-out episodes of 5 steps, sampled; ~60 s on one thread), under
    the default kernels of an AVX-512 CPU / under AVX2: conditioned on "good", invalid
    0.77 / 0.78 -> 0.13 / 0.05 and regret 1.36 -> 0.19 / 0.08 (random play: 1.5).

    The same trained model conditioned on "bad" plays worse under one kernel and
    nearly as well under the other (invalid 0.21 / 0.09, regret 0.69 / 0.12): once
    nearly every sample is a valid answer for the better arm, the median splits that
    arm's own samples and "bad" stops meaning anything different. So the control only
    asserts that "good" is not worse than "bad". With 2 epochs per iteration instead
    of 4 the two tokens did differ, but the learning itself took off at a moment that
    depended on the CPU kernels ("good" invalid 0.31 under one, 0.61 under another) and
    on the initialisation.

    ``ACTION=`` is one token (:data:`fixed_bandits.LEARNING_WORD_TOKENS`), and steps
    are labelled by their own reward (credit "step"): in this bandit an answer changes
    only its own reward; with episode labels every step also carries its siblings'
    luck, and the tiny model needs more iterations than a test can run (the same
    reason PPO's bandit test uses gamma 0)."""
    started = time.perf_counter()
    generator = learning_generator()
    weak_start(generator, RC_ENV, len(MEANS))
    config = ReturnConditionedConfig(
        env=EnvSettings(RC_ENV),
        iterations=4,
        episodes_per_iteration=32,
        credit="step",
        agent=LLMAgentSettings(cot=False),
        sft=SFTConfig(learning_rate=3e-3, lr_min=3e-4, epochs=4, batch_size=16),
        output_dir=str(tmp_path),
    )
    trainer = ReturnConditioned(config, generator)
    start = _scores(trainer, "good")
    records = trainer.train()
    good, bad = _scores(trainer, "good"), _scores(trainer, "bad")
    report_figures(**{f"start_{k}": v for k, v in start.items()},
                   **{f"good_{k}": v for k, v in good.items()},
                   **{f"bad_{k}": v for k, v in bad.items()},
                   seconds=time.perf_counter() - started)  # fmt: skip
    for record in records:
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in record.items()})

    assert start["invalid"] > 0.7 and start["regret"] > 1.2  # mostly invalid, arms at random
    # "good" beats the untrained model by far ...
    assert good["invalid"] < start["invalid"] - 0.45
    assert good["regret"] < start["regret"] - 0.9
    # ... and is not worse than the same model told "bad" (beyond ~3 standard errors)
    assert good["invalid"] <= bad["invalid"] + 0.05
    assert good["regret"] <= bad["regret"] + 0.1
    assert records[-1]["invalid_rate"] < records[0]["invalid_rate"] - 0.2
