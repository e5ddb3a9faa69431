"""Packed log-probs (agentbench.models.packing): an episode's steps as one trie.

The packed forward pass must give each row what the per-row pass gives it (the
reference, ``TransformersGenerator.sequence_logprobs``), log-probs and gradients,
in float32 within 1e-4, whatever the packing: rows sharing a growing history,
tries cut by the length cap, several tries padded into one batch, LoRA adapters,
a model with sliding-window layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agentbench.agent.llm import LLMAgentSettings
from agentbench.errors import ConfigError
from agentbench.models.packing import (
    build_trie,
    plan_micro_batches,
    split_into_tries,
    trie_size,
)
from agentbench.models.tiny import byte_tokenizer, tiny_generator
from agentbench.models.transformers_backend import TransformersGenerator
from agentbench.rlft.config import EnvSettings, ModelSettings, PPOConfig
from agentbench.rlft.policy import add_lora
from agentbench.rlft.ppo import PPOTrainer


def episode_rows(seed: int, steps: int = 6, vocab: int = 250) -> tuple[list, list]:
    """Prompts and completions shaped like an episode: a header, a history growing by
    one line per step, then the step's question; a completion of a few tokens."""
    rng = np.random.default_rng(seed)
    header = rng.integers(5, vocab, 12).tolist()
    lines = [rng.integers(5, vocab, int(rng.integers(3, 7))).tolist() for _ in range(steps)]
    question = rng.integers(5, vocab, 4).tolist()
    prompts, completions = [], []
    for t in range(steps):
        prompts.append(header + [x for line in lines[:t] for x in line] + question)
        completions.append(rng.integers(5, vocab, int(rng.integers(1, 6))).tolist())
    return prompts, completions


def two_episodes() -> tuple[list, list, list]:
    p1, c1 = episode_rows(1)
    p2, c2 = episode_rows(2, steps=4)
    return p1 + p2, c1 + c2, [0] * len(p1) + [1] * len(p2)


def max_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True) if x.numel())


# ---------------------------------------------------------------- the trie


def test_trie_is_depth_first_and_every_row_reads_back_along_its_ancestors():
    rows = [[1, 2, 3], [1, 4], [1, 2, 5, 6], [7], [1, 2, 3]]
    trie = build_trie(rows)
    assert len(trie) == trie_size(rows) == 7  # 1 2 3 5 6 4 7
    assert trie.tokens == [1, 2, 3, 5, 6, 4, 7]
    assert trie.depths == [0, 1, 2, 2, 3, 1, 0]
    assert trie.ends == [5, 4, 2, 4, 4, 5, 6]
    for row, nodes in zip(rows, trie.row_nodes, strict=True):
        assert [trie.tokens[n] for n in nodes] == row
        assert [trie.depths[n] for n in nodes] == list(range(len(row)))
        for earlier, later in zip(nodes, nodes[1:], strict=False):
            assert earlier < later <= trie.ends[earlier]  # each node inside its parent's range
    assert trie.row_nodes[0] == trie.row_nodes[4]  # the same row: the same nodes


def test_random_tries_keep_rows_and_ancestry():
    rng = np.random.default_rng(0)
    for _ in range(50):
        rows = [rng.integers(0, 3, int(rng.integers(1, 8))).tolist() for _ in range(6)]
        trie = build_trie(rows)
        assert len(trie) == len({tuple(r[: n + 1]) for r in rows for n in range(len(r))})
        for row, nodes in zip(rows, trie.row_nodes, strict=True):
            assert [trie.tokens[n] for n in nodes] == row
            ancestors = set(nodes)
            for j in range(len(trie)):  # ancestors of a row's last node = the row's nodes
                if j <= nodes[-1] <= trie.ends[j]:
                    assert j in ancestors


def test_tries_respect_groups_and_the_cap_and_passes_the_token_budget():
    rows, _, groups = two_episodes()
    rows = [p + [1] for p in rows]
    assert [len(t) for t in split_into_tries(rows, groups)] == [6, 4]
    tries = split_into_tries(rows, groups, max_packed_tokens=40)
    assert all(trie_size([rows[r] for r in t]) <= 40 for t in tries if len(t) > 1)
    assert [r for t in tries for r in t] == list(range(len(rows)))  # consecutive, in order
    assert len(tries) > 2
    passes = plan_micro_batches(rows, groups, max_packed_tokens=60)
    planned = sorted(r for p in passes for t in p for r in t)
    assert planned == list(range(len(rows)))  # every row once
    for p in passes:
        sizes = [trie_size([rows[r] for r in t]) for t in p]
        assert len(p) == 1 or len(p) * max(sizes) <= 60
    with pytest.raises(ConfigError, match="max_packed_tokens"):
        split_into_tries(rows, groups, max_packed_tokens=0)


# ---------------------------------------------------------------- log-probs and gradients


@pytest.mark.parametrize("cap", [4096, 40], ids=["one-trie-per-episode", "chunked"])
def test_packed_logprobs_equal_per_row_ones(cap: int):
    generator = tiny_generator(seed=0)
    prompts, completions, groups = two_episodes()
    with torch.no_grad():
        per_row = generator.sequence_logprobs(prompts, completions)
        packed = generator.packed_logprobs(
            prompts, completions, groups=groups, max_packed_tokens=cap
        )
        hot = generator.packed_logprobs(prompts, completions, temperature=0.7)
        per_row_hot = generator.sequence_logprobs(prompts, completions, temperature=0.7)
    assert max_difference(packed.logprobs, per_row) < 1e-4
    assert max_difference(hot.logprobs, per_row_hot) < 1e-4
    assert max_difference(hot.logprobs, per_row) > 1e-3  # temperature matters


