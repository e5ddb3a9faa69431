"""A non-finite loss or gradient norm never reaches the weights.

Every trainer (PPO, and :func:`agentbench.rlft.sft.train_on_targets`, the
cross-entropy loop of SFT, expert iteration and return-conditioned training) asks
:func:`finite_step` after clipping the gradients of an optimizer step. When the
loss of any of its micro-batches or the gradient norm is inf or NaN, the trainer
skips that optimizer step AND its scheduler step (the step is as if its minibatch
had not been there: the weights and the optimizer state are untouched), warns
with :func:`warn_skipped`, and counts it in the logged metrics (``skipped_steps``).
The logged losses still include what the skipped step computed, so the log shows
the NaN that was kept out.

When every optimizer step of a PPO update or of an SFT epoch is non-finite, nothing
can be learnt from going on: the trainer stops with :class:`NonFiniteTrainingError`,
leaving the weights as they were before that update or epoch. Nothing changes when
every number is finite: the checks only read values already computed.
"""

from __future__ import annotations

import math
import warnings

import torch

from agentbench.errors import AgentbenchError


class NonFiniteTrainingError(AgentbenchError):
    """Every optimizer step of an update (or epoch) had a non-finite loss or gradient norm."""


def finite_step(losses_finite: bool, grad_norm: torch.Tensor | float) -> bool:
    """Whether an optimizer step may be taken: finite losses and a finite gradient norm."""
    return losses_finite and math.isfinite(float(grad_norm))


def all_finite(loss: torch.Tensor) -> bool:
    """Whether every element of ``loss`` is finite (read only; no gradient)."""
    return bool(torch.isfinite(loss.detach()).all())


def warn_skipped(where: str, grad_norm: torch.Tensor | float) -> None:
    """One line saying which optimizer step was skipped and why."""
    warnings.warn(
        f"{where}: non-finite loss or gradient norm ({float(grad_norm)}); skipped the "
        "optimizer step, the weights are unchanged",
        RuntimeWarning,
        stacklevel=3,
    )


def refuse_all_skipped(where: str, skipped: int, steps: int, advice: str) -> None:
    """Stop when every one of ``steps`` optimizer steps was skipped."""
    if steps and skipped == steps:
        raise NonFiniteTrainingError(
            f"{where}: all {steps} optimizer steps had a non-finite loss or gradient norm; "
            f"stopped with the weights as they were before it ({advice})"
        )
