"""selected_logprobs: the log-softmax of chosen tokens, in chunks, with its own backward.

It must give what ``log_softmax(logits / T)[row, target]`` gives, in value and in
gradient, for any dtype, temperature, and rows read by several pairs or by none.
"""

from __future__ import annotations

import pytest
import torch

from agentbench.models import logprobs as module
from agentbench.models.logprobs import selected_logprobs


def _case(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(9, 13, generator=g, dtype=torch.float64)).to(dtype)
    rows = torch.tensor([0, 2, 2, 5, 8, 8, 1, 2])  # row 2 read three times, 3/4/6/7 never
    targets = torch.tensor([3, 1, 1, 12, 0, 4, 2, 7])
    weights = torch.randn(len(rows), generator=g, dtype=torch.float64)
    return logits.requires_grad_(True), rows, targets, weights


def _reference(logits: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor, t: float):
    return torch.log_softmax(logits.double() / t, dim=-1)[rows, targets]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize(
    ("dtype", "tolerance", "grad_rtol"),
    # bf16: both gradients are rounded to bf16, from float32 and from float64 sums
    [(torch.float64, 1e-12, 0.0), (torch.float32, 1e-5, 0.0), (torch.bfloat16, 1e-5, 1e-2)],
)
def test_values_and_gradients_match_log_softmax(
    dtype: torch.dtype,
    tolerance: float,
    grad_rtol: float,
    temperature: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(module, "CHUNK_ELEMENTS", 13 * 4)  # chunks of 4 rows: 3 chunks
    logits, rows, targets, weights = _case(dtype)
    ours = selected_logprobs(logits, rows, targets, temperature)
    assert ours.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    (ours.double() * weights).sum().backward()
    ours_grad = logits.grad.clone()
    logits.grad = None
    expected = _reference(logits, rows, targets, temperature)
    (expected * weights).sum().backward()
    assert torch.allclose(ours.double(), expected, atol=tolerance, rtol=0)
    assert ours_grad.dtype == dtype
    assert torch.allclose(ours_grad.double(), logits.grad.double(), atol=tolerance, rtol=grad_rtol)


def test_gradcheck_in_float64() -> None:
    logits, rows, targets, _ = _case(torch.float64, seed=1)
    assert torch.autograd.gradcheck(lambda z: selected_logprobs(z, rows, targets, 0.9), (logits,))


def test_the_logits_are_not_modified_in_place() -> None:
    logits, rows, targets, _ = _case(torch.float32)
    before = logits.detach().clone()
    selected_logprobs(logits, rows, targets, 0.5).sum().backward()
    assert torch.equal(logits.detach(), before)


def test_bad_shapes_are_refused() -> None:
    logits, rows, targets, _ = _case(torch.float32)
    with pytest.raises(ValueError, match="positions, vocab"):
        selected_logprobs(logits[None], rows, targets)
    with pytest.raises(ValueError, match="must be 1-D and match"):
        selected_logprobs(logits, rows, targets[:-1])
