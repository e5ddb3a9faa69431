"""compute_dtype: bf16 autocast over float32 master weights (agentbench.rlft.precision)."""

from __future__ import annotations

import warnings

import pytest
import torch

from agentbench.errors import ConfigError
from agentbench.models.tiny import tiny_generator
from agentbench.models.transformers_backend import bf16_is_fast, resolve_dtype
from agentbench.rlft.config import PPOConfig
from agentbench.rlft.precision import compute_precision, resolve_compute_dtype
from agentbench.rlft.sft import SFTConfig, train_on_targets

CPU = torch.device("cpu")


def test_compute_dtype_names_resolve_and_a_bad_one_is_refused():
    assert resolve_compute_dtype("float32", CPU) == torch.float32
    assert resolve_compute_dtype("bfloat16", CPU) == torch.bfloat16
    auto = torch.bfloat16 if bf16_is_fast(CPU) else torch.float32
    assert resolve_compute_dtype("auto", CPU) == auto
    with pytest.raises(ConfigError, match="compute_dtype 'half' is not one of"):
        resolve_compute_dtype("half", CPU)
    with pytest.raises(ConfigError, match="compute_dtype"):
        PPOConfig(compute_dtype="fp8")
    with pytest.raises(ConfigError, match="compute_dtype"):
        SFTConfig(compute_dtype="fp8")


def test_model_dtype_auto_is_bf16_only_where_fast_and_slow_bf16_warns(monkeypatch):
    """The weights' dtype: None and "auto" take bf16 only where it runs natively (on an
    AVX2 CPU bf16 matmuls are emulated, 50-80x slower than float32 there); bf16 asked
    for anyway is honoured with a warning; an unknown name is refused."""
    from agentbench.models import transformers_backend as backend

    for fast, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(backend, "bf16_is_fast", lambda device, fast=fast: fast)
        assert resolve_dtype(None, CPU) == resolve_dtype("auto", CPU) == expected
        assert resolve_dtype("float32", CPU) == torch.float32
    with pytest.warns(UserWarning, match="bfloat16 on this CPU is emulated"):
        assert resolve_dtype("bfloat16", CPU) == torch.bfloat16
    monkeypatch.setattr(backend, "bf16_is_fast", lambda device: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_dtype("bf16", CPU) == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype 'half' is not one of auto, bfloat16"):
        resolve_dtype("half", CPU)


def _pairs() -> tuple[list[list[int]], list[list[int]]]:
    prompts = [[40 + i % 5, 41, 42 + i % 3, 43] for i in range(16)]
    targets = [[60 + i % 5, 61, 3] for i in range(16)]  # a target determined by the prompt
    return prompts, targets


def test_bf16_autocast_runs_bf16_arithmetic_and_keeps_float32_weights_and_gradients():
    generator = tiny_generator(seed=0)
    generator.model.requires_grad_(True)
    prompts, targets = _pairs()
    with torch.no_grad():
        fp32 = torch.cat(generator.packed_logprobs(prompts, targets).logprobs)
        with compute_precision(generator.model, torch.bfloat16):
            bf16 = torch.cat(generator.packed_logprobs(prompts, targets).logprobs)
    difference = float((fp32 - bf16).abs().max())
    assert 1e-4 < difference < 0.5  # bf16 rounding shows, but it is the same function
    generator.model.train()
    with compute_precision(generator.model, torch.bfloat16):
        logprobs = torch.cat(generator.packed_logprobs(prompts, targets).logprobs)
    assert logprobs.dtype == torch.float32  # log-softmax over float32 logits
    logprobs.sum().backward()
    parameters = list(generator.model.parameters())
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in parameters)


def test_sft_learns_under_bf16_as_under_float32():
    prompts, targets = _pairs()
    losses = {}
    for dtype in ("float32", "bfloat16"):
        generator = tiny_generator(seed=0)
        generator.model.requires_grad_(True)
        config = SFTConfig(
            learning_rate=3e-3, lr_min=3e-3, epochs=12, batch_size=8, compute_dtype=dtype
        )
        records = train_on_targets(generator, prompts, targets, config)
        losses[dtype] = (records[0]["loss"], records[-1]["loss"])
    for first, last in losses.values():
        assert last < 0.2 * first  # learned the prompt -> target map
    assert losses["bfloat16"][1] == pytest.approx(losses["float32"][1], abs=0.1)
