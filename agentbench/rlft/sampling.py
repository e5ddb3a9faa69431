"""What expert iteration and return-conditioned training share: the policy samples
episodes, each scored by its training return, and the model is fine-tuned with
cross-entropy on its own generated tokens.

- :class:`SelfTrainingConfig`: the knobs both methods have (env, sampling agent,
  training return, the cross-entropy step as an :class:`SFTConfig`, output).
- :func:`sample_episodes`: the LLM agent plays every seed once per sample index
  (:func:`agentbench.rollout.rollout`'s ``sample``: the same env and reward tape,
  its own sampling stream), keeping each step's prompt and generated token ids
  through the collection every trainer shares (:mod:`agentbench.rlft.collection`).
- :func:`shaped_rewards`: the one shaping of :mod:`agentbench.rlft.rewards` (env
  reward + the -5 invalid penalty, + the optional exploration bonus); an
  episode's training return is their sum.
- :func:`run_iterations`: the loop around one iteration, with its metrics line
  (:func:`sample_metrics`, the shared :class:`MetricsLog`), progress bar and
  checkpoints; :func:`evaluate_policy`: held-out episodes, greedy by default.
- :func:`resume_self_training`: a run continued from its newest intact checkpoint.

Checkpoints (:mod:`agentbench.rlft.checkpoint`, safetensors + JSON) are written to
``<output_dir>/checkpoints/iteration_000002/`` after every ``checkpoint_every``
iterations and at the end: the policy (full weights, or the LoRA adapters when the
model is a peft model), the config and the iteration counter. That is the whole
state between iterations: each iteration's cross-entropy step starts a fresh AdamW
and schedule, seeded from ``(sft.seed, iteration)``, and samples from streams fixed
by the seeds and the iteration, so no optimizer or RNG state carries over, and a run
resumed after iteration k continues exactly as if it had not stopped.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Self

import numpy as np

from agentbench.agent.llm import LLMAgentSettings
from agentbench.errors import ConfigError
from agentbench.io import write_atomic, write_json
from agentbench.metrics import summarize
from agentbench.records import Episode
from agentbench.rlft import checkpoint as ckpt
from agentbench.rlft import collection, fsdp
from agentbench.rlft.collection import (
    MetricsLog,
    PlayedEpisode,
    TokenStep,
    outcome_metrics,
    played_with_tokens,
)
from agentbench.rlft.config import (
    AGENT_TABLE_HELP,
    ENV_TABLE_HELP,
    MODEL_TABLE_HELP,
    NON_NEGATIVE,
    NON_POSITIVE,
    POSITIVE,
    EnvSettings,
    Interval,
    ModelSettings,
    check_float_settings,
    check_training_agent,
    config_from_dict,
)
from agentbench.rlft.distributed import DataParallel
from agentbench.rlft.fsdp import check_parallel_setting
from agentbench.rlft.rewards import (
    RewardShaping,
    exploration_bonus_setting,
    invalid_penalty_setting,
    training_rewards,
)
from agentbench.rlft.sft import SFTConfig, train_on_targets
from agentbench.settings import setting
from agentbench.shaping import INVALID_ACTION_PENALTY

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class SelfTrainingConfig:
    """Settings shared by expert iteration and return-conditioned training."""

    # ---- the model and the environment
    model: ModelSettings = setting(factory=ModelSettings, help=MODEL_TABLE_HELP)
    env: EnvSettings = setting(factory=EnvSettings, help=ENV_TABLE_HELP)
    iterations: int = setting(4, "sample, select or label, fine-tune: this many times")
    train_seed: int = setting(0, "first training episode seed (keep evaluation seeds apart)")
    num_envs: int = setting(64, "episodes played in parallel (one batched generate call per step)")
    # ---- the sampling agent (SPEC.md 2); evaluation is greedy unless asked otherwise
    temperature: float = setting(1.0, "sampling temperature of training episodes, > 0 (SPEC: 1.0)")
    agent: LLMAgentSettings = setting(factory=LLMAgentSettings, help=AGENT_TABLE_HELP)
    # ---- the training return of an episode (PPO's shaping, summed)
    invalid_penalty: float = invalid_penalty_setting()
    exploration_bonus: float = exploration_bonus_setting()
    # ---- fine-tuning: the cross-entropy step of every iteration (prompt masked); iteration
    # i trains with a seed drawn from (sft.seed, i), so each iteration shuffles differently
    sft: SFTConfig = setting(
        factory=SFTConfig,
        help="the supervised step on the kept episodes (an [sft] table of SFTConfig keys)",
    )
    # ---- held-out evaluation after training (agentbench train); evaluation is greedy
    eval_seed: int = setting(
        1_000_000, "first held-out evaluation seed; must not meet training seeds"
    )
    eval_episodes: int = setting(16, "held-out episodes evaluated after training")
    # ---- output
    output_dir: str | None = setting(
        None,
        "metrics.jsonl (one line per iteration), config.json and checkpoints/ (None: none of them)",
    )
    checkpoint_every: int = setting(
        1, "checkpoint every N iterations and at the end; 0 = at the end"
    )
    keep_checkpoints: int = setting(2, "newest checkpoints kept on disk (older ones are deleted)")
    progress: bool = setting(False, "tqdm bar over iterations")
    parallel: str = setting(
        "data",
        (
            '"data": one process does all the work (under a launcher each runs the whole '
            'method, and the main one writes); "fsdp": under a launcher, weights, gradients '
            "and AdamW state sharded over the processes (torch FSDP2, agentbench.rlft.fsdp; "
            "full fine-tuning only): every process samples every episode on the gathered "
            "weights (so all draw the same ones) and each fine-tuning batch is split over them"
        ),
    )

    def __post_init__(self) -> None:
        for name, low in (("iterations", 1), ("num_envs", 1), ("train_seed", 0),
                          ("checkpoint_every", 0), ("keep_checkpoints", 1), ("eval_seed", 0),
                          ("eval_episodes", 1)):  # fmt: skip
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be at least {low}, got {getattr(self, name)}")
        check_float_settings(self, self.float_ranges())
        if not isinstance(self.sft, SFTConfig):
            raise ConfigError(f"sft must be an SFTConfig, got {type(self.sft).__name__}")
        check_training_agent(self.agent)
        check_parallel_setting(self.parallel, self.model.use_lora)

    def float_ranges(self) -> dict[str, Interval]:
        """The accepted range of every float setting (a subclass adds its own)."""
        return {
            "temperature": POSITIVE,
            "invalid_penalty": NON_POSITIVE,
            "exploration_bonus": NON_NEGATIVE,
        }

    def agent_settings(
        self, temperature: float | None = None, return_token: str | None = None
    ) -> LLMAgentSettings:
        """The LLM agent that samples (``temperature`` None: the config's) or evaluates."""
        return replace(
            self.agent,
            temperature=self.temperature if temperature is None else temperature,
            return_token=return_token,
        )

    def iteration_sft(self, iteration: int) -> SFTConfig:
        """The cross-entropy settings of iteration ``iteration`` (0-based): its own seed."""
        seed = int(np.random.default_rng([self.sft.seed, iteration]).integers(2**62))
        return replace(self.sft, seed=seed)


# ---------------------------------------------------------------- samples


# The names the self-training methods use for the shared collection types.
SampledStep = TokenStep
SampledEpisode = PlayedEpisode


def shaped_rewards(
    episodes: Sequence[Episode],
    invalid_penalty: float = INVALID_ACTION_PENALTY,
    exploration_bonus: float = 0.0,
) -> list[np.ndarray]:
    """Each step's training reward (:func:`training_rewards`): the env reward unscaled,
    ``invalid_penalty`` per invalid step and the optional exploration bonus, dense; an
    episode's training return is their sum."""
    return training_rewards(episodes, RewardShaping(invalid_penalty, exploration_bonus))


def sample_episodes(
    agent: Any,
    config: SelfTrainingConfig,
    seeds: Sequence[int],
    samples: Sequence[int] = (0,),
) -> list[SampledEpisode]:
    """Play every seed once per sample index, keeping each step's token ids; the
    episodes come sorted by (seed, sample) with their training returns."""
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct, got {list(seeds)}")
    sampled = [
        item
        for sample in samples
        for item in played_with_tokens(
            agent,
            config.env.id,
            seeds,
            num_envs=config.num_envs,
            env_kwargs=config.env.kwargs,
            sample=sample,
        )  # fmt: skip
    ]
    sampled.sort(key=lambda s: (s.seed, s.sample))
    rewards = shaped_rewards(
        [s.episode for s in sampled], config.invalid_penalty, config.exploration_bonus
    )
    for item, episode_rewards in zip(sampled, rewards, strict=True):
        item.rewards = episode_rewards
    return sampled


def evaluate_policy(
    generator: Any,
    config: SelfTrainingConfig,
    seeds: Sequence[int],
    temperature: float = 0.0,
    return_token: str | None = None,
) -> tuple[dict[str, Any], list[Episode]]:
    """Play ``seeds`` with the current policy (greedy by default) and summarise them."""
    return collection.evaluate_policy(
        generator,
        config.agent_settings(temperature, return_token),
        config.env.id,
        seeds,
        num_envs=config.num_envs,
        env_kwargs=config.env.kwargs,
        name=f"llm:{generator.name}",
    )


def sample_metrics(sampled: Sequence[SampledEpisode]) -> dict[str, float]:
    """The samples' mean training return, env return, invalid rate, and for bandits
    final regret and coverage (metrics.summarize)."""
    outcome = outcome_metrics(summarize([s.episode for s in sampled]))
    return {
        "return": float(np.mean([s.training_return for s in sampled])),
        "env_return": outcome.pop("return"),
        **outcome,
    }


class SelfTrainer(ABC):
    """What :func:`run_iterations` drives: a config, a counter, the policy (a
    TransformersGenerator, fine-tuned in place), and one iteration, which each method
    defines. Constructed as every trainer is, ``(config, generator)``: a handed-in
    generator is trained as it is (LoRA adapters injected or not, as its caller did);
    without one the trainer loads the config's ``[model]`` and makes it trainable as
    that table says (:func:`starting_model`)."""

    config_class: type[SelfTrainingConfig] = SelfTrainingConfig  # read back by resume
    method: str = "self-training"  # the method's name in progress bars and errors
    evaluation_return_token: str | None = None  # return-conditioned: the target it asks for

    def __init__(self, config: Any, generator: Any = None) -> None:
        self.config = config
        self.parallel = DataParallel.from_environment()  # one process unless launched in many
        # parallel = "fsdp" under a launcher: the weights (and AdamW state) sharded
        self.sharded = fsdp.use_fsdp(config.parallel, self.parallel)
        if generator is None:  # sharded: loaded whole on the CPU, shards go to the device
            generator = starting_model(config, "cpu" if self.sharded else None)
        if self.sharded:
            fsdp.shard_model(generator.model, self.parallel)
        self.generator = generator
        self.iteration = 0  # iterations completed

    @classmethod
    def resume(cls, output_dir: str | Path, generator: Any = None) -> Self:
        """Continue the run in ``output_dir`` from its newest intact checkpoint (exactly);
        ``generator`` is the run's starting model (:func:`resume_self_training`)."""
        return resume_self_training(cls, output_dir, generator)

    @abstractmethod
    def iterate(self, iteration: int) -> dict[str, Any]:
        """One iteration (0-based): sample, select or label, fine-tune; its metrics."""

    def train(self) -> list[dict[str, Any]]:
        """Run the remaining iterations; returns their metrics records."""
        return run_iterations(self, self.method)

    def evaluate(
        self,
        seeds: Sequence[int],
        temperature: float = 0.0,
        return_token: str | None = None,
    ) -> tuple[dict[str, Any], list[Episode]]:
        """Play held-out ``seeds`` (greedy by default) and summarise them; a
        return-conditioned policy is asked for ``return_token`` (default: the method's)."""
        token = self.evaluation_return_token if return_token is None else return_token
        with fsdp.generating(self.generator):
            return evaluate_policy(self.generator, self.config, seeds, temperature, token)

    def export_model(self, directory: str | Path) -> Path:
        """The policy as a standalone model directory (LoRA merged; see
        :func:`agentbench.rlft.checkpoint.export_model`). A sharded policy is exported
        from the checkpoint of the last iteration (its gathered weights), so the caller
        alone can do it."""
        if not self.sharded:
            return ckpt.export_model(self.generator.model, self.generator.tokenizer, directory)
        if self.config.output_dir is None:
            raise ConfigError(
                "exporting a sharded (FSDP) policy reads its last checkpoint; give the run "
                "an output_dir"
            )
        checkpoint = Path(self.config.output_dir) / ckpt.CHECKPOINTS_DIR
        checkpoint = checkpoint / ckpt.checkpoint_name(self.iteration, "iteration")
        return ckpt.export_checkpoint_weights(
            self.generator.model.config, self.generator.tokenizer, checkpoint, directory
        )

    def fine_tune(
        self, prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], iteration: int
    ) -> list[dict[str, Any]]:
        """The cross-entropy step of iteration ``iteration`` on (prompt, target) token ids
        (:func:`agentbench.rlft.sft.train_on_targets`); under FSDP each process trains on
        its share of every batch."""
        sft = self.config.iteration_sft(iteration)
        return train_on_targets(self.generator, prompts, targets, sft, self.method,
                                parallel=self.parallel)  # fmt: skip


