"""A preallocated KV cache addressed by column, and a pool of prompts already prefilled.

Why: an agent's prompt at step t+1 is its prompt at step t with one history line
more, so re-reading the whole prompt every step spends almost all of a step's
compute on tokens the model has already seen (SPEC.md 2's context grows by one
line a step). And a decode cache grown by ``torch.cat`` copies itself every token.

**Column cache.** One buffer per layer, ``(rows, kv_heads, width, head_dim)``,
allocated once per generate call. Every forward pass writes all live rows at the
same columns; rows differ in what their columns mean, not where they are, so
each row carries a ``valid`` flag per column and an explicit RoPE position per
column, and the attention mask (``attention.model_attention_mask``) lets a query
see exactly the valid columns at or before its own. A row that finishes is
swapped to the end of the live block (two rows copied, whatever the batch size)
and the next forward runs on the shrunken block, a view: nothing else moves.

**Prefix pool.** After a call, each row's columns (its prompt and the tokens it
fed back) are kept, with the token ids they hold. The next call matches every
prompt against the pool by longest common token prefix, gathers the matched
keys and values into its new buffer, and prefills only the rest. Matching is by
content, so agents stay stateless (``agent/interface.py``): interleaved episodes,
resumed runs and self-correction passes all find their prefix, and a prompt with
no match is simply prefilled. Because keys are stored after RoPE at their true
positions, reused keys are exactly the ones a full prefill would compute (up to
floating-point order).

The pool is emptied whenever the model's weights may have changed (an optimizer
step bumps a parameter's version counter; peft adapters can be switched off), so
a stale prefix is never reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers.cache_utils import Cache, CacheLayerMixin


@dataclass
class _Cursor:
    """Where a ColumnCache's next forward pass writes: the first ``live`` rows, from
    ``column`` on. Shared by the cache and its layers instead of a back-reference, so
    that a cache is not in a reference cycle: it is freed as soon as it is dropped, not
    at the next cyclic garbage collection (with one cache per generate call, waiting for
    the collector held about 0.6 GB over a 50-step SmolLM2 episode)."""

    live: int
    column: int = 0


class _ColumnLayer(CacheLayerMixin):
    """One layer's keys and values; writes go to the cache's current column."""

    def __init__(self, cursor: _Cursor, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.cursor = cursor
        self.keys, self.values = keys, values
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        return None  # allocated up front by ColumnCache

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows, start = self.cursor.live, self.cursor.column
        end = start + key_states.shape[-2]
        self.keys[:rows, :, start:end] = key_states
        self.values[:rows, :, start:end] = value_states
        # Attention reads only the columns written so far, through a view.
        return self.keys[:rows, :, :end], self.values[:rows, :, :end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.cursor.column + query_length, 0

    def get_seq_length(self) -> int:
        return self.cursor.column

    def get_max_length(self) -> int:
        return int(self.keys.shape[2])


class ColumnCache(Cache):
    """Preallocated keys/values for ``rows`` rows and ``width`` columns, every layer.

    ``cursor.live``: the rows the next forward pass runs on (the first ``live`` slots);
    ``cursor.column``: where that pass writes its first token.
    """

    def __init__(self, model: Any, rows: int, width: int) -> None:
        config = model.config
        config = getattr(config, "text_config", None) or config
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = (
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )
        parameter = next(model.parameters())
        shape = (rows, heads, width, head_dim)
        self.cursor = _Cursor(live=rows)
        layers = [
            _ColumnLayer(
                self.cursor,
                torch.zeros(shape, dtype=parameter.dtype, device=parameter.device),
                torch.zeros(shape, dtype=parameter.dtype, device=parameter.device),
            )
            for _ in range(config.num_hidden_layers)
        ]
        super().__init__(layers=layers)
        self.rows, self.width = rows, width

    def swap(self, i: int, j: int) -> None:
        """Exchange two rows' keys and values in every layer."""
        if i == j:
            return
        order = torch.tensor([j, i], device=self.layers[0].keys.device)
        pair = torch.tensor([i, j], device=order.device)
        for layer in self.layers:
            layer.keys[pair] = layer.keys[order]
            layer.values[pair] = layer.values[order]

    def gather_into(
        self, rows: torch.Tensor, end: int, source: ColumnCache, slots: torch.Tensor,
        columns: torch.Tensor,
    ) -> None:  # fmt: skip
        """Copy ``source[slots[r], :, columns[r]]`` into ``self[rows[r], :, end - C : end]``.

        ``columns`` is (len(rows), C): for each destination row, the source columns of
        the tokens to put in its last C columns before ``end`` (left padding included:
        padded places may take any source column, they stay masked).
        """
        width = columns.shape[1]
        for mine, theirs in zip(self.layers, source.layers, strict=True):
            for name in ("keys", "values"):
                picked = getattr(theirs, name)[slots[:, None], :, columns]  # (R, C, heads, dim)
                getattr(mine, name)[rows, :, end - width : end] = picked.permute(0, 2, 1, 3)


@dataclass
class CachedPrefix:
    """Tokens whose keys and values are kept in ``cache``: ``ids[k]`` at ``(slot, columns[k])``."""

    ids: np.ndarray
    cache: ColumnCache
    slot: int
    columns: torch.Tensor


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common prefix of two id arrays."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class PrefixPool:
    """The prefixes kept from the last generate call, matched by longest common prefix."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.entries: list[CachedPrefix] = []
        self._fingerprint: tuple[Any, ...] | None = None

    def check_model(self, model: Any) -> None:
        """Forget everything if the weights (or the active adapters) may have changed."""
        fingerprint = model_fingerprint(model)
        if fingerprint != self._fingerprint:
            self.entries = []
            self._fingerprint = fingerprint

    def match(self, ids: np.ndarray) -> tuple[CachedPrefix | None, int]:
        """The entry sharing the longest prefix with ``ids``, and that length.

        At most ``len(ids) - 1``: the last prompt token is always run, since its
        logits give the first generated token.
        """
        best, length = None, 0
        for entry in self.entries:
            shared = common_prefix(entry.ids, ids)
            if shared > length:
                best, length = entry, shared
        return best, min(length, len(ids) - 1)

    def replace(self, entries: list[CachedPrefix]) -> None:
        """Keep these entries (newest first) within the token budget; drop the rest."""
        kept, total = [], 0
        for entry in entries:
            if total + len(entry.ids) > self.max_tokens:
                break
            kept.append(entry)
            total += len(entry.ids)
        self.entries = kept

    def clear(self) -> None:
        self.entries = []


def model_fingerprint(model: Any) -> tuple[Any, ...]:
    """Changes whenever a parameter is written in place or replaced, or an adapter toggled."""
    parameters = tuple(
        (p.data_ptr(), p._version, p.dtype, p.requires_grad) for p in model.parameters()
    )
    adapters = tuple(
        (bool(getattr(m, "disable_adapters", False)), str(getattr(m, "active_adapters", "")))
        for m in model.modules()
        if hasattr(m, "active_adapters") and hasattr(m, "disable_adapters")
    )
    return parameters, adapters, bool(model.training)
