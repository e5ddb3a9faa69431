"""Supervised fine-tuning on expert data (SPEC.md section 3, related work).

Two kinds of target, both from a UCB expert playing the real env:

- behaviour cloning: the expert's action only, ``format_action(label)``;
- thought cloning: a short text UCB computation, one line per arm
  (``label: n=3 mean=0.41 ucb=1.52`` or ``label: untried``), then
  ``format_action(label)``.

Each example's prompt is exactly the chat an :class:`~agentbench.agent.llm.LLMAgent`
with the same :class:`ContextSettings` would see at that step: the expert is
wrapped in an agent that calls :func:`build_context` on the very ``Turn`` the
rollout loop hands it. The numbers of the thought come from
:func:`arm_statistics`, :func:`empirical_means` and the expert's own
``values`` (:func:`ucb_values` for :class:`UCBAgent`): no second formula.

:func:`train_sft` minimises the cross-entropy of the target tokens (the prompt
is masked: only completion log-probs enter the loss, via
``TransformersGenerator.packed_logprobs``, or per row) with AdamW and the PPO trainer's
warm-up + cosine schedule. Its loop, :func:`train_on_targets`, works on token ids
and is also the training step of expert iteration and return-conditioned training.
Given an ``output_dir`` it checkpoints after every epoch and resumes exactly
(safetensors + JSON, :mod:`agentbench.rlft.checkpoint`).
Seeding happens inside ``torch.random.fork_rng`` and a ``np.random.Generator``; no
global RNG is touched.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agentbench.agent.context import ContextSettings, build_context
from agentbench.agent.interface import Decision, Turn
from agentbench.agent.parsing import format_action
from agentbench.baselines.bandit import UCBAgent, ucb_values
from agentbench.envs.protocol import format_reward
from agentbench.errors import ConfigError
from agentbench.io import write_atomic, write_json
from agentbench.memory import return_freed_memory, return_freed_memory_setting
from agentbench.metrics import arm_statistics, empirical_means
from agentbench.models.interface import Chat
from agentbench.models.packing import DEFAULT_MAX_PACKED_TOKENS
from agentbench.records import Episode, Step
from agentbench.rlft import checkpoint as ckpt
from agentbench.rlft import fsdp
from agentbench.rlft.config import COMPUTE_DTYPES, NON_NEGATIVE, POSITIVE, check_float_settings
from agentbench.rlft.distributed import DataParallel
from agentbench.rlft.nonfinite import all_finite, finite_step, refuse_all_skipped, warn_skipped
from agentbench.rlft.policy import forked_torch_rng, lr_factor
from agentbench.rlft.precision import (
    compute_precision,
    resolve_compute_dtype,
    set_gradient_checkpointing,
)
from agentbench.rollout import play
from agentbench.settings import setting

MODES = ("behaviour", "thought")
SINGLE_PROCESS = DataParallel()


@dataclass(frozen=True)
class SFTExample:
    """One supervised example: the agent's chat at a step and the expert's answer."""

    chat: Chat  # the context the LLM agent would see (build_context)
    target: str  # the answer to clone: ACTION=X, or the UCB thought then ACTION=X
    seed: int  # episode seed
    t: int  # 1-based step of the episode
    action: int  # the expert's action index
    label: str  # its label


def ucb_thought(
    labels: Sequence[str], history: Sequence[Step], expert: Any | None = None
) -> tuple[str, np.ndarray]:
    """The per-arm UCB lines for ``history`` and the UCB values they show.

    ``expert.values(counts, sums, t)`` gives the values when the expert has that
    method (:class:`UCBAgent`), else :func:`ucb_values` with its default ``c``.
    """
    counts, sums = arm_statistics(history, len(labels))
    means = empirical_means(counts, sums)
    t = len(history)
    values_of = getattr(expert, "values", None)
    values = values_of(counts, sums, t) if callable(values_of) else ucb_values(counts, sums, t)
    lines = []
    for label, n, mean, value in zip(labels, counts, means, values, strict=True):
        if n == 0:
            lines.append(f"{label}: untried")
        else:
            lines.append(f"{label}: n={int(n)} mean={format_reward(mean)} ucb={value:.2f}")
    return "\n".join(lines), values


def expert_target(
    mode: str, labels: Sequence[str], history: Sequence[Step], action: int, expert: Any = None
) -> str:
    """The target text for the expert's ``action`` after ``history``."""
    answer = format_action(labels[action])
    if mode == "behaviour":
        return answer
    if mode == "thought":
        thought, _ = ucb_thought(labels, history, expert)
        return f"{thought}\n{answer}"
    raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")


