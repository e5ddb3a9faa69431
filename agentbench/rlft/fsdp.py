"""Fully sharded data parallelism (torch FSDP2, ``fully_shard``) for full fine-tuning.

With ``parallel = "fsdp"`` under a launcher (``accelerate launch --use_fsdp
--fsdp_version 2``, or ``torchrun``), each process holds 1/N of every weight, of its
gradient and of the AdamW state (``Shard(0)`` DTensors over a 1-D mesh of all
processes). Each decoder layer (the model's ``_no_split_modules`` classes, as
accelerate's transformer-based wrapping picks them, or accelerate's
``--fsdp_transformer_layer_cls_to_wrap``) is one FSDP unit, the root (embeddings,
final norm, LM head) another. For PPO everything else is what
:mod:`agentbench.rlft.distributed` does: each process plays its share of the episodes,
the episodes and token counts are shared, and the update equals the single-process
update on the whole batch. Expert iteration and return-conditioned training sample
every episode in every process (the same weights draw the same episodes) and split
each fine-tuning batch over the processes (:func:`agentbench.rlft.sft.train_on_targets`).

Where FSDP differs from the data-parallel path:

- **gradients** are summed by FSDP's reduce-scatter after each backward pass (a
  SUM, not FSDP's default mean: the loss is already divided by the global token
  count), so every process must run the same number of forward/backward passes.
  Processes with fewer micro-batches run :func:`idle_backward` passes (a one-token
  forward whose loss is multiplied by 0) until the counts match.
- **generation and scoring** run on gathered weights (:func:`unsharded`): every
  layer is all-gathered once and kept whole until the block ends, so processes can
  generate different numbers of tokens (an all-gather per forward pass would need
  the same number of passes everywhere). Peak memory there is one full copy of
  the weights, plus the shards of the gradients and optimizer state.
- **checkpoints** hold the gathered full state (:func:`gathered_weights`,
  :func:`gathered_optimizer_state`): the same ``model.safetensors`` and
  ``optimizer.safetensors`` a single process writes, written by rank 0 (loadable
  and exportable anywhere; a PPO run resumes with as many processes as wrote its
  RNG states). Loading cuts each process's shard out of the full tensors
  (:func:`load_full_weights`, :func:`shard_optimizer_state`), exactly: a resumed
  run makes the same next update as an uninterrupted one.

Refused, each with one line: LoRA (FSDP is for full fine-tuning; LoRA's trainable
adapters are small enough for the data-parallel path), Adafactor (transformers'
Adafactor mixes plain tensors into DTensor arithmetic and fails), accelerate's FSDP1
(``fsdp_version 1``), its parameter offload and its activation checkpointing (the
config's ``gradient_checkpointing`` does that). Not read from accelerate's FSDP
settings: the state-dict type (checkpoints are always gathered), the wrap policy
(always per layer), mixed precision (the config's ``compute_dtype``). Gloo (CPU)
cannot reduce with ``PREMUL_SUM``, so the reductions are forced to plain sums, which
NCCL runs as well.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from agentbench.errors import ConfigError
from agentbench.rlft.distributed import DataParallel

PARALLEL_MODES = ("data", "fsdp")
PARALLEL_HELP = (
    '"data": each process holds the whole model and the gradients are summed '
    '(agentbench.rlft.distributed); "fsdp": weights, gradients and AdamW state sharded over '
    "the processes (torch FSDP2, agentbench.rlft.fsdp; full fine-tuning with adamw only). "
    "Both need a launcher (accelerate launch, torchrun); a single process ignores it"
)


def check_parallel_setting(parallel: str, use_lora: bool, optimizer: str = "adamw") -> None:
    """The config's ``parallel`` setting, with what FSDP cannot train refused in one line."""
    if parallel not in PARALLEL_MODES:
        raise ConfigError(f"parallel {parallel!r} is not one of {', '.join(PARALLEL_MODES)}")
    if parallel != "fsdp":
        return
    if use_lora:
        raise ConfigError(
            'parallel = "fsdp" shards full fine-tuning; LoRA ([model] use_lora = true) runs '
            'with parallel = "data"'
        )
    if optimizer != "adamw":
        raise ConfigError(
            f'parallel = "fsdp" needs optimizer = "adamw" (got {optimizer!r}): transformers\' '
            "Adafactor cannot step sharded (DTensor) weights"
        )


