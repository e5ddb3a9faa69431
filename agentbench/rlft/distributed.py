"""Data parallelism for the PPO trainer: one process per device under ``accelerate launch``.

Launched with ``accelerate launch --multi_gpu --num_processes N`` (or ``torchrun``;
on a machine without CUDA the processes talk over gloo on the CPU), every process
plays its share of each update's episodes (seeds ``rank::N``), and the processes
then share what the update needs:

- the episodes themselves (JSON, gathered to every process), so rewards, the
  Monte-Carlo baseline, metrics and evaluations are computed over ALL episodes;
- token counts, so each process divides its summed token losses by the global
  count of the minibatch;
- the gradients, summed over processes before clipping and the optimizer step.

The result is the update a single process would make on the whole batch (up to
float summation order), and since every process starts from the same weights
(the same seed) and applies the same summed gradient, the weights stay identical
everywhere. Only the main process (rank 0) writes files. The model is not
wrapped in DDP: processes may run different numbers of micro-batches (tic-tac-toe
episodes differ in length), which DDP's per-backward all-reduce does not allow.

Without a launcher (``WORLD_SIZE`` unset or 1) everything here is a no-op and
accelerate is not imported. With ``parallel = "fsdp"`` the same sharing of episodes
and counts holds, but the weights, gradients and optimizer state are sharded across
the processes (:mod:`agentbench.rlft.fsdp`).
"""

from __future__ import annotations

import atexit
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")


@dataclass(frozen=True)
class DataParallel:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None  # the launcher's device for this process (None: single)

    @classmethod
    def from_environment(cls) -> DataParallel:
        """The launcher's process group (accelerate / torchrun env vars), or a single process."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        from accelerate import PartialState

        # Without CUDA, accelerate only sets up a CPU (gloo) group when told cpu=True.
        state = PartialState(cpu=not torch.cuda.is_available())
        # Registered after the group exists (atexit runs last-in first-out): it is torn
        # down before what was registered earlier. A second registration is a no-op.
        atexit.register(destroy_process_group)
        return cls(state.process_index, state.num_processes, torch.device(state.device))

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's share of ``items``: every world_size-th one, from its rank."""
        return list(items)[self.rank :: self.world_size]

    def _comm(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` where the backend can send it (NCCL: this process's GPU)."""
        if torch.distributed.get_backend() == "nccl":
            return tensor.to(self.device)
        return tensor

    def sum(self, values: Sequence[float]) -> np.ndarray:
        """Element-wise sum of ``values`` over processes (float64)."""
        array = np.asarray(values, dtype=np.float64)
        if not self.active:
            return array
        tensor = self._comm(torch.from_numpy(array.copy()))
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor.cpu().numpy()

    def gather_json(self, value: Any) -> list[Any]:
        """``value`` (JSON-able) of every process, in rank order, on every process.

        Sent as UTF-8 JSON bytes in a padded uint8 tensor (gloo and NCCL both carry
        those); nothing is pickled.
        """
        if not self.active:
            return [value]
        data = torch.frombuffer(bytearray(json.dumps(value).encode("utf-8")), dtype=torch.uint8)
        length = self._comm(torch.tensor([data.numel()], dtype=torch.int64))
        lengths = [torch.zeros_like(length) for _ in range(self.world_size)]
        torch.distributed.all_gather(lengths, length)
        longest = int(max(int(n) for n in lengths))
        padded = torch.zeros(longest, dtype=torch.uint8)
        padded[: data.numel()] = data
        padded = self._comm(padded)
        buffers = [torch.zeros_like(padded) for _ in range(self.world_size)]
        torch.distributed.all_gather(buffers, padded)
        return [
            json.loads(bytes(buffer[: int(n)].cpu().numpy()).decode("utf-8"))
            for buffer, n in zip(buffers, lengths, strict=True)
        ]

    def sum_gradients(self, parameters: Sequence[torch.Tensor]) -> None:
        """Replace each parameter's gradient by its sum over processes (one flat all-reduce).

        A parameter without a gradient on this process (no micro-batch touched it)
        contributes zeros.
        """
        if not self.active or not parameters:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = self._comm(torch.cat([g.reshape(-1).to(torch.float32) for g in grads]))
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        offset = 0
        for parameter, grad in zip(parameters, grads, strict=True):
            size = grad.numel()
            parameter.grad = flat[offset : offset + size].view_as(grad).to(grad.device, grad.dtype)
            offset += size

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()


def destroy_process_group() -> None:
    """Tear down the launcher's process group while the interpreter is still whole.

    A process that exits with its gloo group alive leaves the group's worker threads
    to the interpreter's finalization, and under load one of them is still joinable
    when its destructor runs: the process dies of SIGABRT ("terminate called without
    an active exception") after the run has finished. Registered with ``atexit`` by
    :meth:`DataParallel.from_environment`; a no-op when the group is gone already."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
