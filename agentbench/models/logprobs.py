"""Log-probabilities of chosen tokens from logits, without float32 copies of the logits.

Training needs ``log softmax(logits / T)[target]`` at every completion token. Written
as ``logits.float() / T`` then ``logsumexp``, autograd keeps several (positions x
vocab) float32 tensors alive at once: the cast, the division, logsumexp's saved input,
and in the backward pass a dense gradient for each. With SmolLM2's 49,152-token
vocabulary that is 0.2 MB per position per copy: over a packed 50-step episode (705
completion tokens) the log-softmax alone peaked at about 0.7 GB, more than the
checkpointed transformer layers.

:func:`selected_logprobs` computes the same numbers in row chunks: float32 only for one
chunk at a time, the logits themselves (in their own dtype) and one float per row kept
for the backward pass, which writes the gradient straight into the logits' dtype. It is
an ``autograd.Function`` with its own backward:

    d logp_j / d z_{n,v} = ([v = t_j] - softmax(z_n / T)_v) / T   for the pair j at row n

summed over the pairs that read row ``n`` (several pairs may read one row).
"""

from __future__ import annotations

from typing import Any

import torch

CHUNK_ELEMENTS = 1 << 23  # float32 elements of one chunk's temporaries (32 MB)


def _chunk_rows(vocab: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, vocab))


def _precision(logits: torch.Tensor) -> torch.dtype:
    """float32, or the logits' own dtype where that is wider (float64)."""
    return torch.promote_types(logits.dtype, torch.float32)


def _log_norms(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logsumexp(logits[n] / T)`` per row, in float32, one chunk of rows at a time."""
    out = torch.empty(logits.shape[0], dtype=_precision(logits), device=logits.device)
    step = _chunk_rows(logits.shape[1])
    for start in range(0, logits.shape[0], step):
        chunk = logits[start : start + step].to(out.dtype)
        if temperature != 1.0:
            chunk = chunk / temperature
        out[start : start + step] = chunk.logsumexp(dim=-1)
    return out


class _SelectedLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        logits: torch.Tensor,
        rows: torch.Tensor,
        targets: torch.Tensor,
        temperature: float,
    ) -> torch.Tensor:
        log_norms = _log_norms(logits, temperature)
        picked = logits[rows, targets].to(log_norms.dtype) / temperature
        ctx.save_for_backward(logits, rows, targets, log_norms)
        ctx.temperature = temperature
        return picked - log_norms[rows]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        logits, rows, targets, log_norms = ctx.saved_tensors
        temperature = ctx.temperature
        grad = grad.to(log_norms.dtype) / temperature
        # Each row's total weight: the softmax term is subtracted once per pair reading it.
        weight = torch.zeros(logits.shape[0], dtype=log_norms.dtype, device=logits.device)
        weight.index_add_(0, rows, grad)
        out = torch.empty_like(logits)
        step = _chunk_rows(logits.shape[1])
        for start in range(0, logits.shape[0], step):
            chunk = logits[start : start + step].to(log_norms.dtype, copy=True)
            if temperature != 1.0:
                chunk /= temperature
            chunk -= log_norms[start : start + step, None]
            chunk.exp_().mul_(-weight[start : start + step, None])
            # The one-hot term, added at full precision before the cast to the logits' dtype.
            mine = (rows >= start) & (rows < start + chunk.shape[0])
            chunk.index_put_((rows[mine] - start, targets[mine]), grad[mine], accumulate=True)
            out[start : start + step] = chunk
        return out, None, None, None


def selected_logprobs(
    logits: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``log_softmax(logits[rows[j]] / temperature)[targets[j]]`` for each pair ``j``, in
    float32 (float64 for float64 logits), with gradients to ``logits`` when it requires them.

    ``logits`` is (positions, vocab) in any floating dtype; ``rows`` and ``targets`` are
    1-D integer tensors of the same length (a row may be read by several pairs). The
    float32 temporaries span one chunk of rows at a time (see the module docstring).
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (positions, vocab), got shape {tuple(logits.shape)}")
    if rows.shape != targets.shape or rows.dim() != 1:
        raise ValueError(
            f"rows {tuple(rows.shape)} and targets {tuple(targets.shape)} must be 1-D and match"
        )
    return _SelectedLogprobs.apply(logits, rows, targets, float(temperature))
