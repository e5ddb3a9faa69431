"""PPOConfig: every knob of PPO fine-tuning in one dataclass (SPEC.md sections 2-3).

The help declared with each field (``setting``; ``agentbench train --help`` prints it)
is its documentation: what it does, its default, and where the default comes from.
"Paper" means the published RLFT settings of SPEC.md section 3 (full fine-tuning with
AdaFactor, lr 1e-4 with 100 warm-up steps and cosine decay to 1e-6, grad clip 1.0,
batch 128, 16 envs, 1 epoch per rollout on bandits and 2 on tic-tac-toe, clip 0.2,
KL beta 0.05).

A config is written as a TOML file of these keys (``load_ppo_config``), with the
model in a ``[model]`` table (``ModelSettings``: name, dtype, LoRA), the env in an
``[env]`` table (:class:`EnvSettings`) and the agent's settings in an ``[agent]``
table (``LLMAgentSettings``); an unknown key or a bad value is a
:class:`ConfigError` naming it and what is accepted. TOML has no null:
``history_length = "all"`` means the whole episode, and ``device`` is left out to
keep its default.
"""

from __future__ import annotations

import json
import math
import typing
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from agentbench.agent.llm import LLMAgentSettings
from agentbench.errors import ConfigError
from agentbench.io import read_toml
from agentbench.memory import return_freed_memory_setting
from agentbench.rlft.fsdp import PARALLEL_HELP, check_parallel_setting
from agentbench.rlft.rewards import (
    REASONING_MEASURES,
    REWARD_NORMALISATIONS,
    REWARDS,
    RewardShaping,
    exploration_bonus_setting,
    invalid_penalty_setting,
)
from agentbench.settings import check_types, config_from_dict, moved_settings_error, setting

OPTIMIZERS = ("adamw", "adafactor")
ADVANTAGES = ("mc", "gae")
COMPUTE_DTYPES = ("float32", "bfloat16", "auto")  # agentbench.rlft.precision


AGENT_TABLE_HELP = (
    "the LLM agent that plays: an [agent] table of LLMAgentSettings keys (cot, budget, "
    "history_length, summary, randomise_labels, top_p; see agentbench run's llm agent)"
)


@dataclass(frozen=True)
class EnvSettings:
    """The env a trainer plays: an [env] table of every training config."""

    id: str = setting(
        "agentbench/GaussianBandit-10arms-medium-button-v0",
        "the env id trained and evaluated on (paper: the 10-arm button MAB)",
    )
    kwargs: dict[str, Any] = setting(
        factory=dict, help="keyword arguments of gymnasium.make (an [env.kwargs] table)"
    )


ENV_TABLE_HELP = "the env: an [env] table with id and kwargs (EnvSettings)"


