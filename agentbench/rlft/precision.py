"""The arithmetic precision of training forward passes (``compute_dtype``).

Choice: **bf16 autocast over float32 master weights.** The weights, their
gradients and the optimizer state stay float32 (a bf16 weight has 8 bits of
mantissa: an update smaller than 1/256 of the weight is rounded away, which is why
the ``[model]`` table's ``dtype`` defaults to float32); inside the forward pass
``torch.autocast`` runs the matrix multiplications in bf16, and the backward pass
follows the same casts. The log-softmax over the vocabulary and the losses are
computed in float32 (the backends call ``.float()`` on the logits).

``"auto"`` picks bf16 where it is fast: CUDA devices that support it, and CPUs
whose kernels run bf16 matmuls natively (AVX-512-BF16 or AMX, with torch's
AVX-512 kernels active); float32 elsewhere (an AVX2 CPU emulates bf16, slower
than float32). The learning tests run in float32: they must pass identically
under different CPU kernels, and bf16 rounding makes the runs diverge sooner.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from agentbench.errors import ConfigError
from agentbench.models.transformers_backend import default_dtype
from agentbench.rlft.config import COMPUTE_DTYPES


def resolve_compute_dtype(name: str, device: torch.device) -> torch.dtype:
    """The dtype of forward-pass arithmetic for ``compute_dtype`` ``name`` on ``device``."""
    if name not in COMPUTE_DTYPES:
        raise ConfigError(f"compute_dtype {name!r} is not one of {', '.join(COMPUTE_DTYPES)}")
    if name == "auto":
        return default_dtype(device)  # bf16 where it runs natively
    return torch.bfloat16 if name == "bfloat16" else torch.float32


@contextmanager
def compute_precision(model: Any, compute_dtype: torch.dtype) -> Iterator[None]:
    """Run the forward passes inside the block in ``compute_dtype``: bf16 autocast when
    the model's weights are float32 and bf16 is asked for; as they are otherwise."""
    parameter = next(model.parameters())
    if compute_dtype == torch.float32 or parameter.dtype != torch.float32:
        yield
        return
    with torch.autocast(parameter.device.type, dtype=compute_dtype):
        yield


def set_gradient_checkpointing(model: Any, enabled: bool) -> None:
    """Turn activation (gradient) checkpointing of a transformers model on (``enabled``);
    False leaves the model as it is.

    On: in train mode each decoder layer keeps only its input, and its activations
    are recomputed during the backward pass (non-reentrant checkpointing, so LoRA
    adapters train under a frozen base, and dropout masks are replayed). Eval-mode
    passes (rollouts, old and reference log-probs) are unaffected.
    """
    if not enabled:
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ConfigError(f"{type(base).__name__} does not support gradient checkpointing")
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # the name from transformers 5.x on
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
