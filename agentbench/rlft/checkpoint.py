"""Training checkpoints in safetensors and JSON only: never a pickle, never torch.load.

PPO (per update), expert iteration and return-conditioned training (per
iteration) and SFT (per epoch) all write theirs with this module. A checkpoint is
everything that resuming needs to continue EXACTLY as if the run had not stopped
(for PPO):

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

Layout: ``<output_dir>/checkpoints/update_000010/`` (``iteration_...``,
``epoch_...``). A checkpoint is written to a hidden staging directory and renamed
into place when complete, with ``files.json`` listing every file and its size;
``latest.json`` is replaced last, so a run killed while saving resumes from the
previous one.

A checkpoint damaged afterwards (a truncated, zeroed or random ``.safetensors``, a
broken JSON file) is a :class:`CorruptCheckpointError` naming the file, in one
line. :func:`resume_checkpoint` checks every file of the newest checkpoint before
anything is loaded (:func:`verify_checkpoint`) and falls back to the newest intact
one, with a warning naming each checkpoint it skipped.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_file, save_model

from agentbench import io
from agentbench.errors import ConfigError
from agentbench.io import write_directory
from agentbench.rlft import fsdp

CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest.json"
CONFIG_FILE = "config.json"
TRAINER_FILE = "trainer_state.json"
FULL_WEIGHTS_FILE = "model.safetensors"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"  # peft's name for safetensors adapters
OPTIMIZER_TENSORS, OPTIMIZER_JSON = "optimizer.safetensors", "optimizer.json"
SCHEDULER_JSON = "scheduler.json"
RNG_JSON = "rng.json"
FILES_JSON = "files.json"  # every file of the checkpoint and its size in bytes
_NAME = re.compile(r"^[a-z]+_(\d+)$")  # update_000010, iteration_000002, epoch_000001


class CorruptCheckpointError(ConfigError):
    """A checkpoint file is missing or unreadable (truncated, zeroed, not JSON, ...)."""


def checkpoint_name(number: int, unit: str = "update") -> str:
    return f"{unit}_{number:06d}"


def checkpoints_newest_first(output_dir: str | Path) -> list[Path]:
    """The checkpoint directories of a run: the one ``latest.json`` names (when it names
    one), then the others from the highest number down."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    found = sorted(
        (p for p in root.glob("*_*") if p.is_dir() and _NAME.match(p.name)),
        key=lambda p: int(_NAME.match(p.name).group(1)),  # type: ignore[union-attr]
        reverse=True,
    )
    pointed = _pointer_target(root)
    if pointed is not None and pointed in found:
        found.remove(pointed)
        found.insert(0, pointed)
    return found


def _pointer_target(root: Path) -> Path | None:
    pointer = root / LATEST_FILE
    try:
        name = json.loads(pointer.read_text(encoding="utf-8"))["checkpoint"]
        return root / str(name)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):  # ValueError: bad JSON or UTF-8
        warnings.warn(f"{pointer} is unreadable; using the checkpoint directories", stacklevel=3)
        return None


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (not yet checked file by file, see
    :func:`resume_checkpoint`), or None when it has none."""
    for path in checkpoints_newest_first(output_dir):
        if (path / TRAINER_FILE).is_file():
            return path
    return None


def verify_checkpoint(directory: Path) -> None:
    """A CorruptCheckpointError naming the first file of ``directory`` that is missing,
    of the wrong size (``files.json``), or does not parse (safetensors header and
    extent, JSON)."""
    _require(directory / TRAINER_FILE)
    listed = directory / FILES_JSON
    if listed.is_file():  # checkpoints written before files.json have none
        for name, size in read_json(listed).items():
            path = directory / name
            _require(path)
            if path.stat().st_size != size:
                raise CorruptCheckpointError(
                    f"checkpoint file {path} has {path.stat().st_size} bytes, not the "
                    f"{size} written; the checkpoint is damaged"
                )
    for path in sorted(directory.rglob("*")):
        if path.suffix == ".safetensors":
            try:
                with safe_open(str(path), "pt") as handle:
                    list(handle.keys())
            except (SafetensorError, OSError) as exc:
                raise _unreadable(path, exc) from None
        elif path.suffix == ".json":
            read_json(path)


def resume_checkpoint(
    output_dir: str | Path, verify: Callable[[Path], None] = verify_checkpoint
) -> Path | None:
    """The newest checkpoint of a run that passes ``verify``, or None when it has none.

    Each damaged checkpoint passed over is a warning naming it and why; when none is
    intact, a CorruptCheckpointError listing them."""
    skipped: list[str] = []  # "name (why)"
    for directory in checkpoints_newest_first(output_dir):
        try:
            verify(directory)
        except CorruptCheckpointError as exc:
            warnings.warn(f"skipped checkpoint {directory}: {exc}", stacklevel=2)
            skipped.append(f"{directory.name} ({exc})")
            continue
        if skipped:
            warnings.warn(f"resuming from {directory}, the newest intact checkpoint", stacklevel=2)
        return directory
    if skipped:
        raise CorruptCheckpointError(
            f"{output_dir} holds no intact checkpoint: {'; '.join(skipped)}"
        )
    return None


def read_progress(directory: Path, key: str) -> int:
    """The counter ``key`` (update, iteration, epoch) of a checkpoint's trainer state."""
    path = directory / TRAINER_FILE
    state = read_json(path)
    if not isinstance(state, dict) or not isinstance(state.get(key), int):
        raise CorruptCheckpointError(f"checkpoint file {path} holds no {key} counter")
    return int(state[key])


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file; missing or unreadable is a CorruptCheckpointError naming it."""
    _require(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: Exception) -> CorruptCheckpointError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return CorruptCheckpointError(f"checkpoint file {path} is unreadable ({reason})")


# ---------------------------------------------------------------- model weights


def is_lora(model: Any) -> bool:
    """Whether ``model`` is a peft model (its checkpoints hold the adapters only)."""
    return hasattr(model, "peft_config")


def save_policy(
    model: Any,
    directory: Path,
    use_lora: bool,
    weights: dict[str, torch.Tensor] | None = None,
) -> None:
    """The adapters, or the full weights: the model's own, or ``weights`` gathered from
    a sharded model (:func:`agentbench.rlft.fsdp.gathered_weights`)."""
    if use_lora:
        model.save_pretrained(str(directory), safe_serialization=True)
    elif weights is not None:
        save_file(weights, str(directory / FULL_WEIGHTS_FILE), metadata={"format": "pt"})
    else:
        save_model(model, str(directory / FULL_WEIGHTS_FILE))  # handles tied embeddings


def load_policy(model: Any, directory: Path, use_lora: bool) -> None:
    if use_lora:
        from peft import set_peft_model_state_dict

        path = directory / ADAPTER_WEIGHTS_FILE
        result = set_peft_model_state_dict(model, read_tensors(path))
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        if unexpected:
            raise ConfigError(
                f"adapter weights in {path} do not fit the model (unexpected {unexpected[:3]})"
            )
        return
    path = directory / FULL_WEIGHTS_FILE
    _require(path)
    if fsdp.is_sharded(model):  # each process keeps its shards of the full weights
        fsdp.load_full_weights(model, read_tensors(path), path)
        return
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except SafetensorError as exc:
        raise _unreadable(path, exc) from None
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


def export_checkpoint_weights(
    model_config: Any, tokenizer: Any, checkpoint: Path, directory: str | Path
) -> Path:
    """:func:`export_model` of the full weights in a checkpoint (a sharded policy's:
    no process holds them whole), into a model built from ``model_config``."""
    from transformers import AutoModelForCausalLM

    path = checkpoint / FULL_WEIGHTS_FILE
    tensors = read_tensors(path)
    dtype = next(iter(tensors.values())).dtype
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(model_config, dtype=dtype)
    load_policy(model, checkpoint, use_lora=False)
    return export_model(model, tokenizer, directory)


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


def save_optimizer(
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    directory: Path,
    state: dict[str, Any] | None = None,
) -> None:
    """The optimizer's state (or ``state``, gathered from a sharded one:
    :func:`agentbench.rlft.fsdp.gathered_optimizer_state`) and the scheduler's."""
    tensors, meta = state_dict_to_files(optimizer.state_dict() if state is None else state)
    save_file(tensors, str(directory / OPTIMIZER_TENSORS))
    io.write_json(directory / OPTIMIZER_JSON, meta)
    io.write_json(directory / SCHEDULER_JSON, scheduler.state_dict())