@dataclass(frozen=True)
class ModelSettings:
    """The model a trainer fine-tunes: the ``[model]`` table of every training config."""

    name: str = setting(
        "smollm2-135m-instruct",
        "catalog name, model directory or .gguf file; used when no generator is handed in",
    )
    device: str | None = setting(
        None, "None: CUDA when available, else CPU (a trainer-loaded model only)"
    )
    dtype: str = setting(
        "float32",
        (
            "weights of a trainer-loaded model: float32 keeps small updates that bf16 weights "
            "swallow; bfloat16 halves a frozen LoRA base (peft keeps the adapters float32); "
            "auto: bfloat16 where it runs natively, float32 elsewhere (AVX2 CPUs emulate it)"
        ),
    )
    use_lora: bool = setting(
        False, "False: full fine-tuning (paper), PPO with a frozen reference copy"
    )
    lora_r: int = setting(16, "LoRA rank")
    lora_alpha: int = setting(32, "LoRA scaling numerator (scale = alpha / r), at least 1")
    lora_dropout: float = setting(
        0.0, "in [0, 1); > 0 makes the first PPO ratio differ from 1 (dropout noise)"
    )
    lora_target_modules: list[str] | str = setting("all-linear", "peft target_modules")

    def __post_init__(self) -> None:
        for name in ("lora_r", "lora_alpha"):
            if getattr(self, name) < 1:
                raise ConfigError(f"[model] {name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"[model] lora_dropout must be in [0, 1), got {self.lora_dropout}")

    def load(self, device: str | None = None) -> Any:
        """The named model as a TransformersGenerator, on ``self.device`` (or, when that
        is None, ``device``; None there too: CUDA when available) in ``self.dtype`` (an
        unknown dtype is a ConfigError here)."""
        from agentbench.models.catalog import resolve_model

        return resolve_model(self.name, device=self.device or device, dtype=self.dtype)

    def load_trainable(self, seed: int, device: str | None = None) -> Any:
        """:meth:`load`, with the model made :meth:`trainable` (LoRA from ``seed``)."""
        generator = self.load(device)
        generator.model = self.trainable(generator.model, seed)
        return generator

    def trainable(self, model: Any, seed: int) -> Any:
        """``model`` made trainable as these settings say: LoRA adapters injected (in
        place, initialised from ``seed``; only they train) or every weight trainable."""
        from agentbench.rlft.policy import add_lora

        if self.use_lora:
            return add_lora(
                model,
                self.lora_r,
                self.lora_alpha,
                self.lora_dropout,
                self.lora_target_modules,
                seed,
            )
        return model.requires_grad_(True)


MODEL_TABLE_HELP = (
    "the model fine-tuned: a [model] table (name, device, dtype, use_lora, lora_r, lora_alpha, "
    "lora_dropout, lora_target_modules)"
)
# Env settings that moved to the [env] table (earlier configs had them at the top).
ENV_KEYS = ("env_id", "env_kwargs")
# Agent settings that move to the [agent] table (earlier configs had them at the top).
AGENT_KEYS = ("cot", "budget", "history_length")
# Model settings that moved to the [model] table (earlier configs had them at the top).
MODEL_KEYS = ("device", "dtype", "use_lora", "lora_r", "lora_alpha", "lora_dropout",
              "lora_target_modules")  # fmt: skip


@dataclass
class PPOConfig:
    """PPO fine-tuning of an LLM agent: collect, compute advantages, update, log."""

    model: ModelSettings = setting(factory=ModelSettings, help=MODEL_TABLE_HELP)
    # ---- environment and seeds
    env: EnvSettings = setting(factory=EnvSettings, help=ENV_TABLE_HELP)
    num_envs: int = setting(16, "envs played in parallel per rollout (paper: 16)")
    episodes_per_update: int = setting(
        16, "episodes per rollout (paper: 16 envs x 50 steps = 800 steps)"
    )
    train_seed: int = setting(0, "update u plays seeds train_seed + u*episodes_per_update + [0, E)")
    eval_seed: int = setting(
        1_000_000, "first held-out evaluation seed; must not meet training seeds"
    )
    eval_episodes: int = setting(16, "held-out episodes per evaluation")
    eval_every: int = setting(
        10, "evaluate (greedy decoding) every N updates and at the end; 0 = never"
    )
    total_updates: int = setting(100, "rollout + update cycles")
    # ---- optimisation
    learning_rate: float = setting(1e-4, "peak lr (paper: 1e-4)")
    lr_min: float = setting(1e-6, "cosine decay ends here (paper: 1e-6)")
    warmup_steps: int = setting(100, "linear warm-up, in optimizer steps (paper: 100)")
    optimizer: str = setting(
        "adafactor", '"adamw" or "adafactor" (transformers\' Adafactor; paper)'
    )
    weight_decay: float = setting(0.0, "decoupled weight decay (AdamW) / Adafactor's weight_decay")
    max_grad_norm: float = setting(1.0, "global gradient-norm clip (paper: 1.0)")
    num_minibatches: int = setting(
        6, "optimizer steps per epoch (paper: batch 128 of 800 steps ~ 6)"
    )
    micro_batch_size: int = setting(
        16,
        (
            "per-row path (packed = false): steps per forward pass; gradients accumulate over "
            "the forward passes of a minibatch"
        ),
    )
    packed: bool = setting(
        True,
        (
            "minibatches of whole episodes, each episode's steps forwarded as one trie "
            "(agentbench.models.packing): the shared history once, not once per step; false: "
            "one row per step, minibatches of steps drawn across episodes (the reference path)"
        ),
    )
    max_packed_tokens: int = setting(
        4096,
        (
            "packed path: the longest trie (a longer episode is cut into consecutive chunks, "
            "each repeating the trunk it needs) and the padded tokens per pass"
        ),
    )
    compute_dtype: str = setting(
        "float32",
        (
            'forward arithmetic: "float32", "bfloat16" (autocast over float32 weights and '
            'optimizer state, agentbench.rlft.precision) or "auto" (bf16 where fast)'
        ),
    )
    gradient_checkpointing: bool = setting(
        False,
        (
            "recompute each layer's activations in the backward pass instead of keeping them: "
            "the training pass costs about a third more, and its activation memory falls from "
            "all layers' to one layer's (agentbench.rlft.precision)"
        ),
    )
    return_freed_memory: bool = return_freed_memory_setting()
    parallel: str = setting("data", PARALLEL_HELP)
    update_epochs: int = setting(1, "passes over each rollout (paper: 1 bandits, 2 tic-tac-toe)")
    clip_eps: float = setting(0.2, "PPO ratio clip epsilon (paper: 0.2)")
    kl_beta: float = setting(
        0.05, "weight of the per-token KL(pi_theta || pi_ref), k3 estimate (paper)"
    )
    # ---- advantages and rewards
    advantage: str = setting(
        "mc",
        (
            '"mc": returns-to-go minus the batch mean at the same step (bandits); "gae": '
            "learned value head + GAE, for variable-length episodes (tic-tac-toe)"
        ),
    )
    gamma: float = setting(1.0, "discount of returns-to-go and GAE (paper: 1.0)")
    gae_lambda: float = setting(0.95, "GAE lambda (paper: 0.95)")
    value_coef: float = setting(
        0.5, "weight of the value-head MSE loss (gae only; CleanRL's vf_coef)"
    )
    value_detach: bool = setting(
        True,
        (
            "the value loss trains the head only, not the LM under it: returns of "
            "-5-per-invalid-step episodes give value errors in the hundreds at the start, whose"
            " gradients through a shared trunk wreck the policy of a small model"
        ),
    )
    normalize_advantages: bool = setting(
        False,
        (
            "divide each minibatch's advantages by their std (after subtracting their mean), as"
            " CleanRL does; off keeps the paper's raw advantages"
        ),
    )
    reward: str = setting(
        "dense", '"dense": every step\'s reward; "sparse": the episode total at its end'
    )
    reward_normalisation: str = setting(
        "scale",
        (
            '"scale": env reward / reward_scale; "batch_std": env reward / its std over the '
            "rollout (stateless, so resuming stays exact)"
        ),
    )
    reward_scale: float = setting(
        1.0, 'divisor of the env reward under "scale" (bandit rewards ~ 1)'
    )
    invalid_penalty: float = invalid_penalty_setting()
    exploration_bonus: float = exploration_bonus_setting()
    reasoning_bonus: float = setting(
        0.0,
        "weight of a reasoning reward in the spirit of RLSP (SPEC 3): each step earns "
        "reasoning_bonus x a score in [0, 1] of its text before ACTION=; logged apart as "
        "mean_reasoning_bonus; 0 = off",
    )
    reasoning_measure: str = setting(
        "length",
        '"length": words / reasoning_words, capped at 1; "variety": distinct words / words',
    )
    reasoning_words: int = setting(100, '"length": the word count that earns the whole bonus')
    # ---- the agent (SPEC.md section 2)
    agent: LLMAgentSettings = setting(
        factory=LLMAgentSettings,
        help=AGENT_TABLE_HELP + "; rollouts sample at temperature 1.0, evaluation is greedy",
    )
    # ---- output
    output_dir: str = setting("runs/ppo", "metrics.jsonl, eval episodes and checkpoints go here")
    checkpoint_every: int = setting(
        10, "checkpoint every N updates and at the end; 0 = only at the end"
    )
    keep_checkpoints: int = setting(2, "newest checkpoints kept on disk (older ones are deleted)")
    seed: int = setting(0, "minibatch shuffling, dropout, LoRA init")
    progress: bool = setting(True, "tqdm bar over updates")
    tensorboard: bool = setting(
        False,
        (
            "also log every metric to <output_dir>/tensorboard (needs the tensorboard package: "
            'pip install "agentbench[tensorboard]")'
        ),
    )

    def __post_init__(self) -> None:
        check_types(self)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("advantage", self.advantage, ADVANTAGES)
        _choice("reward", self.reward, REWARDS)
        _choice("reward_normalisation", self.reward_normalisation, REWARD_NORMALISATIONS)
        _choice("reasoning_measure", self.reasoning_measure, REASONING_MEASURES)
        _choice("compute_dtype", self.compute_dtype, COMPUTE_DTYPES)
        check_parallel_setting(self.parallel, self.model.use_lora, self.optimizer)
        for name in (
            "num_envs",
            "episodes_per_update",
            "total_updates",
            "num_minibatches",
            "micro_batch_size",
            "max_packed_tokens",
            "update_epochs",
            "keep_checkpoints",
            "eval_episodes",
            "reasoning_words",
        ):
            _at_least(name, getattr(self, name), 1)
        for name in (
            "warmup_steps",
            "eval_every",
            "checkpoint_every",
            "train_seed",
            "eval_seed",
            "seed",
        ):
            _at_least(name, getattr(self, name), 0)
        check_float_settings(self, PPO_FLOAT_RANGES)
        if self.lr_min > self.learning_rate:
            raise ConfigError(
                f"lr_min {self.lr_min} must not exceed learning_rate {self.learning_rate}"
            )
        train_end = self.train_seed + self.total_updates * self.episodes_per_update
        eval_end = self.eval_seed + self.eval_episodes
        if self.train_seed < eval_end and self.eval_seed < train_end:
            raise ConfigError(
                f"evaluation seeds [{self.eval_seed}, {eval_end}) overlap training seeds "
                f"[{self.train_seed}, {train_end}); move eval_seed outside the training range"
            )
        # Template steps have no prompt the policy saw, so no value estimate for GAE.
        check_training_agent(
            self.agent, forcing=True, templates=self.advantage == "mc", several_generations=True
        )

    def agent_settings(self, temperature: float = 1.0) -> LLMAgentSettings:
        """The LLM agent of rollouts (temperature 1.0, SPEC.md 2) or evaluation (0.0)."""
        return replace(self.agent, temperature=temperature)

    def reward_shaping(self) -> RewardShaping:
        """How this run turns env rewards into training rewards (agentbench.rlft.rewards)."""
        return RewardShaping(
            invalid_penalty=self.invalid_penalty,
            exploration_bonus=self.exploration_bonus,
            reward=self.reward,
            normalisation=self.reward_normalisation,
            reward_scale=self.reward_scale,
            reasoning_bonus=self.reasoning_bonus,
            reasoning_measure=self.reasoning_measure,
            reasoning_words=self.reasoning_words,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (``history_length`` None stays None)."""
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)


def check_training_agent(
    agent: LLMAgentSettings,
    *,
    forcing: bool = False,
    templates: bool = False,
    several_generations: bool = False,
) -> None:
    """The agent mechanisms RL fine-tuning can train with: every trained step must be
    the model's own generated answer. Answers assembled from several generations
    (self-consistency, self-correction) carry no single generated sequence to score,
    so they are refused with one clear error. Forced answers are the model's text plus
    its own choice of label after a template ``ACTION=`` prefix; a trainer that masks
    the prefix (PPO) passes ``forcing=True``. Template steps (try-all, epsilon-greedy)
    are the mechanism's, not the model's; a trainer that leaves them out of its loss
    and keeps their rewards (PPO with MC advantages) passes ``templates=True``. A
    trainer that trains the generation the answer came from (PPO: the chosen sample
    of self-consistency, the second pass of self-correction, in its review chat)
    passes ``several_generations=True``."""
    if not isinstance(agent, LLMAgentSettings):
        raise ConfigError(f"agent must be an [agent] table, got {agent!r}")
    unsupported = {
        "try_all": agent.try_all and not templates,
        "epsilon": agent.epsilon > 0 and not templates,
        "self_consistency": agent.self_consistency > 1 and not several_generations,
        "self_correction": agent.self_correction and not several_generations,
        "return_token": agent.return_token is not None,
        "answer_forcing": agent.answer_forcing and not forcing,
    }
    named = [name for name, used in unsupported.items() if used]
    if named:
        supported = {
            "answer_forcing": " (PPO trains forced answers)",
            "try_all": ' (PPO with advantage = "mc" trains around template steps)',
            "epsilon": ' (PPO with advantage = "mc" trains around template steps)',
            "self_consistency": " (PPO trains the chosen sample)",
            "self_correction": " (PPO trains the second pass)",
        }.get(named[0], "")
        raise ConfigError(
            f"agent setting {named[0]} is not supported in this trainer{supported}: training "
            "needs every step to be the model's own single generated answer"
        )


def reject_moved_settings(data: dict[str, Any]) -> None:
    """One error line for a training config that still has the agent's, the env's or
    the model's settings at its top level, where earlier versions read them."""
    moved_settings_error(data, AGENT_KEYS, "agent")
    moved_settings_error(data, ENV_KEYS, "env")
    moved_settings_error(data, MODEL_KEYS, "model")
    if isinstance(data.get("model"), str):
        raise ConfigError(
            f"model is a [model] table now: write [model] name = {data['model']!r} (with its "
            "dtype, use_lora and lora_* settings in the same table)"
        )


def ppo_config_from_dict(data: dict[str, Any]) -> PPOConfig:
    """A PPOConfig from plain values (the [env] and [agent] tables as nested tables),
    with one clear error for unknown keys."""
    reject_moved_settings(data)
    return config_from_dict(PPOConfig, data, "PPO")


def load_ppo_config(path: str | Path) -> PPOConfig:
    """Read a flat TOML file of PPOConfig keys."""
    return ppo_config_from_dict(read_toml(path, "PPO config file"))


# ---------------------------------------------------------------- validation


@dataclass(frozen=True)
class Interval:
    """The accepted values of a float setting: finite, between ``low`` and ``high``
    (each end included unless open)."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return math.isfinite(value) and above and below

    def __str__(self) -> str:
        left = "(" if self.low_open or self.low == -math.inf else "["
        right = ")" if self.high_open or self.high == math.inf else "]"
        return f"{left}{_number(self.low)}, {_number(self.high)}{right}"


def _number(value: float) -> str:
    return "inf" if value == math.inf else "-inf" if value == -math.inf else f"{value:g}"


POSITIVE = Interval(0.0, low_open=True)
NON_NEGATIVE = Interval(0.0)
NON_POSITIVE = Interval(high=0.0)
UNIT = Interval(0.0, 1.0)
ANY_FINITE = Interval()

PPO_FLOAT_RANGES = {
    "learning_rate": POSITIVE,
    "lr_min": NON_NEGATIVE,
    "weight_decay": NON_NEGATIVE,
    "max_grad_norm": POSITIVE,
    "clip_eps": POSITIVE,
    "kl_beta": NON_NEGATIVE,
    "gamma": UNIT,
    "gae_lambda": UNIT,
    "value_coef": NON_NEGATIVE,
    "reward_scale": POSITIVE,
    "invalid_penalty": NON_POSITIVE,
    "exploration_bonus": NON_NEGATIVE,
    "reasoning_bonus": NON_NEGATIVE,
}


def float_fields(cls: type) -> list[str]:
    """The fields of a config dataclass annotated ``float`` or ``float | None``."""
    hints = typing.get_type_hints(cls)
    return [
        f.name
        for f in fields(cls)
        if hints[f.name] is float or float in typing.get_args(hints[f.name])
    ]


def check_float_settings(config: Any, ranges: dict[str, Interval]) -> None:
    """Every float setting of ``config`` a finite number in its range (None passes where
    the annotation allows it): a ConfigError naming the field, the value and the range.

    ``ranges`` must name every float field, so a new one cannot go unchecked."""
    for name in float_fields(type(config)):
        if name not in ranges:
            raise TypeError(f"{type(config).__name__}.{name} has no accepted range")
        value = getattr(config, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name} = {value!r} is not a number; accepted is {ranges[name]}")
        if value not in ranges[name]:
            raise ConfigError(f"{name} must be a finite number in {ranges[name]}, got {value!r}")


def _choice(name: str, value: str, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ConfigError(f"{name} {value!r} is not one of {', '.join(accepted)}")


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{name} must be at least {low}, got {value}")
