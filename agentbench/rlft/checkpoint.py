"""PPO checkpoints in safetensors and JSON only: never a pickle, never torch.load.

A checkpoint is everything that resuming needs to continue EXACTLY as if the run
had not stopped:

- the policy: LoRA adapter weights (peft ``save_pretrained``, safetensors) or the
  full weights (``model.safetensors``); the frozen reference is not saved, it is
  the starting model the caller hands in again;
- the value head (GAE only);
- optimizer and LR-scheduler state: tensors in ``optimizer.safetensors``, every
  other entry (step counts, hyper-parameters) in JSON;
- RNG states of every training process (one, or one per ``accelerate launch``
  process): the numpy Generator's ``bit_generator.state`` and the torch
  generators' byte states, as JSON;
- the update counter and the config as JSON.

Layout: ``<output_dir>/checkpoints/update_000010/``. A checkpoint is written to a
hidden staging directory and renamed into place when complete; ``latest.json``
is replaced last, so a run killed while saving resumes from the previous one.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from agentbench.errors import ConfigError

CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest.json"
CONFIG_FILE = "config.json"
TRAINER_FILE = "trainer_state.json"
FULL_WEIGHTS_FILE = "model.safetensors"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"  # peft's name for safetensors adapters
OPTIMIZER_TENSORS, OPTIMIZER_JSON = "optimizer.safetensors", "optimizer.json"
SCHEDULER_JSON = "scheduler.json"
RNG_JSON = "rng.json"


def checkpoint_name(update: int) -> str:
    return f"update_{update:06d}"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None when it has none."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    pointer = root / LATEST_FILE
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text(encoding="utf-8"))["checkpoint"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError(f"{pointer} is not a checkpoint pointer; delete it or the run") from None
    path = root / name
    if not (path / TRAINER_FILE).is_file():
        raise ConfigError(f"{pointer} names {path}, which is not a complete checkpoint")
    return path


# ---------------------------------------------------------------- model weights


def save_policy(model: Any, directory: Path, use_lora: bool) -> None:
    if use_lora:
        model.save_pretrained(str(directory), safe_serialization=True)
    else:
        save_model(model, str(directory / FULL_WEIGHTS_FILE))  # handles tied embeddings


def load_policy(model: Any, directory: Path, use_lora: bool) -> None:
    if use_lora:
        from peft import set_peft_model_state_dict

        path = directory / ADAPTER_WEIGHTS_FILE
        _require(path)
        result = set_peft_model_state_dict(model, load_file(str(path)))
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        if unexpected:
            raise ConfigError(
                f"adapter weights in {path} do not fit the model (unexpected {unexpected[:3]})"
            )
        return
    path = directory / FULL_WEIGHTS_FILE
    _require(path)
    missing, unexpected = load_model(model, str(path), strict=False)
    if unexpected or missing:
        raise ConfigError(
            f"weights in {path} do not fit the model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}); resume with the same base model"
        )


def export_model(model: Any, tokenizer: Any, directory: str | Path) -> Path:
    """Write a standalone Hugging Face model directory (config, safetensors weights,
    tokenizer) that every model name in agentbench accepts (``agentbench run`` with
    ``model = "<directory>"``, ``resolve_model``, ``PPOConfig.model``).

    LoRA adapters are merged into a copy of the model; ``model`` itself is left as
    it is. The directory is staged and renamed into place, so a reader never sees a
    half-written model.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    standalone = copy.deepcopy(model)
    if hasattr(standalone, "merge_and_unload"):  # a peft model: fold the adapters in
        standalone = standalone.merge_and_unload()

    def write(staging: Path) -> None:
        standalone.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))

    return write_directory(directory, write)


def write_directory(target: Path, write: Any) -> Path:
    """Fill a hidden staging directory beside ``target`` with ``write(staging)``, then
    rename it into place (replacing ``target``); on any error nothing is left behind."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        write(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


# ---------------------------------------------------------------- optimizer / scheduler


def state_dict_to_files(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON values."""
    tensors: dict[str, torch.Tensor] = {}
    entries: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        out: dict[str, Any] = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                name = f"state.{index}.{key}"
                tensors[name] = value.detach().cpu().contiguous()
                out[key] = {"tensor": name}
            else:
                out[key] = {"value": value}
        entries[str(index)] = out
    return tensors, {"state": entries, "param_groups": state["param_groups"]}


