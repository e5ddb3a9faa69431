"""A training run from a config table: what ``agentbench train`` and ``reproduce`` share.

A table holds the keys of one method's config (``method`` = "ppo", the default,
"expert-iteration", "return-conditioned", or "cloning": supervised fine-tuning on a
UCB expert's behaviour or thoughts, :class:`CloningConfig`) with its [model], [env],
[agent] (and [sft]) tables. :func:`make_trainer` builds the trainer, or resumes the run already
in its output directory with the config that run started with;
:func:`train_and_evaluate` trains to the end and evaluates the policy greedily on
the config's held-out seeds; :func:`export_policy` writes the fine-tuned model as a
directory any agent can load by path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentbench.errors import ConfigError
from agentbench.rlft.config import EnvSettings, ModelSettings
from agentbench.rlft.sft import MODES, SFTConfig
from agentbench.settings import setting

METHODS = ("ppo", "expert-iteration", "return-conditioned", "cloning")


@dataclass
class CloningConfig:
    """Behaviour or thought cloning of a UCB expert (SPEC 3): ``agentbench sft`` as a
    training config, so experiments can warm-start from it."""

    mode: str = setting(
        "behaviour", '"behaviour": the expert\'s ACTION= only; "thought": a text UCB computation'
    )
    episodes: int = setting(16, "expert episodes, seeds seed .. seed + episodes - 1")
    seed: int = setting(0, "the first expert seed; LoRA initialisation and shuffling")
    history_length: int | None = setting(50, 'transitions in the context; "all" = whole episode')
    model: ModelSettings = setting(factory=ModelSettings, help="the model fine-tuned")
    env: EnvSettings = setting(factory=EnvSettings, help="the env the expert plays")
    sft: SFTConfig = setting(factory=SFTConfig, help="the fine-tuning settings (SFTConfig)")
    output_dir: str = setting("runs/cloning", "sft.json goes here")
    progress: bool = setting(True, "progress bars")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.episodes < 1:
            raise ConfigError(f"episodes must be at least 1, got {self.episodes}")


class Cloning:
    """The cloning run of a :class:`CloningConfig`: ``train()`` fine-tunes ``generator``."""

    def __init__(self, config: CloningConfig) -> None:
        from agentbench.suite import SuiteEnv

        SuiteEnv(config.env.id, config.env.kwargs).validate()  # before a model loads
        self.config = config
        self.generator = config.model.load_trainable(config.seed)
        self.examples = 0  # expert examples trained on (set by train)

    def train(self) -> list[dict[str, Any]]:
        """Fine-tune on the expert's episodes; ``sft.json`` (:meth:`record`) goes to
        the output directory."""
        from agentbench.agent.context import ContextSettings
        from agentbench.io import write_json
        from agentbench.rlft.sft import expert_dataset, train_sft

        config = self.config
        context = ContextSettings(
            cot=config.mode == "thought", history_length=config.history_length
        )
        seeds = range(config.seed, config.seed + config.episodes)
        examples = expert_dataset(config.env.id, seeds, config.mode,
                                  env_kwargs=config.env.kwargs, context=context)  # fmt: skip
        self.examples = len(examples)
        records = train_sft(self.generator, examples, config.sft)
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        write_json(Path(config.output_dir) / "sft.json", self.record(records))
        return records

    def record(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """What ``sft.json`` holds: the number of examples and each epoch's metrics."""
        return {"examples": self.examples, "epochs": records}


def make_trainer(data: dict[str, Any], output_dir: str | None = None) -> tuple[Any, bool]:
    """The trainer of ``data`` (``output_dir`` overrides the table's), and whether it
    resumed a run found there."""
    from agentbench.rlft.checkpoint import latest_checkpoint

    data = dict(data)
    if output_dir is not None:
        data["output_dir"] = str(output_dir)
    trainer_class, config = training_config(data)
    if trainer_class is Cloning:  # short, and not checkpointed: it runs again
        return Cloning(config), False
    if config.output_dir and latest_checkpoint(config.output_dir) is not None:
        # A run continues with the config it started with (its schedule depends on it).
        return trainer_class.resume(config.output_dir), True
    return trainer_class(config), False


def training_config(data: dict[str, Any]) -> tuple[type, Any]:
    """The trainer class and the checked config of a training table (its ``method``)."""
    data = dict(data)
    method = data.pop("method", "ppo")
    if method not in METHODS:
        raise ConfigError(f"method {method!r} is not one of {', '.join(METHODS)}")
    if method == "ppo":
        from agentbench.rlft import PPOTrainer, ppo_config_from_dict

        return PPOTrainer, ppo_config_from_dict(data)
    if method == "cloning":
        from agentbench.settings import config_from_dict

        return Cloning, config_from_dict(CloningConfig, data, "cloning")
    from agentbench.rlft import (
        ExpertIteration,
        ExpertIterationConfig,
        ReturnConditioned,
        ReturnConditionedConfig,
    )
    from agentbench.rlft.config import reject_moved_settings
    from agentbench.settings import config_from_dict

    trainer_class, config_class = {
        "expert-iteration": (ExpertIteration, ExpertIterationConfig),
        "return-conditioned": (ReturnConditioned, ReturnConditionedConfig),
    }[method]
    reject_moved_settings(data)
    return trainer_class, config_from_dict(config_class, data, method)  # nested tables


def train_and_evaluate(trainer: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train to the end; the metrics records and the greedy held-out evaluation's summary
    (PPO's own evaluation of its last update when it made one)."""
    records = trainer.train()
    config = trainer.config
    if isinstance(trainer, Cloning):
        return records, {}  # no held-out evaluation of its own
    if _is_ppo(trainer):
        if trainer.last_evaluation is not None and trainer.last_evaluation[0] == trainer.update:
            return records, trainer.last_evaluation[1]
        summary, _ = trainer.evaluate()
        return records, summary
    seeds = range(config.eval_seed, config.eval_seed + config.eval_episodes)
    summary, _ = trainer.evaluate(seeds)
    return records, summary


def trained_for(trainer: Any) -> str:
    """How far a trainer got: "8 updates", "2 iterations" or "1 epochs"."""
    if _is_ppo(trainer):
        return f"{trainer.update} updates"
    if isinstance(trainer, Cloning):
        return f"{trainer.config.sft.epochs} epochs"
    return f"{trainer.iteration} iterations"


def export_policy(trainer: Any, path: str | Path) -> Path:
    """The fine-tuned policy as a model directory (LoRA adapters merged)."""
    if isinstance(trainer, Cloning):
        from agentbench.rlft.checkpoint import export_model

        return Path(export_model(trainer.generator.model, trainer.generator.tokenizer, path))
    return Path(trainer.export_model(path))  # PPO, expert iteration, return-conditioned


def _is_ppo(trainer: Any) -> bool:
    from agentbench.rlft import PPOTrainer

    return isinstance(trainer, PPOTrainer)