def use_fsdp(parallel: str, processes: DataParallel) -> bool:
    """Whether this run shards its model: ``parallel = "fsdp"`` and more than one process.

    A launch with accelerate's ``--use_fsdp`` must say ``parallel = "fsdp"`` (one source
    of truth, and no silent data-parallel run the launcher did not ask for)."""
    launcher_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
    if launcher_fsdp and parallel != "fsdp" and processes.active:
        raise ConfigError(
            'accelerate launch --use_fsdp needs parallel = "fsdp" in the training config '
            f"(got {parallel!r}); or launch with --multi_gpu for data parallelism"
        )
    if parallel != "fsdp" or not processes.active:
        return False
    if launcher_fsdp and os.environ.get("FSDP_VERSION", "2") != "2":
        raise ConfigError(
            f"accelerate's FSDP version {os.environ['FSDP_VERSION']} is not supported; "
            "launch with --fsdp_version 2 (torch's fully_shard)"
        )
    if os.environ.get("FSDP_OFFLOAD_PARAMS", "false").lower() == "true":
        raise ConfigError("FSDP parameter offload (--fsdp_offload_params true) is not supported")
    if os.environ.get("FSDP_ACTIVATION_CHECKPOINTING", "false").lower() == "true":
        raise ConfigError(
            "accelerate's --fsdp_activation_checkpointing is not read; set "
            "gradient_checkpointing = true in the training config instead"
        )
    return True


def _layer_classes(model: Any) -> set[str]:
    """The module classes that become FSDP units: accelerate's
    ``--fsdp_transformer_layer_cls_to_wrap`` when given, else the model's
    ``_no_split_modules`` (its decoder layer)."""
    named = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")
    classes = {name.strip() for name in named.split(",") if name.strip()}
    return classes or set(getattr(model, "_no_split_modules", None) or [])


def shard_model(model: Any, processes: DataParallel) -> Any:
    """``model`` sharded in place over all processes (``fully_shard`` on each layer,
    then the root); its shards move to this process's device."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    device = processes.device or torch.device("cpu")
    mesh = init_device_mesh(device.type, (processes.world_size,))
    classes = _layer_classes(model)
    layers = [m for m in model.modules() if type(m).__name__ in classes]
    if not layers:
        raise ConfigError(
            f"found no layer of the classes {sorted(classes)} to shard in "
            f"{type(model).__name__}; name them with --fsdp_transformer_layer_cls_to_wrap"
        )
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for unit in _units(model):  # each unit's own setting: none is inherited
        unit.set_gradient_divide_factor(1.0)  # the loss is already a global mean: sum
        unit.set_force_sum_reduction_for_comms(True)  # gloo has no PREMUL_SUM
    return model


def is_sharded(model: Any) -> bool:
    if not torch.distributed.is_available():  # a torch build without distributed
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _units(model: Any) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextmanager
def unsharded(model: Any) -> Iterator[None]:
    """Inside the block the model's weights are whole on every process (all-gathered
    once, on entry: every process must enter), so forward passes communicate nothing
    and processes may run different numbers of them (generation). Resharded on exit.
    A model that is not sharded passes through."""
    if not is_sharded(model):
        yield
        return
    units = _units(model)
    for unit in units:
        unit.unshard()
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for unit in units:
            if unit is not model:  # the root never reshards after forward (FSDP's default)
                unit.set_reshard_after_forward(True, recurse=False)
            unit.reshard()


@contextmanager
def generating(generator: Any) -> Iterator[None]:
    """:func:`unsharded` for the generator's model, with the generator's prefix KV
    cache emptied when sharded: gathering allocates the weights anew, so the cache's
    fingerprint (data pointers and versions) cannot be trusted to see an update."""
    if is_sharded(generator.model):
        generator.clear_prefix_cache()
    with unsharded(generator.model):
        yield


def idle_backward(model: Any) -> None:
    """A forward and backward pass that adds nothing to the gradients (loss x 0) but
    takes part in FSDP's all-gathers and reduce-scatters, for a process that has run
    out of micro-batches before the others."""
    device = next(model.parameters()).device
    logits = model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device),
                   use_cache=False).logits  # fmt: skip
    (logits.float().sum() * 0.0).backward()


def clip_gradients(parameters: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` over sharded (DTensor) and whole parameters together: the
    global norm, the same on every process."""
    from torch.distributed.tensor import DTensor

    sharded = [p for p in parameters if isinstance(p, DTensor)]
    if not sharded:
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    whole = [p for p in parameters if not isinstance(p, DTensor)]
    norms = []
    for group in (sharded, whole):
        norm = torch.nn.utils.get_total_norm([p.grad for p in group if p.grad is not None])
        norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    total = torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))
    for group in (sharded, whole):
        if group:
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total