@dataclass
class _RecordingExpert:
    """The expert, plus the LLM agent's prompt and the SFT target in each Decision's extras."""

    expert: Any
    mode: str
    context: ContextSettings
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"sft-data({getattr(self.expert, 'name', 'expert')})"

    def act(self, turns: Sequence[Turn]) -> list[Decision]:
        decisions = self.expert.act(turns)
        for turn, decision in zip(turns, decisions, strict=True):
            if decision.action is None:
                raise ConfigError(f"expert {self.name!r} gave no action; it must always act")
            labels = turn.env.action_labels()
            decision.extras["sft_chat"] = build_context(turn.env, turn.history, self.context)
            decision.extras["sft_target"] = expert_target(
                self.mode, labels, turn.history, int(decision.action), self.expert
            )
        return decisions

    def supports(self, family: str) -> bool:
        return self.expert.supports(family)


def expert_dataset(
    env_id: str,
    seeds: Iterable[int],
    mode: str = "behaviour",
    expert: Any | None = None,
    env_kwargs: dict[str, Any] | None = None,
    context: ContextSettings | None = None,
) -> list[SFTExample]:
    """Play ``expert`` (default :class:`UCBAgent`) on ``env_id`` and record one example per step.

    ``context`` defaults to the LLM agent's default context, with ``cot`` on for
    thought cloning and off for behaviour cloning. Examples are ordered by seed,
    then step.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    expert = UCBAgent() if expert is None else expert
    context = ContextSettings(cot=mode == "thought") if context is None else context
    agent = _RecordingExpert(expert, mode, context)
    examples: list[SFTExample] = []

    def record(episode: Episode, step: Step, decision: Decision) -> None:
        examples.append(
            SFTExample(
                chat=decision.extras["sft_chat"],
                target=decision.extras["sft_target"],
                seed=episode.seed,
                t=step.t,
                action=int(decision.action),  # type: ignore[arg-type]
                label=episode.action_labels[int(decision.action)],  # type: ignore[arg-type]
            )
        )

    play(agent, env_id, list(seeds), env_kwargs=env_kwargs, on_decision=record)
    examples.sort(key=lambda ex: (ex.seed, ex.t))
    return examples


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning settings."""

    learning_rate: float = setting(1e-4, "peak AdamW learning rate, > 0")
    lr_min: float = setting(1e-6, "end of the cosine decay, in [0, learning_rate]")
    warmup_steps: int = setting(0, "linear warm-up optimizer steps")
    weight_decay: float = setting(0.0, "AdamW weight decay, >= 0")
    epochs: int = setting(1, "passes over the examples")
    batch_size: int = setting(16, "examples per optimizer step")
    micro_batch_size: int = setting(16, "examples per forward pass (gradient accumulation)")
    max_grad_norm: float = setting(1.0, "gradient clipping, > 0")
    max_examples: int | None = setting(
        None, "use at most this many examples (a seeded random subset)"
    )
    packed: bool = setting(
        True,
        (
            "a micro-batch's examples forwarded as tries, shared prompt prefixes once "
            "(agentbench.models.packing; examples of one episode sit together); false: one row "
            "per example (the reference path)"
        ),
    )
    max_packed_tokens: int = setting(DEFAULT_MAX_PACKED_TOKENS, "packed: the longest trie")
    compute_dtype: str = setting(
        "float32",
        (
            '"float32", "bfloat16" (autocast over float32 weights and optimizer state) or '
            '"auto" (bf16 where fast); see agentbench.rlft.precision'
        ),
    )
    gradient_checkpointing: bool = setting(
        False,
        (
            "recompute activations in the backward pass (less memory, about a third more "
            "compute; see PPOConfig)"
        ),
    )
    return_freed_memory: bool = return_freed_memory_setting()
    seed: int = setting(0, "shuffling, subset and dropout seed")
    progress: bool = setting(False, "print one line per epoch")

    def __post_init__(self) -> None:
        check_float_settings(self, SFT_FLOAT_RANGES)
        if self.lr_min > self.learning_rate:
            raise ConfigError(
                f"lr_min {self.lr_min} must not exceed learning_rate {self.learning_rate}"
            )
        for name in ("epochs", "batch_size", "micro_batch_size", "max_packed_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError(
                f"compute_dtype {self.compute_dtype!r} is not one of {', '.join(COMPUTE_DTYPES)}"
            )
        if self.max_examples is not None and self.max_examples < 1:
            raise ConfigError(f"max_examples must be >= 1 or None, got {self.max_examples}")