def run_iterations(trainer: SelfTrainer, name: str) -> list[dict[str, Any]]:
    """Run ``trainer.iterate`` until ``config.iterations``: one metrics record per
    iteration (``iteration``, the iteration's own metrics, ``seconds``), written to
    ``metrics.jsonl`` as it ends, and a checkpoint every ``checkpoint_every``
    iterations and at the end (with an ``output_dir``); a tqdm bar when
    ``config.progress``."""
    from tqdm import tqdm

    config = trainer.config
    if (
        trainer.iteration == 0
        and config.output_dir is not None
        and ckpt.latest_checkpoint(config.output_dir) is not None
    ):
        raise ConfigError(
            f"{config.output_dir} already holds checkpoints of a run; continue it with "
            f"{type(trainer).__name__}.resume or choose another output_dir"
        )
    main = trainer.parallel.is_main  # under a launcher the main process writes
    trainer.parallel.barrier()  # every process has looked before the main one writes
    log = MetricsLog(
        _start_output(config, fresh=trainer.iteration == 0) if main else None, "iteration"
    )
    records: list[dict[str, Any]] = []
    bar = tqdm(total=config.iterations, initial=trainer.iteration, desc=name,
               unit="iteration", disable=not config.progress)  # fmt: skip
    while trainer.iteration < config.iterations:
        started = time.perf_counter()
        metrics = trainer.iterate(trainer.iteration)
        trainer.iteration += 1
        record = {"iteration": trainer.iteration, **metrics}
        record["seconds"] = time.perf_counter() - started
        records.append(log.write(record))
        every, last = config.checkpoint_every, trainer.iteration == config.iterations
        if config.output_dir is not None and (last or (every and trainer.iteration % every == 0)):
            save_self_training(trainer)
        bar.update(1)
        bar.set_postfix(ret=f"{record['return']:.2f}", invalid=f"{record['invalid_rate']:.2f}")
    bar.close()
    return records


