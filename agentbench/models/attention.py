"""Custom attention masks for a transformers causal LM: who may attend to whom.

Prefix reuse (a KV cache with holes) and packed training sequences (a trie of
an episode's steps) both need a mask that is not "causal over one left-padded
row". transformers passes a 4D mask through to the attention kernel as is;
models with sliding-window layers (Gemma 3) take a dict with one mask per layer
type, and the sliding window must then be applied here, by position.

``allowed[b, q, k]`` says whether query ``q`` of row ``b`` may see key ``k``;
positions are the tokens' RoPE positions (their index in the unpacked text), so
the sliding window is measured in text, not in columns of the packed layout.
"""

from __future__ import annotations

from typing import Any

import torch

from agentbench.errors import ConfigError

MASKABLE = ("sdpa", "eager")  # attention kernels that take an arbitrary 4D mask


def model_attention_mask(
    model: Any,
    allowed: torch.Tensor,
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    dtype: torch.dtype | None = None,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The ``attention_mask`` argument that makes ``model`` attend exactly as ``allowed`` says.

    ``allowed`` is (batch, queries, keys) bool; ``query_positions`` (batch, queries)
    and ``key_positions`` (batch, keys) are the tokens' positions. A query that may
    see nothing (padding) is let see everything instead: its output is never read,
    and a fully masked row would put NaN into the keys and values built from it.
    """
    config = model.config
    implementation = getattr(config, "_attn_implementation", None) or "eager"
    if implementation not in MASKABLE:
        raise ConfigError(
            f"attention implementation {implementation!r} cannot take a custom mask; load the "
            f"model with attn_implementation='sdpa' (or 'eager')"
        )
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    window = getattr(config, "sliding_window", None)
    masks: dict[str, torch.Tensor] = {}
    for layer_type in layer_types:
        mask = allowed
        if layer_type == "sliding_attention" and window:
            distance = query_positions[:, :, None] - key_positions[:, None, :]
            mask = mask & (distance < window)
        masks[layer_type] = _kernel_mask(mask, implementation, dtype or model.dtype)
    if len(masks) == 1 and "full_attention" in masks:
        return masks["full_attention"]
    return masks


def _kernel_mask(allowed: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    allowed = allowed | ~allowed.any(dim=-1, keepdim=True)
    allowed = allowed[:, None, :, :]  # one mask for every head
    if implementation == "sdpa":
        return allowed
    additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return additive.masked_fill(~allowed, torch.finfo(dtype).min)
