"""PPO fine-tuning of an LLM agent (SPEC.md section 3), one file in the shape of CleanRL's ppo.py.

Every update of :meth:`PPOTrainer.train` reads top to bottom, each phase returning
its values to the next (the rollout, its rewards, its :class:`Scores`, its
:class:`Advantages`, the update's statistics) rather than filling a shared batch:

1. **collect**: the LLM agent plays ``episodes_per_update`` training episodes at
   temperature 1.0, keeping each step's prompt and generated token ids (the
   collection every trainer shares, :mod:`agentbench.rlft.collection`).
2. **rewards**: per step, the normalised env reward + the invalid-answer penalty
   (+ the optional exploration bonus); dense (every step) or sparse (the episode's
   total at its last step): :mod:`agentbench.rlft.rewards`.
3. **old log-probs**: recomputed under no_grad, in the same forward passes as the
   first training pass, so the first ratio is exactly 1 (the generation-time
   log-probs can differ from a recomputation, by up to ~0.8 in bf16). The reference
   log-probs (and the values, for GAE) come from the same passes. With ``packed``
   (the default) minibatches hold whole episodes and each episode's steps are one
   trie (:mod:`agentbench.models.packing`): the history they share is forwarded once
   per pass instead of once per step; ``packed = false`` forwards one row per step
   (``sequence_logprobs``), the reference path.
4. **advantages**: Monte-Carlo returns-to-go minus the batch mean at the same step
   ("mc", bandits) or GAE over a value head ("gae", tic-tac-toe); one scalar per
   step, given to every generated token of that step.
5. **update**: ``update_epochs`` passes of ``num_minibatches`` minibatches each;
   the loss is the token-level clipped surrogate over the generated tokens only
   (prompts are never scored) plus ``kl_beta`` times the per-token k3 KL to the
   reference (:func:`ppo_token_losses`), averaged over the minibatch's tokens; plus
   ``value_coef`` times the value MSE for GAE. Gradients accumulate over
   micro-batches, are clipped to ``max_grad_norm``, then one optimizer and one
   warm-up + cosine scheduler step. A step whose loss or gradient norm is not
   finite is skipped with a warning and counted (``skipped_steps``); an update whose
   every step is non-finite stops the run (:mod:`agentbench.rlft.nonfinite`).
6. **log**: one JSON line per update in ``metrics.jsonl``; greedy evaluation on
   held-out seeds every ``eval_every`` updates; checkpoints every
   ``checkpoint_every`` (see :mod:`agentbench.rlft.checkpoint`).

The reference policy is the starting model: with LoRA the SAME model with its
adapters disabled (peft's ``disable_adapter``; no second copy in memory), with full
fine-tuning a frozen deep copy. Randomness: rollout samples are seeded by episode
seed (the agent's per-episode stream), minibatch order by a numpy Generator, and
dropout (if any) by seeds from a torch Generator applied inside
``torch.random.fork_rng``: the global RNG is never touched, and a resumed run
continues exactly.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agentbench.agent.llm import LLMAgent
from agentbench.errors import ConfigError
from agentbench.io import write_atomic, write_json
from agentbench.memory import return_freed_memory
from agentbench.metrics import summarize
from agentbench.models.packing import PackedLogprobs, plan_micro_batches
from agentbench.models.transformers_backend import TransformersGenerator
from agentbench.records import Episode, EpisodeWriter
from agentbench.rlft import checkpoint as ckpt
from agentbench.rlft import fsdp
from agentbench.rlft.advantages import gae, mc_baseline_advantages, returns_to_go
from agentbench.rlft.collection import (
    MetricsLog,
    evaluate_policy,
    gather_episodes,
    outcome_metrics,
    played_with_tokens,
)
from agentbench.rlft.config import PPOConfig, ppo_config_from_dict
from agentbench.rlft.distributed import DataParallel
from agentbench.rlft.nonfinite import all_finite, finite_step, refuse_all_skipped, warn_skipped
from agentbench.rlft.policy import forked_torch_rng, lr_factor
from agentbench.rlft.precision import (
    compute_precision,
    resolve_compute_dtype,
    set_gradient_checkpointing,
)
from agentbench.rlft.rewards import reasoning_bonuses, training_rewards
from agentbench.rlft.value_head import (
    ValueHead,
    capture_last_hidden,
    hidden_size_of,
    last_prompt_hidden,
)

METRICS_FILE = "metrics.jsonl"
EVAL_DIR = "eval"
TENSORBOARD_DIR = "tensorboard"


# ---------------------------------------------------------------- the loss


def kl_k3(new_logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi_theta || pi_ref) estimate k3 = exp(ref - new) - (ref - new) - 1.

    Unbiased for tokens sampled from pi_theta, never negative, and exactly 0 where
    the two policies agree (Schulman, "Approximating KL divergence", 2020).
    """
    log_ratio = ref_logprobs - new_logprobs
    return torch.exp(log_ratio) - log_ratio - 1