def save_self_training(trainer: SelfTrainer) -> Path:
    """Checkpoint the policy, the config and the iteration counter (module docstring).
    Every process calls it; the main one writes (a sharded policy gathered whole)."""
    config, model = trainer.config, trainer.generator.model
    weights = fsdp.gathered_weights(model, trainer.parallel)  # None: not sharded

    def write_parts(directory: Path) -> None:
        ckpt.save_policy(model, directory, ckpt.is_lora(model), weights)
        write_atomic(directory / ckpt.CONFIG_FILE, _config_json(config))
        write_json(directory / ckpt.TRAINER_FILE, {"iteration": trainer.iteration}, indent=None)

    assert config.output_dir is not None
    target = Path(config.output_dir) / ckpt.CHECKPOINTS_DIR
    target = target / ckpt.checkpoint_name(trainer.iteration, "iteration")
    if trainer.parallel.is_main:
        target = ckpt.write_checkpoint(
            config.output_dir, trainer.iteration, write_parts, config.keep_checkpoints,
            "iteration",
        )  # fmt: skip
    trainer.parallel.barrier()  # no process goes on before the checkpoint exists
    return target


def load_self_training(trainer: SelfTrainer, directory: Path) -> None:
    """Restore a checkpoint's policy and counter into ``trainer``; drop the metric lines
    of later iterations (the resumed run redoes them)."""
    model = trainer.generator.model
    ckpt.load_policy(model, directory, ckpt.is_lora(model))
    trainer.iteration = ckpt.read_progress(directory, "iteration")
    if trainer.config.output_dir is not None and trainer.parallel.is_main:
        path = Path(trainer.config.output_dir) / METRICS_FILE
        ckpt.truncate_metrics(path, "iteration", trainer.iteration)
    trainer.parallel.barrier()