SFT_FLOAT_RANGES = {
    "learning_rate": POSITIVE,
    "lr_min": NON_NEGATIVE,
    "weight_decay": NON_NEGATIVE,
    "max_grad_norm": POSITIVE,
}


@dataclass
class _Encoded:
    prompts: list[list[int]] = field(default_factory=list)
    targets: list[list[int]] = field(default_factory=list)


def encode_examples(generator: Any, examples: Sequence[SFTExample]) -> _Encoded:
    """Prompt ids (the rendered chat, as the agent's generation sees it) and target ids,
    the target closed by the end-of-turn token so the model learns to stop."""
    tokenizer = generator.tokenizer
    end = tokenizer.eos_token_id
    encoded = _Encoded()
    for example in examples:
        encoded.prompts.append(generator.encode_chat(example.chat))
        ids = list(tokenizer(example.target, add_special_tokens=False)["input_ids"])
        encoded.targets.append(ids + ([int(end)] if end is not None else []))
    return encoded


def train_sft(
    generator: Any,
    examples: Sequence[SFTExample],
    config: SFTConfig = SFTConfig(),
    output_dir: str | Path | None = None,
    resume: bool = False,
) -> list[dict[str, Any]]:
    """Fine-tune ``generator.model`` in place on ``examples``; one record per epoch.
    With ``output_dir``, a checkpoint after every epoch, and ``resume`` continues from
    the newest intact one (see :func:`train_on_targets`).

    Loss: mean negative log-likelihood per target token (prompt tokens masked).
    Records hold ``epoch``, ``loss`` (the epoch's mean training token loss),
    ``tokens``, ``steps`` (optimizer steps so far, skipped ones included),
    ``skipped_steps`` (the epoch's non-finite steps, not taken), ``lr`` and ``seconds``.
    """
    if not examples:
        raise ConfigError("no SFT examples to train on")
    data = encode_examples(generator, examples)
    return train_on_targets(
        generator, data.prompts, data.targets, config, output_dir=output_dir, resume=resume
    )


