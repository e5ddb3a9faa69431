"""Packed log-probs: rows that share a prefix are forwarded as one trie, the prefix once.

The steps of an episode repeat one growing context: step t's prompt is the
instruction and the history so far, step t + 1's the same plus one more line. Run
as separate rows, a 50-step episode forwards its history 50 times. Packed, the
rows of a group (an episode's steps; a prompt's candidate answers) are inserted
into a token trie, and the trie is one sequence:

- its tokens are the trie's nodes in depth-first order, so every node's subtree is
  the contiguous range ``[i, end_i]`` of the packed sequence;
- token ``j`` may attend to token ``i`` iff ``i`` is an ancestor of ``j`` (or ``j``
  itself): ``i <= j <= end_i``, a 4D mask built by
  :func:`agentbench.models.attention.model_attention_mask`;
- each token's position id is its depth, its index in its own row, so RoPE sees
  exactly the positions of the unpacked row.

A row's hidden states are then those of the row forwarded alone (up to
floating-point summation order), and so are its log-probs and their gradients:
completion token ``p`` is predicted by the logits at the packed index of token
``p - 1``. Only those positions go through the LM head (``logits_to_keep`` as a
boolean mask). Several tries are right-padded into one batch; padding keys are
masked out.

A trie is capped at ``max_packed_tokens`` nodes (the mask is L x L): rows are
inserted in the order given and a row that would overflow the current trie starts
the next one, which repeats whatever trunk that row needs. :func:`plan_micro_batches`
cuts a list of grouped rows into forward passes: one trie per group (or chunk of
a group), tries sorted by length, and passes of at most ``max_packed_tokens``
padded tokens each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from agentbench.errors import ConfigError
from agentbench.models.attention import model_attention_mask
from agentbench.models.logprobs import selected_logprobs

DEFAULT_MAX_PACKED_TOKENS = 4096  # nodes of one trie, and padded tokens of one forward pass


@dataclass
class Trie:
    """Rows packed as one sequence (see the module docstring)."""

    tokens: list[int] = field(default_factory=list)  # node tokens, depth-first order
    depths: list[int] = field(default_factory=list)  # position id of each node
    ends: list[int] = field(default_factory=list)  # last packed index of each node's subtree
    row_nodes: list[list[int]] = field(default_factory=list)  # packed index of each row token

    def __len__(self) -> int:
        return len(self.tokens)


class _TrieCounter:
    """The nodes of a growing trie, counted without building the packed sequence."""

    def __init__(self) -> None:
        self.root: dict[int, dict] = {}
        self.size = 0

    def new_nodes(self, row: Sequence[int]) -> int:
        """How many nodes inserting ``row`` would add."""
        level: dict[int, dict] | None = self.root
        for depth, token in enumerate(row):
            level = level.get(int(token)) if level is not None else None
            if level is None:
                return len(row) - depth
        return 0

    def insert(self, row: Sequence[int]) -> None:
        level = self.root
        for token in row:
            child = level.get(int(token))
            if child is None:
                child = level[int(token)] = {}
                self.size += 1
            level = child


def trie_size(rows: Sequence[Sequence[int]]) -> int:
    """Number of distinct prefixes of ``rows``: the packed length of their trie."""
    counter = _TrieCounter()
    for row in rows:
        counter.insert(row)
    return counter.size


def build_trie(rows: Sequence[Sequence[int]]) -> Trie:
    """The trie of ``rows``, its nodes numbered depth-first (children in insertion order)."""
    children: list[dict[int, int]] = [{}]  # node 0 is the empty root
    node_token: list[int] = [-1]
    row_paths: list[list[int]] = []
    for row in rows:
        node, path = 0, []
        for token in row:
            child = children[node].get(int(token))
            if child is None:
                child = len(node_token)
                children[node][int(token)] = child
                children.append({})
                node_token.append(int(token))
            path.append(child)
            node = child
        row_paths.append(path)
    trie = Trie()
    order = [0] * len(node_token)  # trie node -> packed index
    stack = [(child, 0) for child in reversed(children[0].values())]
    while stack:
        node, depth = stack.pop()
        if node < 0:  # the closing marker of node ~node: its subtree is complete
            trie.ends[order[~node]] = len(trie.tokens) - 1
            continue
        order[node] = len(trie.tokens)
        trie.tokens.append(node_token[node])
        trie.depths.append(depth)
        trie.ends.append(-1)
        stack.append((~node, depth))
        stack.extend((child, depth + 1) for child in reversed(children[node].values()))
    trie.row_nodes = [[order[node] for node in path] for path in row_paths]
    return trie


def split_into_tries(
    rows: Sequence[Sequence[int]],
    groups: Sequence[Any] | None = None,
    max_packed_tokens: int = DEFAULT_MAX_PACKED_TOKENS,
) -> list[list[int]]:
    """Row indices of each trie: consecutive rows of the same group, while their trie
    stays within ``max_packed_tokens`` (a single longer row is a trie of its own)."""
    return [members for members, _ in _split(rows, groups, max_packed_tokens)]


def _split(
    rows: Sequence[Sequence[int]], groups: Sequence[Any] | None, max_packed_tokens: int
) -> list[tuple[list[int], int]]:
    if max_packed_tokens < 1:
        raise ConfigError(f"max_packed_tokens must be at least 1, got {max_packed_tokens}")
    tries: list[tuple[list[int], _TrieCounter]] = []
    for r, row in enumerate(rows):
        if tries:
            members, counter = tries[-1]
            same_group = groups is None or groups[members[0]] == groups[r]
            if same_group and counter.size + counter.new_nodes(row) <= max_packed_tokens:
                members.append(r)
                counter.insert(row)
                continue
        counter = _TrieCounter()
        counter.insert(row)
        tries.append(([r], counter))
    return [(members, counter.size) for members, counter in tries]


def plan_micro_batches(
    rows: Sequence[Sequence[int]],
    groups: Sequence[Any],
    max_packed_tokens: int = DEFAULT_MAX_PACKED_TOKENS,
) -> list[list[list[int]]]:
    """Forward passes for packed training: for each pass, the row indices of each trie.

    The rows of a group (keep them consecutive, in step order) form one trie, cut
    into consecutive chunks where it would exceed ``max_packed_tokens``; tries are
    sorted by length (longest first, so the first pass shows the peak memory) and
    taken into a pass while (tries x longest) stays within ``max_packed_tokens``.
    Give each trie its own group label when forwarding a pass, so it packs as planned.
    """
    tries = _split(rows, groups, max_packed_tokens)
    order = sorted(range(len(tries)), key=lambda k: (-tries[k][1], k))
    passes: list[list[list[int]]] = []
    longest = 0
    for k in order:
        members, size = tries[k]
        if passes and (len(passes[-1]) + 1) * max(longest, size) <= max_packed_tokens:
            passes[-1].append(members)
            longest = max(longest, size)
        else:
            passes.append([members])
            longest = size
    return passes


@dataclass
class PackedLogprobs:
    """What one packed forward pass gives: each row's completion log-probs, and where
    its last prompt token sits among the positions kept for the LM head (the rows of
    the hidden states that :func:`agentbench.rlft.value_head.capture_last_hidden`
    captures in that pass)."""

    logprobs: list[torch.Tensor]
    last_prompt_index: torch.Tensor  # (rows,) index into the kept positions


def check_logprob_inputs(
    prompt_token_ids: Sequence[Sequence[int]],
    completion_token_ids: Sequence[Sequence[int]],
    temperature: float,
) -> None:
    """One clear error for inputs neither log-prob path can score."""
    if len(prompt_token_ids) != len(completion_token_ids):
        raise ConfigError(
            f"got {len(completion_token_ids)} completions for {len(prompt_token_ids)} "
            "prompts; give one each"
        )
    if temperature <= 0:
        raise ConfigError(f"temperature {temperature} must be positive")
    if any(len(p) == 0 for p in prompt_token_ids):
        raise ConfigError("a prompt has zero tokens; every completion needs a prompt token")


def packed_logprobs(
    model: Any,
    prompt_token_ids: Sequence[Sequence[int]],
    completion_token_ids: Sequence[Sequence[int]],
    *,
    temperature: float = 1.0,
    groups: Sequence[Any] | None = None,
    max_packed_tokens: int = DEFAULT_MAX_PACKED_TOKENS,
    pad_token_id: int = 0,
) -> PackedLogprobs:
    """Per-token log-probs of each completion after its prompt, in one packed forward pass.

    The same numbers as the per-row ``TransformersGenerator.sequence_logprobs`` (up to
    summation order), with gradients when the model is in train mode. Rows are packed
    in the order given (:func:`split_into_tries`; with ``groups``, a new trie starts
    where the group changes) and all tries go through the model together.
    """
    check_logprob_inputs(prompt_token_ids, completion_token_ids, temperature)
    device = next(model.parameters()).device
    if not prompt_token_ids:
        return PackedLogprobs([], torch.zeros(0, dtype=torch.long, device=device))
    rows = [list(p) + list(c) for p, c in zip(prompt_token_ids, completion_token_ids, strict=True)]
    tries_rows = split_into_tries(rows, groups, max_packed_tokens)
    tries = [build_trie([rows[r] for r in members]) for members in tries_rows]
    width = max(len(trie) for trie in tries)
    batch = len(tries)
    input_ids = torch.full((batch, width), pad_token_id, dtype=torch.long)
    positions = torch.zeros((batch, width), dtype=torch.long)
    ends = torch.full((batch, width), -1, dtype=torch.long)  # padding: no subtree, no ancestor
    keep = torch.zeros((batch, width), dtype=torch.bool)
    # (trie, packed index) of the position predicting each completion token, and of the
    # last prompt token, per row
    predicting: list[tuple[int, list[int]]] = [(0, [])] * len(rows)
    for b, (members, trie) in enumerate(zip(tries_rows, tries, strict=True)):
        n = len(trie)
        input_ids[b, :n] = torch.tensor(trie.tokens)
        positions[b, :n] = torch.tensor(trie.depths)
        ends[b, :n] = torch.tensor(trie.ends)
        for r, nodes in zip(members, trie.row_nodes, strict=True):
            start = len(prompt_token_ids[r]) - 1
            indices = nodes[start:-1] if len(nodes) > start + 1 else [nodes[start]]
            predicting[r] = (b, indices)
            keep[b, indices] = True
    index = torch.arange(width)
    # allowed[b, j, i]: i is an ancestor-or-self of j, i.e. i <= j <= end_i
    allowed = (index[None, None, :] <= index[None, :, None]) & (
        index[None, :, None] <= ends[:, None, :]
    )
    input_ids, positions, keep = input_ids.to(device), positions.to(device), keep.to(device)
    allowed = allowed.to(device)
    mask = model_attention_mask(model, allowed, positions, positions)
    flat_rank = keep.flatten().cumsum(0) - 1  # rank of a kept position among the kept ones
    logits = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=False,
        logits_to_keep=keep,
    ).logits  # (kept positions, vocab)
    lengths = [len(c) for c in completion_token_ids]
    at = [flat_rank[b * width + torch.tensor(indices, device=device)] for b, indices in predicting]
    last_prompt = [a[0] for a in at]
    none = torch.zeros(0, dtype=torch.long, device=device)
    rows_read = torch.cat([a for a, n in zip(at, lengths, strict=True) if n] or [none])
    targets = torch.tensor(
        [t for c in completion_token_ids for t in c], dtype=torch.long, device=device
    )
    logprobs = selected_logprobs(logits, rows_read, targets, temperature)
    result = list(logprobs.split(lengths))
    return PackedLogprobs(result, torch.stack(last_prompt))