def starting_model(config: SelfTrainingConfig, device: str | None = None) -> Any:
    """The config's ``[model]``, loaded (on ``device``; None: CUDA when available) and
    made trainable (LoRA initialised from the SFT seed)."""
    return config.model.load_trainable(config.sft.seed, device)


def resume_self_training(trainer_class: Any, output_dir: str | Path, generator: Any = None) -> Any:
    """A ``trainer_class`` (ExpertIteration, ReturnConditioned) continuing the run in
    ``output_dir`` from its newest intact checkpoint, with the config the run started
    with. ``generator`` must be the starting model of the run (with its LoRA adapters
    injected the same way, when it had them); None loads the config's ``[model]``."""
    directory = ckpt.resume_checkpoint(output_dir)
    if directory is None:
        raise ConfigError(f"{output_dir} holds no checkpoint to resume from")
    data = dict(ckpt.read_checkpoint_config(directory))
    config_class = trainer_class.config_class
    config = config_from_dict(config_class, data, config_class.__name__)  # [sft], [agent] nested
    config = replace(config, output_dir=str(output_dir))  # the run directory may have moved
    trainer = trainer_class(config, generator)
    load_self_training(trainer, directory)
    return trainer


def _config_json(config: SelfTrainingConfig) -> str:
    return json.dumps(asdict(config), indent=1, sort_keys=True)


def _start_output(config: SelfTrainingConfig, fresh: bool) -> Path | None:
    """Write ``config.json`` into the output directory and return where ``metrics.jsonl``
    goes (a new run starts a new file; a continued one appends); None without one."""
    if config.output_dir is None:
        return None
    path = Path(config.output_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if fresh:
        path.unlink(missing_ok=True)
    write_atomic(path.parent / CONFIG_FILE, _config_json(config))
    return path