def _gradients(generator: TransformersGenerator, packed: bool) -> dict[str, torch.Tensor]:
    prompts, completions, groups = two_episodes()
    weights = torch.linspace(0.5, 1.5, sum(len(c) for c in completions))
    generator.model.train()
    generator.model.zero_grad(set_to_none=True)
    if packed:
        logprobs = generator.packed_logprobs(prompts, completions, groups=groups).logprobs
    else:
        logprobs = generator.sequence_logprobs(prompts, completions)
    (torch.cat(logprobs) * weights).sum().backward()
    generator.model.eval()
    return {
        name: p.grad.clone()
        for name, p in generator.model.named_parameters()
        if p.requires_grad and p.grad is not None
    }


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_packed_gradients_equal_per_row_ones(lora: bool):
    generator = tiny_generator(seed=0)
    if lora:
        model = add_lora(generator.model, r=4, alpha=8, seed=0)
        with torch.no_grad():  # LoRA B starts at zero: give it values so A gets gradients
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
        generator = TransformersGenerator(model, generator.tokenizer)
    else:
        generator.model.requires_grad_(True)
    per_row = _gradients(generator, packed=False)
    packed = _gradients(generator, packed=True)
    assert per_row.keys() == packed.keys() and per_row
    assert all(not lora or "lora_" in name for name in per_row)
    for name, grad in per_row.items():
        scale = max(1.0, float(grad.abs().max()))
        assert float((packed[name] - grad).abs().max()) < 1e-4 * scale, name


def test_packed_logprobs_on_a_model_with_sliding_window_layers():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = byte_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=8,  # far shorter than the rows: the window matters
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        attn_implementation="sdpa",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Gemma3ForCausalLM(config).eval()
    generator = TransformersGenerator(model, tokenizer)
    prompts, completions, groups = two_episodes()
    with torch.no_grad():
        per_row = generator.sequence_logprobs(prompts, completions)
        packed = generator.packed_logprobs(prompts, completions, groups=groups)
    assert max_difference(packed.logprobs, per_row) < 1e-4


def test_score_packs_candidates_as_branches_and_matches_per_row_log_probs():
    generator = tiny_generator(seed=0)
    chats = [[{"role": "user", "content": "pick one " * k}] for k in (1, 3)]
    candidates = [["ACTION=red", "ACTION=blue", "ACTION=r"], ["ACTION=green", ""]]
    scores = generator.score(chats, candidates)
    for chat, texts, row in zip(chats, candidates, scores, strict=True):
        prompt = generator.encode_chat(chat)
        for text, score in zip(texts, row, strict=True):
            ids = generator._continuation_ids(generator.render(chat), prompt, text)
            if not ids:
                assert score == 0.0
                continue
            with torch.no_grad():
                (expected,) = generator.sequence_logprobs([prompt], [ids])
            assert score == pytest.approx(float(expected.sum()), abs=1e-4)


# ---------------------------------------------------------------- PPO


def _ppo(tmp_path: Path, **changes: Any) -> PPOTrainer:
    values: dict[str, Any] = dict(
        env=EnvSettings(
            "agentbench/GaussianBandit-v0", {"n_arms": 3, "horizon": 4, "labels": "continuous"}
        ),
        num_envs=4,
        episodes_per_update=4,
        total_updates=1,
        num_minibatches=2,
        micro_batch_size=3,
        agent=LLMAgentSettings(cot=False),
        optimizer="adamw",
        learning_rate=1e-3,
        warmup_steps=0,
        eval_every=0,
        advantage="gae",
        output_dir=str(tmp_path),
        progress=False,
    )
    values.update(changes)
    return PPOTrainer(PPOConfig(**values), tiny_generator(seed=0))


def test_ppo_packed_scores_like_per_row_and_its_minibatches_hold_whole_episodes(tmp_path):
    packed = _ppo(tmp_path / "packed", max_packed_tokens=700)  # episodes cut into chunks
    per_row = _ppo(tmp_path / "per-row", packed=False)
    batch = packed.collect(0)
    order = packed.epoch_order(batch)
    assert sorted(order.tolist()) == [0, 1, 2, 3]  # episodes, not steps
    for minibatch in packed._minibatches(batch, order):
        episodes = {batch.samples[i].episode for i in minibatch}
        assert len(minibatch) == 4 * len(episodes)  # every step of each episode
    passes = list(packed._micro_batches(batch, order))
    assert any(len(set(groups)) < len(groups) for _, groups in passes)  # steps share tries
    scores = packed.score_batch(batch, order)
    rows = per_row.score_batch(batch, per_row.rng.permutation(len(batch.samples)))
    assert max_difference(scores.old_logprobs, rows.old_logprobs) < 1e-4
    assert max_difference(scores.ref_logprobs, rows.ref_logprobs) < 1e-4
    np.testing.assert_allclose(scores.values, rows.values, atol=1e-4)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_ppo_packed_update_starts_at_ratio_one_and_trains(tmp_path, lora: bool):
    lora_model = ModelSettings(use_lora=True, lora_r=4)
    trainer = _ppo(tmp_path, model=lora_model) if lora else _ppo(tmp_path)
    (record,) = trainer.train()
    assert record["ratio_start_error"] == 0.0  # old log-probs from the same packed passes
    assert record["grad_norm"] > 0 and np.isfinite(record["value_loss"])


def test_ppo_refuses_fewer_episodes_than_minibatches_when_packed(tmp_path):
    trainer = _ppo(tmp_path, episodes_per_update=2, num_envs=2, num_minibatches=3)
    with pytest.raises(ConfigError, match="2 episodes cannot fill num_minibatches=3"):
        trainer.collect(0)