# ---------------------------------------------------------------- checkpoints


def _tied_groups(model: Any) -> list[list[str]]:
    """The state-dict names that share one parameter (tied embeddings), each group
    with more than one name."""
    names: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
    return [group for group in names.values() if len(group) > 1]


def gathered_weights(model: Any, processes: DataParallel) -> dict[str, torch.Tensor] | None:
    """The full weights of a sharded model on the main process (CPU tensors, tied
    names once), None on the others; every process must call it. None for a model
    that is not sharded."""
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if not processes.is_main:
        return None
    for group in _tied_groups(model):
        for alias in group[1:]:
            full.pop(alias, None)
    return {name: tensor.contiguous() for name, tensor in full.items()}


def load_full_weights(model: Any, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Cut each process's shards out of full weights read from ``path``."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    tensors = dict(tensors)
    for group in _tied_groups(model):
        present = [name for name in group if name in tensors]
        for name in group:
            if present and name not in tensors:
                tensors[name] = tensors[present[0]]
    expected = set(model.state_dict())
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        raise ConfigError(
            f"weights in {path} do not fit the model (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}); resume with the same base model"
        )
    set_model_state_dict(model, tensors, options=StateDictOptions(full_state_dict=True))


def gathered_optimizer_state(
    optimizer: torch.optim.Optimizer, processes: DataParallel
) -> dict[str, Any] | None:
    """The optimizer's state_dict with every sharded tensor gathered whole (on the main
    process; None on the others); every process must call it. None when nothing is
    sharded."""
    from torch.distributed.tensor import DTensor

    state = optimizer.state_dict()
    entries = state["state"]
    if not any(isinstance(v, DTensor) for entry in entries.values() for v in entry.values()):
        return None
    gathered: dict[int, dict[str, Any]] = {}
    for index in sorted(entries):  # the same order everywhere: the gathers pair up
        entry = {}
        for key in sorted(entries[index]):
            value = entries[index][key]
            if isinstance(value, DTensor):
                value = value.full_tensor().cpu()
            entry[key] = value
        gathered[index] = entry
    if not processes.is_main:
        return None
    return {"state": gathered, "param_groups": state["param_groups"]}


def shard_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict:
    """A full optimizer state_dict (:func:`gathered_optimizer_state`, or a single
    process's) with each sharded parameter's tensors cut to this process's shard."""
    if not torch.distributed.is_available():
        return state
    from torch.distributed.tensor import DTensor, distribute_tensor

    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    entries = {}
    for index, entry in state["state"].items():
        parameter = parameters[int(index)]
        if isinstance(parameter, DTensor):
            entry = {
                key: distribute_tensor(
                    value.to(parameter.device),
                    parameter.device_mesh,
                    parameter.placements,
                    src_data_rank=None,  # every process holds the full tensor: no traffic
                )
                if torch.is_tensor(value) and value.shape == parameter.shape
                else value
                for key, value in entry.items()
            }
        entries[index] = entry
    return {**state, "state": entries}