def clipped_surrogate(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float,
) -> torch.Tensor:
    """Per-token PPO policy loss max(-A r, -A clip(r, 1-eps, 1+eps)), r = pi/pi_old.

    The pessimistic (larger) loss is taken: once the ratio has moved past the clip
    range in the direction the advantage favours, the clipped branch is chosen and
    the token gives no gradient.
    """
    ratio = torch.exp(new_logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_eps, 1 + clip_eps)
    return torch.maximum(unclipped, clipped)


def ppo_token_losses(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float,
    kl_beta: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token loss = clipped surrogate + kl_beta * k3 KL to the reference.

    All arguments are flat over the generated tokens of a micro-batch (each token
    carries its step's advantage). Returns the per-token losses (the caller sums
    and divides by the minibatch's token count) and detached per-token statistics.
    """
    policy = clipped_surrogate(new_logprobs, old_logprobs, advantages, clip_eps)
    kl = kl_k3(new_logprobs, ref_logprobs)
    ratio = torch.exp(new_logprobs - old_logprobs).detach()
    stats = {
        "policy_loss": policy.detach(),
        "kl": kl.detach(),
        "clipped": ((ratio - 1).abs() > clip_eps).float(),
        "ratio_error": (ratio - 1).abs(),
    }
    return policy + kl_beta * kl, stats


# ---------------------------------------------------------------- rollout data


@dataclass
class StepSample:
    """One decision of a rollout: what the policy saw and wrote, and where it belongs."""

    episode: int  # index into RolloutBatch.episodes
    t: int  # 1-based step index in the episode
    prompt_ids: list[int]
    completion_ids: list[int]
    trained: list[bool] | None = None  # per completion token: the policy's (None: all are)

    @property
    def trained_tokens(self) -> int:
        """How many completion tokens carry the policy-gradient and KL terms."""
        return len(self.completion_ids) if self.trained is None else sum(self.trained)

    def token_weights(self) -> list[float]:
        """1.0 for each of the policy's tokens, 0.0 for template tokens (a forced
        answer's ``ACTION=`` prefix)."""
        if self.trained is None:
            return [1.0] * len(self.completion_ids)
        return [1.0 if trained else 0.0 for trained in self.trained]


@dataclass
class RolloutBatch:
    """One update's rollout: the episodes and the policy's own decisions in them."""

    episodes: list[Episode]  # sorted by seed
    samples: list[StepSample]  # sorted by (episode, t)


@dataclass(frozen=True)
class Scores:
    """What the policy before this update, and the reference, say of each sample."""

    old_logprobs: list[torch.Tensor]  # of the generated tokens, under the "old" policy
    ref_logprobs: list[torch.Tensor]  # under pi_ref
    values: np.ndarray  # V(s) at collection (gae); zeros without a value head


@dataclass(frozen=True)
class Advantages:
    """One advantage per sample, and the value head's targets."""

    advantages: np.ndarray
    returns: np.ndarray  # value targets (gae); zeros for mc


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# ---------------------------------------------------------------- the trainer


def _require_tensorboard() -> None:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "tensorboard = true needs the tensorboard package: "
            'pip install "agentbench[tensorboard]" (or pip install tensorboard)'
        )


class PPOTrainer:
    """PPO on an LLM agent. ``generator`` is the starting model (a TransformersGenerator);
    without one the trainer loads the config's ``[model]`` (``ModelSettings.load``).

    The trainer takes the generator's model over: LoRA adapters are injected into it
    (in place, as peft does) or, for full fine-tuning, it is trained directly while a
    frozen copy serves as the reference.
    """

    def __init__(self, config: PPOConfig, generator: TransformersGenerator | None = None) -> None:
        self.config = config
        self.parallel = DataParallel.from_environment()  # one process unless launched in many
        # parallel = "fsdp" under a launcher: weights, gradients and AdamW state sharded
        self.sharded = fsdp.use_fsdp(config.parallel, self.parallel)
        if generator is None:  # sharded: loaded whole on the CPU, shards go to the device
            generator = config.model.load(device="cpu" if self.sharded else self.parallel.device)
        model = config.model.trainable(generator.model.eval(), config.seed)
        self.reference: TransformersGenerator | None = None
        if not config.model.use_lora:
            frozen = copy.deepcopy(model).eval().requires_grad_(False)
            for parameter in frozen.parameters():
                parameter.grad = None  # deepcopy copies gradients too
            self.reference = TransformersGenerator(
                frozen,
                generator.tokenizer,
                name=f"{generator.name}:reference",
                settings=generator.settings,
            )
        set_gradient_checkpointing(model, config.gradient_checkpointing)
        if self.sharded:
            model = fsdp.shard_model(model, self.parallel)
            if self.reference is not None:
                fsdp.shard_model(self.reference.model, self.parallel)
        if config.return_freed_memory:
            return_freed_memory()
        self.policy = TransformersGenerator(
            model, generator.tokenizer, name=generator.name, settings=generator.settings
        )
        self.value_head: ValueHead | None = None
        if config.advantage == "gae":
            self.value_head = ValueHead(hidden_size_of(model)).to(self.policy.device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        # gradients summed by hand (all of them, or under FSDP the value head's only)
        self.summed_params = [] if self.sharded else list(self.params)
        if self.value_head is not None:
            self.params += list(self.value_head.parameters())
            self.summed_params += list(self.value_head.parameters())
        self.optimizer = self._make_optimizer()
        self.compute_dtype = resolve_compute_dtype(config.compute_dtype, self.policy.device)
        total_steps = config.total_updates * config.update_epochs * config.num_minibatches
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            partial(
                lr_factor,
                warmup_steps=config.warmup_steps,
                total_steps=total_steps,
                lr=config.learning_rate,
                lr_min=config.lr_min,
            ),
        )
        rank = self.parallel.rank
        self.rng = np.random.default_rng([config.seed, 1, rank])  # minibatch order
        dropout_seed = np.random.SeedSequence([config.seed, 2, rank]).generate_state(1)[0]
        self.dropout_rng = torch.Generator().manual_seed(int(dropout_seed))  # dropout masks
        # (update, summary) of the latest held-out evaluation (None before the first)
        self.last_evaluation: tuple[int, dict[str, Any]] | None = None
        self.update = 0  # updates completed
        self.output_dir = Path(config.output_dir)
        self._tensorboard: Any = None  # SummaryWriter, opened by train() on the main process
        if config.tensorboard:
            _require_tensorboard()

    # -- construction helpers -----------------------------------------------------

    def _make_optimizer(self) -> torch.optim.Optimizer:
        config = self.config
        if config.optimizer == "adamw":
            return torch.optim.AdamW(
                self.params, lr=config.learning_rate, weight_decay=config.weight_decay
            )
        from transformers.optimization import Adafactor

        # An external lr schedule: Adafactor's own relative step sizes are switched off.
        return Adafactor(
            self.params,
            lr=config.learning_rate,
            scale_parameter=False,
            relative_step=False,
            warmup_init=False,
            weight_decay=config.weight_decay,
        )

    @property
    def model(self) -> Any:
        return self.policy.model

    # -- the loop -----------------------------------------------------------------

    def train(self) -> list[dict[str, Any]]:
        """Run updates until ``total_updates``; returns the metrics lines written."""
        from tqdm import tqdm

        config = self.config
        main = self.parallel.is_main
        if self.update == 0 and ckpt.latest_checkpoint(self.output_dir) is not None:
            raise ConfigError(
                f"{self.output_dir} already holds checkpoints of a run; continue it with "
                "PPOTrainer.resume or choose another output_dir"
            )
        self.parallel.barrier()  # every process has looked before the main one writes
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.output_dir / ckpt.CONFIG_FILE, config.to_json())
        if config.tensorboard and main:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(self.output_dir / TENSORBOARD_DIR))
        # metrics.jsonl (and TensorBoard) from the main process only
        log = MetricsLog(self.output_dir / METRICS_FILE if main else None, "update",
                         self._tensorboard)  # fmt: skip
        logged: list[dict[str, Any]] = []
        if self.update == 0:
            if main:
                (self.output_dir / METRICS_FILE).unlink(missing_ok=True)
            if config.eval_every > 0:
                logged.append(log.write({"update": 0, **self._evaluate_and_save()}))
        bar = tqdm(
            total=config.total_updates,
            initial=self.update,
            desc="ppo",
            unit="update",
            disable=not (config.progress and main),
        )
        while self.update < config.total_updates:
            started = time.perf_counter()
            batch = self.collect(self.update)  # 1. collect
            collected = time.perf_counter()
            rewards = self.step_rewards(batch)  # 2. rewards
            orders = [self.epoch_order(batch) for _ in range(config.update_epochs)]
            self.update_value_statistics(rewards)
            scores = self.score_batch(batch, orders[0])  # 3. old / reference log-probs, values
            scored = time.perf_counter()
            advantages = self.compute_advantages(batch, rewards, scores.values)  # 4. advantages
            stats = self.update_policy(batch, scores, advantages, orders)  # 5. update
            self.update += 1
            finished = time.perf_counter()
            record = {
                "update": self.update,
                **self.rollout_metrics(batch, rewards, scores),
                **stats,
                "seconds": finished - started,
                # where the time went: playing, old/reference log-probs, training passes
                "seconds_collect": collected - started,
                "seconds_score": scored - collected,
                "seconds_train": finished - scored,
            }
            last = self.update == config.total_updates
            if config.eval_every > 0 and (self.update % config.eval_every == 0 or last):
                record.update(self._evaluate_and_save())
            logged.append(log.write(record))  # 6. log
            if last or (config.checkpoint_every and self.update % config.checkpoint_every == 0):
                self.save()
            bar.update(1)
            bar.set_postfix(ret=f"{record['return']:.2f}", invalid=f"{record['invalid_rate']:.2f}")
        bar.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        return logged

    # 1. collect ---------------------------------------------------------------------

    def train_seeds(self, update: int) -> list[int]:
        """The training episodes of update ``update`` (0-based): fixed by the counter alone."""
        first = self.config.train_seed + update * self.config.episodes_per_update
        return list(range(first, first + self.config.episodes_per_update))

    def collect(self, update: int) -> RolloutBatch:
        """Play this update's episodes at temperature 1.0, keeping every step's token ids."""
        config = self.config
        agent = LLMAgent(
            self.policy, config.agent_settings(temperature=1.0), name=f"ppo:{self.policy.name}"
        )
        self.model.eval()
        with fsdp.generating(self.policy):  # processes generate different numbers of tokens
            local = played_with_tokens(
                agent,
                config.env.id,
                self.parallel.shard(self.train_seeds(update)),
                num_envs=config.num_envs,
                env_kwargs=config.env.kwargs,
                templates=True,  # try-all / epsilon steps: rewards kept, no policy tokens
            )
        # every process sees the whole rollout, and trains on the steps it played
        episodes = gather_episodes(self.parallel, [played.episode for played in local])
        mine = {played.seed: played for played in local}
        samples = [
            StepSample(index, step.t, step.prompt_ids, step.completion_ids, step.trained)
            for index, episode in enumerate(episodes)
            if episode.seed in mine
            for step in mine[episode.seed].steps
        ]
        # each process's minibatch units: its episodes (packed) or its steps
        unit = "episodes" if config.packed else "steps"
        units = len({s.episode for s in samples}) if config.packed else len(samples)
        shares = self.parallel.gather_json(units)
        if min(shares) < config.num_minibatches:
            per_process = " per process" if self.parallel.active else ""
            raise ConfigError(
                f"a rollout of {int(min(shares))} {unit}{per_process} cannot fill "
                f"num_minibatches={config.num_minibatches}; play more episodes per update or "
                "use fewer minibatches"
            )
        return RolloutBatch(episodes, samples)

    # 2. rewards --------------------------------------------------------------------

    def step_rewards(self, batch: RolloutBatch) -> list[np.ndarray]:
        """Training reward of every step of each episode (:func:`training_rewards`)."""
        return training_rewards(batch.episodes, self.config.reward_shaping())

    # 3. old log-probs, reference log-probs, values -------------------------------------

    def update_value_statistics(self, rewards: Sequence[np.ndarray]) -> None:
        """Merge the rollout's Monte-Carlo returns-to-go (every episode, every process's:
        each process holds all episodes) into the value head's running statistics,
        before the values of this rollout are computed: even a fresh head then predicts
        the mean return, a baseline from the first update on."""
        if self.value_head is None:
            return
        self.value_head.update_statistics(
            np.concatenate([returns_to_go(episode, self.config.gamma) for episode in rewards])
        )

    def score_batch(self, batch: RolloutBatch, first_order: np.ndarray) -> Scores:
        """Log-probs of the sampled tokens under the current policy (the "old" policy of
        this update) and the reference, and V(s) for GAE, without gradients.

        Computed in the micro-batches of the first training pass: the same rows packed
        or padded the same way give bit-identical log-probs, so the first ratio is
        exactly 1. Under FSDP on whole (gathered) weights: processes run different
        numbers of micro-batches.
        """
        n = len(batch.samples)
        old: list[torch.Tensor | None] = [None] * n
        ref: list[torch.Tensor | None] = [None] * n
        values = np.zeros(n)
        self.model.eval()
        passes = list(self._micro_batches(batch, first_order))
        with fsdp.unsharded(self.model):
            for micro, groups in passes:
                with torch.no_grad(), self._hidden(self.value_head is not None) as hidden:
                    logprobs = self.logprobs(self.policy, batch, micro, groups)
                    if self.value_head is not None:
                        features = self._value_features(batch, micro, logprobs, hidden[-1])
                        values[micro] = self.value_head.values(features).cpu().numpy()
                for j, i in enumerate(micro):
                    old[i] = logprobs.logprobs[j].detach()
        reference_model = self.model if self.reference is None else self.reference.model
        with fsdp.unsharded(reference_model):
            for micro, groups in passes:
                with torch.no_grad():
                    reference = self.reference_logprobs(batch, micro, groups)
                for j, i in enumerate(micro):
                    ref[i] = reference[j].detach()
        return Scores([t for t in old if t is not None], [t for t in ref if t is not None], values)

    def reference_logprobs(
        self, batch: RolloutBatch, micro: Sequence[int], groups: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """Log-probs under pi_ref: the policy with adapters disabled (LoRA) or the frozen copy."""
        if self.reference is not None:
            return self.logprobs(self.reference, batch, micro, groups).logprobs
        training = self.model.training
        self.model.eval()
        try:
            with self.model.disable_adapter():
                return self.logprobs(self.policy, batch, micro, groups).logprobs
        finally:
            self.model.train(training)

    def logprobs(
        self,
        generator: TransformersGenerator,
        batch: RolloutBatch,
        micro: Sequence[int],
        groups: Sequence[int] | None = None,
    ) -> PackedLogprobs:
        """Log-probs of the generated tokens of the steps ``micro``, in one forward pass:
        packed (``groups``: the trie of each row, from :meth:`_micro_batches`) or one
        row per step (``packed = false``), in the configured ``compute_dtype``."""
        prompts, completions = self._rows(batch, micro)
        with compute_precision(generator.model, self.compute_dtype):
            if not self.config.packed:
                rows = generator.sequence_logprobs(prompts, completions)
                return PackedLogprobs(rows, torch.zeros(0, dtype=torch.long))
            return generator.packed_logprobs(
                prompts,
                completions,
                groups=groups,
                max_packed_tokens=self.config.max_packed_tokens,
            )

    def _value_features(
        self,
        batch: RolloutBatch,
        micro: Sequence[int],
        logprobs: PackedLogprobs,
        hidden: torch.Tensor,
    ) -> torch.Tensor:
        """The last prompt token's hidden state of each step (the value head's input)."""
        if self.config.packed:
            return hidden[logprobs.last_prompt_index]
        return last_prompt_hidden(hidden, [len(batch.samples[i].completion_ids) for i in micro])

    # 4. advantages ------------------------------------------------------------------

    def compute_advantages(
        self, batch: RolloutBatch, rewards: Sequence[np.ndarray], values: np.ndarray
    ) -> Advantages:
        """One advantage per sample: "mc" (returns-to-go minus the batch mean at the same
        step) or "gae" (from the value head's ``values`` of the samples)."""
        config = self.config
        n = len(batch.samples)
        if config.advantage == "mc":
            per_episode = mc_baseline_advantages(list(rewards), config.gamma)
            advantages = np.array([per_episode[s.episode, s.t - 1] for s in batch.samples])
            return Advantages(advantages, np.zeros(n))
        index = {(s.episode, s.t): i for i, s in enumerate(batch.samples)}
        advantages, returns = np.zeros(n), np.zeros(n)
        for e, episode in enumerate(rewards):
            if (e, 1) not in index:
                continue  # played by another process, which computes its advantages
            rows = [index[(e, t)] for t in range(1, len(episode) + 1)]
            adv, ret = gae(episode, values[rows], config.gamma, config.gae_lambda)
            advantages[rows], returns[rows] = adv, ret
        return Advantages(advantages, returns)

    # 5. update ----------------------------------------------------------------------

    def update_policy(
        self,
        batch: RolloutBatch,
        scores: Scores,
        advantages: Advantages,
        orders: Sequence[np.ndarray],
    ) -> dict[str, float]:
        """PPO epochs over minibatches; returns the update's training statistics."""
        config = self.config
        device = self.policy.device
        sums: dict[str, float] = {"policy_loss": 0.0, "kl": 0.0, "clip_frac": 0.0}
        tokens_seen, value_loss_sum, grad_norms = 0, 0.0, []
        ratio_start_error, lr = 0.0, float("nan")
        steps, skipped = 0, 0  # optimizer steps, and those skipped as non-finite
        self.optimizer.zero_grad(set_to_none=True)  # gradients left by whoever used the model
        self.model.train()
        if self.value_head is not None:
            self.value_head.train()
        for epoch, order in enumerate(orders):
            for number, minibatch in enumerate(self._minibatches(batch, order)):
                # Token and row counts over all processes: the loss is the global mean.
                n_tokens, n_rows = self.parallel.sum(
                    [sum(batch.samples[i].trained_tokens for i in minibatch), len(minibatch)]
                )
                step_advantages = self._minibatch_advantages(advantages.advantages, minibatch)
                losses_finite = True
                passes = self._micro_batches_of(batch, minibatch)
                # FSDP reduce-scatters after each backward: every process runs `most` passes
                most = max(self.parallel.gather_json(len(passes))) if self.sharded else 0
                for micro, groups in passes:
                    lengths = [len(batch.samples[i].completion_ids) for i in micro]
                    seed = int(torch.randint(0, 2**62, (), generator=self.dropout_rng))
                    with (
                        forked_torch_rng(seed),
                        self._hidden(self.value_head is not None) as hidden,
                    ):
                        packed = self.logprobs(self.policy, batch, micro, groups)
                        new = torch.cat(packed.logprobs)
                    old = torch.cat([scores.old_logprobs[i] for i in micro])
                    ref = torch.cat([scores.ref_logprobs[i] for i in micro])
                    token_advantages = torch.tensor(
                        np.repeat([step_advantages[i] for i in micro], lengths),
                        dtype=torch.float32,
                        device=device,
                    )
                    weights = torch.tensor(
                        [w for i in micro for w in batch.samples[i].token_weights()],
                        dtype=torch.float32,
                        device=device,
                    )
                    token_losses, stats = ppo_token_losses(
                        new, old, ref, token_advantages, config.clip_eps, config.kl_beta
                    )
                    loss = (token_losses * weights).sum() / n_tokens
                    if self.value_head is not None:
                        features = hidden[-1].detach() if config.value_detach else hidden[-1]
                        predicted = self.value_head(
                            self._value_features(batch, micro, packed, features)
                        )
                        targets = self.value_head.normalise(
                            torch.tensor(
                                advantages.returns[micro],
                                dtype=torch.float32,
                                device=predicted.device,
                            )
                        )
                        squared = (predicted - targets).pow(2).sum()
                        loss = loss + config.value_coef * squared / n_rows
                        value_loss_sum += float(squared.detach())
                    loss.backward()
                    losses_finite = losses_finite and all_finite(loss)
                    sums["policy_loss"] += float((stats["policy_loss"] * weights).sum())
                    sums["kl"] += float((stats["kl"] * weights).sum())
                    sums["clip_frac"] += float((stats["clipped"] * weights).sum())
                    tokens_seen += int(weights.sum())
                    if epoch == 0 and number == 0:  # no optimizer step yet: ratio must be 1
                        ratio_start_error = max(
                            ratio_start_error, float(stats["ratio_error"].max())
                        )
                for _ in range(most - len(passes)):
                    fsdp.idle_backward(self.model)
                self.parallel.sum_gradients(self.summed_params)
                norm = fsdp.clip_gradients(self.params, config.max_grad_norm)
                steps += 1
                # The same decision in every process: the gradients (so the norm) are
                # shared, a local loss is not.
                losses_finite = bool(self.parallel.sum([not losses_finite])[0] == 0)
                if finite_step(losses_finite, norm):
                    grad_norms.append(float(norm))
                    lr = self.optimizer.param_groups[0]["lr"]
                    self.optimizer.step()
                    self.scheduler.step()
                else:  # never let inf / NaN reach the weights (agentbench.rlft.nonfinite)
                    skipped += 1
                    warn_skipped(f"ppo update {self.update + 1}, optimizer step {steps}", norm)
                self.optimizer.zero_grad(set_to_none=True)
        self.model.eval()
        if self.value_head is not None:
            self.value_head.eval()
        refuse_all_skipped(
            f"ppo update {self.update + 1}",
            skipped,
            steps,
            "check the rewards and lower learning_rate; resume from the last checkpoint",
        )
        names = list(sums)
        totals = self.parallel.sum(
            [sums[name] for name in names] + [tokens_seen, value_loss_sum, len(batch.samples)]
        )
        tokens_seen, value_loss_sum, n_samples = totals[len(names) :]
        result = {name: float(totals[i]) / max(1, tokens_seen) for i, name in enumerate(names)}
        result["grad_norm"] = float(np.mean(grad_norms))  # of the steps taken
        result["lr"] = lr  # of the update's last optimizer step
        result["skipped_steps"] = skipped  # non-finite loss or gradient norm: not taken
        result["ratio_start_error"] = float(max(self.parallel.gather_json(ratio_start_error)))
        if self.value_head is not None:
            result["value_loss"] = float(value_loss_sum / (n_samples * len(orders)))
        return result

    def _minibatch_advantages(
        self, advantages: np.ndarray, minibatch: list[int]
    ) -> dict[int, float]:
        """Each step's advantage; with ``normalize_advantages``, standardised over the
        minibatch (its steps in every process)."""
        values = advantages[minibatch]
        if self.config.normalize_advantages:
            total, squares, count = self.parallel.sum(
                [values.sum(), np.square(values).sum(), len(values)]
            )
            mean = total / max(1.0, count)
            std = math.sqrt(max(0.0, squares / max(1.0, count) - mean**2))
            values = (values - mean) / (std + 1e-8)
        return dict(zip(minibatch, values.tolist(), strict=True))

    def epoch_order(self, batch: RolloutBatch) -> np.ndarray:
        """One epoch's shuffled order of this process's minibatch units: its episodes
        (``packed``: minibatches hold whole episodes) or its steps."""
        if self.config.packed:
            return self.rng.permutation(len(self._episode_steps(batch)))
        return self.rng.permutation(len(batch.samples))

    @staticmethod
    def _episode_steps(batch: RolloutBatch) -> list[list[int]]:
        """The sample indices of each episode this process played, in step order."""
        steps: dict[int, list[int]] = {}
        for i, sample in enumerate(batch.samples):  # sorted by (episode, t)
            steps.setdefault(sample.episode, []).append(i)
        return list(steps.values())

    def _minibatches(self, batch: RolloutBatch, order: np.ndarray) -> list[list[int]]:
        """One epoch's order split into ``num_minibatches`` near-equal minibatches of
        sample indices (whole episodes, in step order, when ``packed``)."""
        parts = np.array_split(order, self.config.num_minibatches)
        if not self.config.packed:
            return [[int(i) for i in part] for part in parts]
        episodes = self._episode_steps(batch)
        return [[i for e in part for i in episodes[int(e)]] for part in parts]

    def _micro_batches_of(
        self, batch: RolloutBatch, minibatch: list[int]
    ) -> list[tuple[list[int], list[int] | None]]:
        """The forward passes of a minibatch: (sample indices, the trie of each) when
        ``packed`` (:func:`plan_micro_batches`: one trie per episode or chunk of one,
        sorted by length, up to ``max_packed_tokens`` padded tokens per pass), else
        ``micro_batch_size`` rows each (no tries)."""
        config = self.config
        if not config.packed:
            return [(micro, None) for micro in _chunks(minibatch, config.micro_batch_size)]
        rows = [batch.samples[i].prompt_ids + batch.samples[i].completion_ids for i in minibatch]
        groups = [batch.samples[i].episode for i in minibatch]
        passes = []
        for tries in plan_micro_batches(rows, groups, config.max_packed_tokens):
            micro = [minibatch[r] for trie in tries for r in trie]
            passes.append((micro, [k for k, trie in enumerate(tries) for _ in trie]))
        return passes

    def _micro_batches(
        self, batch: RolloutBatch, order: np.ndarray
    ) -> Iterator[tuple[list[int], list[int] | None]]:
        """The forward passes of one epoch, minibatch after minibatch."""
        for minibatch in self._minibatches(batch, order):
            yield from self._micro_batches_of(batch, minibatch)

    @staticmethod
    def _rows(batch: RolloutBatch, micro: Sequence[int]) -> tuple[list[list[int]], list[list[int]]]:
        return (
            [batch.samples[i].prompt_ids for i in micro],
            [batch.samples[i].completion_ids for i in micro],
        )

    def _hidden(self, wanted: bool) -> Any:
        return capture_last_hidden(self.model) if wanted else nullcontext([])

    # 6. log, evaluate ---------------------------------------------------------------

    def rollout_metrics(
        self, batch: RolloutBatch, rewards: Sequence[np.ndarray], scores: Scores
    ) -> dict[str, float]:
        """Training-rollout metrics: env reward, regret and coverage (bandits), invalid rate,
        the training reward, and the policy's entropy estimate (mean -log p of its sampled
        tokens, template tokens left out)."""
        steps = [step for episode in batch.episodes for step in episode.steps]
        tokens = torch.cat(scores.old_logprobs)
        weights = torch.tensor(
            [w for sample in batch.samples for w in sample.token_weights()], dtype=tokens.dtype
        )
        logprob_sum, n_tokens, n_samples = self.parallel.sum(
            [float((tokens.cpu() * weights).sum()), float(weights.sum()), len(batch.samples)]
        )
        shaping = self.config.reward_shaping()
        reasoning = (
            {
                "mean_reasoning_bonus": float(
                    np.mean(np.concatenate(reasoning_bonuses(batch.episodes, shaping)))
                )
            }  # fmt: skip
            if shaping.reasoning_bonus
            else {}
        )
        return {
            **outcome_metrics(summarize(batch.episodes)),
            "mean_env_reward": float(np.mean([s.reward for s in steps])),
            "mean_train_reward": float(np.mean(np.concatenate(rewards))),
            **reasoning,  # apart from the outcome reward, as RLSP keeps it
            "entropy": float(-logprob_sum / n_tokens),
            "tokens_per_step": float(n_tokens / n_samples),
        }

    def evaluate(
        self, seeds: Sequence[int] | None = None, temperature: float = 0.0
    ) -> tuple[dict[str, Any], list[Episode]]:
        """Play held-out episodes (greedy by default) and summarise them (metrics.summarize)."""
        config = self.config
        if seeds is None:
            seeds = range(config.eval_seed, config.eval_seed + config.eval_episodes)
        with fsdp.generating(self.policy):
            return evaluate_policy(
                self.policy,
                config.agent_settings(temperature=temperature),
                config.env.id,
                seeds,
                num_envs=config.num_envs,
                env_kwargs=config.env.kwargs,
                name=f"ppo:{self.policy.name}@{self.update}",
                parallel=self.parallel,
            )

    def _evaluate_and_save(self) -> dict[str, float]:
        summary, episodes = self.evaluate()
        self.last_evaluation = (self.update, summary)
        if self.parallel.is_main:
            path = self.output_dir / EVAL_DIR / f"{ckpt.checkpoint_name(self.update)}.jsonl"
            path.unlink(missing_ok=True)  # a resumed run replays this evaluation
            with EpisodeWriter(path) as writer:
                for episode in episodes:
                    writer.write(episode)
        return {f"eval/{name}": value for name, value in outcome_metrics(summary).items()}

    # -- checkpoints ------------------------------------------------------------------

    def save(self) -> Path:
        """Checkpoint the current state (see :mod:`agentbench.rlft.checkpoint`).

        Under data parallelism every process calls this; the weights and optimizer
        state are the same everywhere, so the main process writes them, with the RNG
        states of all processes. Under FSDP they are gathered whole to the main process
        first (the same files a single process writes)."""
        rng_states = self.parallel.gather_json(
            ckpt.rng_state(self.rng, {"dropout": self.dropout_rng})
        )
        weights = fsdp.gathered_weights(self.model, self.parallel)  # None: not sharded
        optimizer_state = fsdp.gathered_optimizer_state(self.optimizer, self.parallel)

        def write_parts(directory: Path) -> None:
            ckpt.save_policy(self.model, directory, self.config.model.use_lora, weights)
            if self.value_head is not None:
                self.value_head.save(directory)
            ckpt.save_optimizer(self.optimizer, self.scheduler, directory, optimizer_state)
            ckpt.save_rng(rng_states, directory)
            write_atomic(directory / ckpt.CONFIG_FILE, self.config.to_json())
            write_json(directory / ckpt.TRAINER_FILE, {"update": self.update}, indent=None)

        target = self.output_dir / ckpt.CHECKPOINTS_DIR / ckpt.checkpoint_name(self.update)
        if self.parallel.is_main:
            target = ckpt.write_checkpoint(
                self.output_dir, self.update, write_parts, self.config.keep_checkpoints
            )
        self.parallel.barrier()  # no process goes on before the checkpoint exists
        return target

    def export_model(self, directory: str | Path) -> Path:
        """The current policy as a standalone model directory (LoRA merged), loadable by
        name everywhere: ``agentbench run`` / ``analyze``, ``resolve_model``. Under FSDP
        from the checkpoint of the current update (its gathered weights): no process
        but the caller needs to take part."""
        if self.sharded:
            checkpoint = self.output_dir / ckpt.CHECKPOINTS_DIR / ckpt.checkpoint_name(self.update)
            return ckpt.export_checkpoint_weights(
                self.model.config, self.policy.tokenizer, checkpoint, directory
            )
        return ckpt.export_model(self.model, self.policy.tokenizer, directory)

    def load(self, directory: str | Path) -> None:
        """Restore the state saved in a checkpoint directory into this trainer."""
        directory = Path(directory)
        ckpt.load_policy(self.model, directory, self.config.model.use_lora)
        if self.value_head is not None:
            self.value_head.load(directory)
        ckpt.load_optimizer(self.optimizer, self.scheduler, directory)
        ckpt.load_rng(
            self.rng,
            {"dropout": self.dropout_rng},
            directory,
            self.parallel.rank,
            self.parallel.world_size,
        )
        self.update = ckpt.read_progress(directory, "update")
        if self.parallel.is_main:  # the resumed run redoes the updates after the checkpoint
            ckpt.truncate_metrics(self.output_dir / METRICS_FILE, "update", self.update)
        self.parallel.barrier()

    @classmethod
    def resume(
        cls, output_dir: str | Path, generator: TransformersGenerator | None = None
    ) -> PPOTrainer:
        """A trainer that continues the run in ``output_dir`` from its latest checkpoint.

        ``generator`` must be the same starting model the run began with (it is the
        base of the adapters, or the reference of full fine-tuning); without one the
        trainer loads the config's model. A damaged checkpoint is passed over, with a
        warning, for the newest intact one (:func:`~agentbench.rlft.checkpoint.resume_checkpoint`).
        """
        directory = ckpt.resume_checkpoint(output_dir)
        if directory is None:
            raise ConfigError(f"{output_dir} holds no checkpoint to resume from")
        config = ppo_config_from_dict(ckpt.read_checkpoint_config(directory))
        config.output_dir = str(output_dir)  # the run directory may have moved
        trainer = cls(config, generator)
        trainer.load(directory)
        return trainer