def state_dict_from_files(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], template: dict[str, Any]
) -> dict[str, Any]:
    """Rebuild an optimizer state_dict; ``template`` (the live optimizer's) restores tuples
    that JSON turned into lists (AdamW's betas, Adafactor's eps)."""
    state = {
        int(index): {
            key: tensors[item["tensor"]] if "tensor" in item else item["value"]
            for key, item in entry.items()
        }
        for index, entry in meta["state"].items()
    }
    groups = []
    for saved, live in zip(meta["param_groups"], template["param_groups"], strict=True):
        group = dict(saved)
        for key, value in live.items():
            if isinstance(value, tuple) and isinstance(group.get(key), list):
                group[key] = tuple(group[key])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def save_optimizer(optimizer: torch.optim.Optimizer, scheduler: Any, directory: Path) -> None:
    tensors, meta = state_dict_to_files(optimizer.state_dict())
    save_file(tensors, str(directory / OPTIMIZER_TENSORS))
    _write_json(directory / OPTIMIZER_JSON, meta)
    _write_json(directory / SCHEDULER_JSON, scheduler.state_dict())


def load_optimizer(optimizer: torch.optim.Optimizer, scheduler: Any, directory: Path) -> None:
    for name in (OPTIMIZER_TENSORS, OPTIMIZER_JSON, SCHEDULER_JSON):
        _require(directory / name)
    tensors = load_file(str(directory / OPTIMIZER_TENSORS))
    meta = _read_json(directory / OPTIMIZER_JSON)
    optimizer.load_state_dict(state_dict_from_files(tensors, meta, optimizer.state_dict()))
    scheduler_state = _read_json(directory / SCHEDULER_JSON)
    scheduler_state["lr_lambdas"] = [None] * len(scheduler_state.get("lr_lambdas", []))
    scheduler.load_state_dict(scheduler_state)


# ---------------------------------------------------------------- RNG


def rng_state(rng: np.random.Generator, torch_rngs: dict[str, torch.Generator]) -> dict[str, Any]:
    """One process's RNG states as JSON values (torch states as lists of bytes)."""
    return {
        "numpy": rng.bit_generator.state,
        "torch": {name: g.get_state().tolist() for name, g in torch_rngs.items()},
    }


def save_rng(states: list[dict[str, Any]], directory: Path) -> None:
    """The :func:`rng_state` of every training process, in rank order."""
    _write_json(directory / RNG_JSON, {"processes": states})


def load_rng(
    rng: np.random.Generator,
    torch_rngs: dict[str, torch.Generator],
    directory: Path,
    rank: int = 0,
    world_size: int = 1,
) -> None:
    """Restore process ``rank``'s RNG states; the run must resume with as many processes."""
    _require(directory / RNG_JSON)
    states = _read_json(directory / RNG_JSON).get("processes", [])
    if len(states) != world_size:
        raise ConfigError(
            f"the checkpoint {directory} was written by {len(states)} training process(es); "
            f"resume it with that many, not {world_size}"
        )
    state = states[rank]
    rng.bit_generator.state = state["numpy"]
    for name, generator in torch_rngs.items():
        generator.set_state(torch.tensor(state["torch"][name], dtype=torch.uint8))


# ---------------------------------------------------------------- whole checkpoint


def write_checkpoint(
    output_dir: str | Path,
    update: int,
    write_parts: Any,
    keep: int,
) -> Path:
    """Stage a checkpoint with ``write_parts(directory)``, move it into place, point
    ``latest.json`` at it, then delete all but the ``keep`` newest."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    target = write_directory(root / checkpoint_name(update), write_parts)
    _write_json(root / LATEST_FILE, {"checkpoint": target.name, "update": update})
    finished = sorted(p for p in root.glob("update_*") if p.is_dir())
    for old in finished[: max(0, len(finished) - keep)]:
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def read_checkpoint_config(directory: Path) -> dict[str, Any]:
    _require(directory / CONFIG_FILE)
    return _read_json(directory / CONFIG_FILE)


def _write_json(path: Path, data: Any) -> None:
    """Atomic JSON write (temporary file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"checkpoint file {path} is not valid JSON ({exc})") from None


def _require(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"checkpoint file {path} is missing; the checkpoint is incomplete")
