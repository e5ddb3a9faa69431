"""A training run from a config table: what ``agentbench train`` and ``reproduce`` share.

A table holds the keys of one method's config (``method`` = "ppo", the default,
"expert-iteration" or "return-conditioned") with its [model], [env], [agent] (and
[sft]) tables. :func:`make_trainer` builds the trainer, or resumes the run already
in its output directory with the config that run started with;
:func:`train_and_evaluate` trains to the end and evaluates the policy greedily on
the config's held-out seeds; :func:`export_policy` writes the fine-tuned model as a
directory any agent can load by path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentbench.errors import ConfigError

METHODS = ("ppo", "expert-iteration", "return-conditioned")


def make_trainer(data: dict[str, Any], output_dir: str | None = None) -> tuple[Any, bool]:
    """The trainer of ``data`` (``output_dir`` overrides the table's), and whether it
    resumed a run found there."""
    from agentbench.rlft.checkpoint import latest_checkpoint

    data = dict(data)
    if output_dir is not None:
        data["output_dir"] = str(output_dir)
    trainer_class, config = training_config(data)
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
    if hasattr(trainer, "update"):  # PPO
        if trainer.last_evaluation is not None and trainer.last_evaluation[0] == trainer.update:
            return records, trainer.last_evaluation[1]
        summary, _ = trainer.evaluate()
        return records, summary
    seeds = range(config.eval_seed, config.eval_seed + config.eval_episodes)
    summary, _ = trainer.evaluate(seeds)
    return records, summary


def export_policy(trainer: Any, path: str | Path) -> Path:
    """The fine-tuned policy as a model directory (LoRA adapters merged)."""
    if hasattr(trainer, "export_model"):  # PPO
        return Path(trainer.export_model(path))
    from agentbench.rlft.checkpoint import export_model

    return Path(export_model(trainer.generator.model, trainer.generator.tokenizer, path))