def train_on_targets(
    generator: Any,
    prompts: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    config: SFTConfig = SFTConfig(),
    name: str = "sft",
    output_dir: str | Path | None = None,
    resume: bool = False,
    keep_checkpoints: int = 2,
    parallel: DataParallel = SINGLE_PROCESS,
) -> list[dict[str, Any]]:
    """The cross-entropy loop shared by SFT, expert iteration and return-conditioned
    training: fine-tune ``generator.model`` in place on (prompt ids, target ids) pairs.

    Only the target tokens enter the loss (:func:`target_logprobs` scores the completion
    alone): the mean negative log-likelihood per target token of each batch, with AdamW,
    the PPO trainer's warm-up + cosine schedule and gradient clipping. One record per
    epoch (see :func:`train_sft`); ``name`` labels the progress lines.

    An optimizer step whose loss or gradient norm is not finite is skipped (weights,
    optimizer and schedule untouched) with a warning and counted in the epoch's
    ``skipped_steps``; an epoch whose every step is non-finite stops with
    :class:`~agentbench.rlft.nonfinite.NonFiniteTrainingError`.

    With ``output_dir``, a checkpoint after every epoch in ``<output_dir>/checkpoints/
    epoch_000001/`` (:mod:`agentbench.rlft.checkpoint`: the weights, or the LoRA
    adapters of a peft model; AdamW and schedule state; the numpy RNG; the step
    counter and the records so far); the ``keep_checkpoints`` newest are kept. With
    ``resume`` the loop continues from the newest intact checkpoint there (none: from
    the start) and ends exactly as an uninterrupted run; ``generator`` must be the
    starting model, ``config`` and the pairs those of the run (both are checked).
    Without ``resume`` an ``output_dir`` that holds checkpoints is refused.

    A model sharded with FSDP (:mod:`agentbench.rlft.fsdp`; ``parallel`` its processes,
    all of which call this with the same pairs) trains each batch split into
    ``parallel.world_size`` contiguous shares, one per process, divided by the whole
    batch's token count: the same update as one process on the whole batch.
    """
    if len(prompts) != len(targets):
        raise ConfigError(f"got {len(targets)} targets for {len(prompts)} prompts")
    if not prompts:
        raise ConfigError(f"no {name} examples to train on")
    rng = np.random.default_rng(config.seed)
    chosen = list(range(len(prompts)))
    if config.max_examples is not None and len(chosen) > config.max_examples:
        chosen = [int(i) for i in np.sort(rng.choice(len(chosen), config.max_examples, False))]
    model = generator.model
    sharded = fsdp.is_sharded(model)
    if sharded and output_dir is not None:
        raise ConfigError(
            f"{name} with an output_dir checkpoints a whole model; a sharded (FSDP) one "
            "is checkpointed by its trainer"
        )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(chosen) / config.batch_size)
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(
            step, config.warmup_steps, total, config.learning_rate, config.lr_min
        ),
    )
    dropout_seeds = rng.integers(0, 2**62, size=total * max(1, config.batch_size))
    compute_dtype = resolve_compute_dtype(config.compute_dtype, next(model.parameters()).device)
    set_gradient_checkpointing(model, config.gradient_checkpointing)
    if config.return_freed_memory:
        return_freed_memory()
    records: list[dict[str, Any]] = []
    step, done = 0, 0  # optimizer steps and epochs completed
    run = None if output_dir is None else _SFTRun(Path(output_dir), config, prompts, targets)
    if run is not None:
        directory = run.resumable(resume)
        if directory is not None:
            done, step, records = run.load(directory, model, optimizer, scheduler, rng)
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    model.train()
    try:
        for epoch in range(done, config.epochs):
            order = rng.permutation(len(chosen))
            loss_sum, token_sum = 0.0, 0
            epoch_steps, skipped = 0, 0
            for first in range(0, len(order), config.batch_size):
                batch = [chosen[int(i)] for i in order[first : first + config.batch_size]]
                if config.packed:  # neighbours (an episode's steps) share a trie
                    batch.sort()
                n_tokens = sum(len(targets[i]) for i in batch)
                losses_finite = True
                share, most = batch, 0  # this process's examples; FSDP: the most passes
                if sharded:
                    parts = np.array_split(np.asarray(batch), parallel.world_size)
                    shares = [[int(i) for i in part] for part in parts]
                    share = shares[parallel.rank]
                    most = max(math.ceil(len(part) / config.micro_batch_size) for part in shares)
                for m, micro_start in enumerate(range(0, len(share), config.micro_batch_size)):
                    micro = share[micro_start : micro_start + config.micro_batch_size]
                    with (
                        forked_torch_rng(int(dropout_seeds[step * config.batch_size + m])),
                        compute_precision(model, compute_dtype),
                    ):
                        logprobs = target_logprobs(
                            generator,
                            [prompts[i] for i in micro],
                            [targets[i] for i in micro],
                            config,
                        )
                    nll = -torch.cat(logprobs).sum()
                    (nll / n_tokens).backward()
                    loss_sum += float(nll.detach())
                    losses_finite = losses_finite and all_finite(nll)
                if sharded:  # FSDP reduce-scatters after each backward: the same counts
                    for _ in range(most - math.ceil(len(share) / config.micro_batch_size)):
                        fsdp.idle_backward(model)
                    losses_finite = bool(parallel.sum([not losses_finite])[0] == 0)
                token_sum += n_tokens
                norm = fsdp.clip_gradients(params, config.max_grad_norm)
                epoch_steps += 1
                if finite_step(losses_finite, norm):
                    lr = optimizer.param_groups[0]["lr"]
                    optimizer.step()
                    scheduler.step()
                else:  # never let inf / NaN reach the weights (agentbench.rlft.nonfinite)
                    skipped += 1
                    warn_skipped(f"{name} epoch {epoch + 1}, step {epoch_steps}", norm)
                optimizer.zero_grad(set_to_none=True)
                step += 1
            advice = "check the data and learning_rate"
            refuse_all_skipped(f"{name} epoch {epoch + 1}", skipped, epoch_steps, advice)
            if sharded:  # each process summed its share's token losses
                loss_sum = float(parallel.sum([loss_sum])[0])
            record = {
                "epoch": epoch + 1,
                "loss": loss_sum / max(1, token_sum),
                "tokens": token_sum,
                "steps": step,
                "skipped_steps": skipped,
                "lr": lr,
                "seconds": time.perf_counter() - start,
            }
            records.append(record)
            if run is not None:
                run.save(
                    epoch + 1, step, records, model, optimizer, scheduler, rng, keep_checkpoints
                )
            if config.progress:
                print(f"{name} epoch {record['epoch']}: loss {record['loss']:.4f}", flush=True)
    finally:
        model.eval()
    return records