def load_optimizer(optimizer: torch.optim.Optimizer, scheduler: Any, directory: Path) -> None:
    for name in (OPTIMIZER_TENSORS, OPTIMIZER_JSON, SCHEDULER_JSON):
        _require(directory / name)
    tensors = read_tensors(directory / OPTIMIZER_TENSORS)
    meta = read_json(directory / OPTIMIZER_JSON)
    state = state_dict_from_files(tensors, meta, optimizer.state_dict())
    optimizer.load_state_dict(fsdp.shard_optimizer_state(optimizer, state))
    scheduler_state = read_json(directory / SCHEDULER_JSON)
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
    io.write_json(directory / RNG_JSON, {"processes": states})


def load_rng(
    rng: np.random.Generator,
    torch_rngs: dict[str, torch.Generator],
    directory: Path,
    rank: int = 0,
    world_size: int = 1,
) -> None:
    """Restore process ``rank``'s RNG states; the run must resume with as many processes."""
    _require(directory / RNG_JSON)
    states = read_json(directory / RNG_JSON).get("processes", [])
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
    unit: str = "update",
) -> Path:
    """Stage a checkpoint with ``write_parts(directory)`` (plus ``files.json``), move it
    into place, point ``latest.json`` at it, then delete all but the ``keep`` newest.
    ``unit`` names what ``update`` counts (update, iteration, epoch)."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)

    def write(directory: Path) -> None:
        write_parts(directory)
        sizes = {
            p.relative_to(directory).as_posix(): p.stat().st_size
            for p in sorted(directory.rglob("*"))
            if p.is_file()
        }
        io.write_json(directory / FILES_JSON, sizes)

    target = write_directory(root / checkpoint_name(update, unit), write)
    io.write_json(root / LATEST_FILE, {"checkpoint": target.name, unit: update})
    finished = sorted(p for p in root.glob(f"{unit}_*") if p.is_dir())
    for old in finished[: max(0, len(finished) - keep)]:
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def read_checkpoint_config(directory: Path) -> dict[str, Any]:
    _require(directory / CONFIG_FILE)
    return read_json(directory / CONFIG_FILE)


def truncate_metrics(path: Path, key: str, last: int) -> None:
    """Drop the metric lines whose ``key`` (update, iteration) is after ``last``, the
    checkpoint resumed from: the resumed run redoes them."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)[key] <= last:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            break  # a line cut by the kill: nothing after it is trustworthy
    io.write_atomic(path, "".join(line + "\n" for line in kept))


def read_json(path: Path) -> Any:
    """A checkpoint's JSON file; missing or unreadable is a CorruptCheckpointError."""
    _require(path)
    return io.read_json(path, "checkpoint file", CorruptCheckpointError)


def _require(path: Path) -> None:
    if not path.is_file():
        raise CorruptCheckpointError(
            f"checkpoint file {path} is missing; the checkpoint is incomplete"
        )