def target_logprobs(
    generator: Any,
    prompts: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    config: SFTConfig,
) -> list[torch.Tensor]:
    """Log-probs of each target after its prompt in one forward pass: packed
    (``generator.packed_logprobs``) or one row per example (``sequence_logprobs``)."""
    if config.packed:
        return generator.packed_logprobs(
            prompts, targets, max_packed_tokens=config.max_packed_tokens
        ).logprobs
    return generator.sequence_logprobs(prompts, targets)


@dataclass
class _SFTRun:
    """The checkpoints of one :func:`train_on_targets` run in ``output_dir``."""

    output_dir: Path
    config: SFTConfig
    prompts: Sequence[Sequence[int]]
    targets: Sequence[Sequence[int]]

    @property
    def data_fingerprint(self) -> str:
        """SHA-256 of the (prompt ids, target ids) pairs: a resumed run trains on the same."""
        pairs = [[list(p), list(t)] for p, t in zip(self.prompts, self.targets, strict=True)]
        return hashlib.sha256(json.dumps(pairs).encode("utf-8")).hexdigest()

    def resumable(self, resume: bool) -> Path | None:
        """The checkpoint to continue from (None: start afresh)."""
        if resume:
            return ckpt.resume_checkpoint(self.output_dir)
        if ckpt.latest_checkpoint(self.output_dir) is not None:
            raise ConfigError(
                f"{self.output_dir} already holds SFT checkpoints; continue the run with "
                "resume=True or choose another output_dir"
            )
        return None

    def save(
        self,
        epoch: int,
        step: int,
        records: list[dict[str, Any]],
        model: Any,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        rng: np.random.Generator,
        keep: int,
    ) -> Path:
        def write_parts(directory: Path) -> None:
            ckpt.save_policy(model, directory, ckpt.is_lora(model))
            ckpt.save_optimizer(optimizer, scheduler, directory)
            ckpt.save_rng([ckpt.rng_state(rng, {})], directory)
            config_text = json.dumps(asdict(self.config), indent=1, sort_keys=True)
            write_atomic(directory / ckpt.CONFIG_FILE, config_text)
            progress = {"epoch": epoch, "step": step, "data": self.data_fingerprint}
            write_json(directory / ckpt.TRAINER_FILE, {**progress, "records": records}, None)

        return ckpt.write_checkpoint(self.output_dir, epoch, write_parts, keep, "epoch")

    def load(
        self,
        directory: Path,
        model: Any,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        rng: np.random.Generator,
    ) -> tuple[int, int, list[dict[str, Any]]]:
        """Restore a checkpoint; returns (epochs done, optimizer steps done, records)."""
        saved = ckpt.read_checkpoint_config(directory)
        changed = sorted(
            key for key, value in asdict(self.config).items()
            if key != "progress" and saved.get(key) != value
        )  # fmt: skip
        if changed:
            raise ConfigError(
                f"the checkpoint {directory} was written with other SFT settings {changed}; "
                "resume with the run's own config"
            )
        state = ckpt.read_json(directory / ckpt.TRAINER_FILE)
        if state.get("data") != self.data_fingerprint:
            raise ConfigError(
                f"the checkpoint {directory} was written for other examples; "
                "resume with the run's own examples"
            )
        ckpt.load_policy(model, directory, ckpt.is_lora(model))
        ckpt.load_optimizer(optimizer, scheduler, directory)
        ckpt.load_rng(rng, {}, directory)
        epoch = ckpt.read_progress(directory, "epoch")
        return epoch, int(state["step"]), list(state["records"])
