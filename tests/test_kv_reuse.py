"""Prefix KV reuse and the column decode cache give what the plain path gives.

The plain path (``static_cache=False``) prefills every prompt in full and grows
its cache by concatenation; the column path preallocates the cache, and with
``prefix_reuse`` prefills only what the previous call's prompts did not hold.
In float32 the tokens must be identical, greedy and sampled (each row keeps its
own generator), and the log-probs equal to float noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from agentbench.agent.llm import LLMAgent, LLMAgentSettings
from agentbench.errors import ConfigError
from agentbench.models.interface import GenerationConfig
from agentbench.models.kv_reuse import common_prefix
from agentbench.models.tiny import CHATML_TEMPLATE, byte_tokenizer, tiny_generator
from agentbench.models.transformers_backend import TransformersGenerator, TransformersSettings
from agentbench.rollout import play

PLAIN = TransformersSettings(static_cache=False, prefix_reuse=False)
STATIC = TransformersSettings(prefix_reuse=False)
REUSE = TransformersSettings()
BANDIT = "agentbench/GaussianBandit-5arms-medium-button-v0"


def _three(**kwargs: Any) -> list[TransformersGenerator]:
    return [tiny_generator(settings=s, **kwargs) for s in (PLAIN, STATIC, REUSE)]


def _play(generator: TransformersGenerator, settings: LLMAgentSettings, horizon: int = 12) -> Any:
    agent = LLMAgent(generator, settings)
    return play(agent, BANDIT, range(4), num_envs=4, env_kwargs={"horizon": horizon})


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_episodes_are_token_identical_with_and_without_reuse(temperature: float) -> None:
    settings = LLMAgentSettings(budget=10, temperature=temperature, history_length=8)
    runs = [_play(g, settings) for g in _three()]
    for plain, static, reuse in zip(*runs, strict=True):
        for a, b, c in zip(plain.steps, static.steps, reuse.steps, strict=True):
            assert a.text == b.text == c.text
            assert a.action == b.action == c.action


def test_reuse_prefills_only_the_new_tokens_of_each_step() -> None:
    plain, _, reuse = _three()
    settings = LLMAgentSettings(cot=False, history_length=None)
    _play(plain, settings, horizon=12)
    _play(reuse, settings, horizon=12)
    assert plain.counters["prompt_tokens"] == reuse.counters["prompt_tokens"]
    assert plain.counters["prefilled_tokens"] == plain.counters["prompt_tokens"]
    # Each step adds one history line (~30 byte tokens) and a new question; the plain
    # path re-reads a prompt of several hundred tokens.
    ratio = reuse.counters["prefilled_tokens"] / plain.counters["prefilled_tokens"]
    assert ratio < 0.25, reuse.counters


def test_sampled_rows_finishing_at_different_steps_keep_their_tokens_and_logprobs() -> None:
    chats = [[{"role": "user", "content": f"Say something, number {k}."}] for k in range(6)]
    config = GenerationConfig(max_new_tokens=40, temperature=1.0)
    results = [g.generate(chats, config, seeds=list(range(6))) for g in _three()]
    lengths = {len(row.token_ids) for row in results[0]}
    assert len(lengths) > 1, "rows should stop at different steps for this test to mean much"
    for rows in zip(*results, strict=True):
        assert rows[0].token_ids == rows[1].token_ids == rows[2].token_ids
        assert rows[0].finish_reason == rows[1].finish_reason == rows[2].finish_reason
        for other in rows[1:]:
            assert torch.allclose(torch.tensor(other.logprobs), torch.tensor(rows[0].logprobs),
                                  atol=1e-4)  # fmt: skip


def test_batches_split_by_max_batch_size_and_repeated_prompts_give_the_same_answers() -> None:
    small = TransformersSettings(max_batch_size=2)
    chats = [[{"role": "user", "content": f"Pick a colour {k % 3}."}] for k in range(5)]
    config = GenerationConfig(max_new_tokens=8, temperature=1.0)
    plain = tiny_generator(settings=PLAIN).generate(chats, config, seeds=list(range(5)))
    reuse = tiny_generator(settings=small)
    for _ in range(2):  # the second call finds every prompt whole in the pool
        again = reuse.generate(chats, config, seeds=list(range(5)))
        assert [g.token_ids for g in again] == [g.token_ids for g in plain]


def test_a_weight_change_empties_the_pool() -> None:
    plain, _, reuse = _three()
    chats = [[{"role": "user", "content": "Which arm next? " * 4}]]
    config = GenerationConfig(max_new_tokens=6)
    reuse.generate(chats, config, seeds=[0])
    assert reuse.prefix_pool.entries
    for generator in (plain, reuse):
        with torch.no_grad():
            next(generator.model.parameters()).mul_(0.5)  # in place, like an optimizer step
    before = reuse.counters["prefilled_tokens"]
    fresh = reuse.generate(chats, config, seeds=[0])
    assert reuse.counters["prefilled_tokens"] - before == len(fresh[0].prompt_token_ids)
    assert fresh[0].token_ids == plain.generate(chats, config, seeds=[0])[0].token_ids


def test_self_correction_and_self_consistency_match_the_plain_path() -> None:
    settings = LLMAgentSettings(budget=8, temperature=1.0, self_correction=True)
    voting = LLMAgentSettings(budget=8, self_consistency=3)
    for agent_settings in (settings, voting):
        runs = [_play(g, agent_settings, horizon=5) for g in _three()]
        for plain, _, reuse in zip(*runs, strict=True):
            assert [s.text for s in plain.steps] == [s.text for s in reuse.steps]


def _gemma3_sliding() -> tuple[Any, Any]:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = byte_tokenizer(CHATML_TEMPLATE)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=16,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None, initializer_range=0.3,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Gemma3ForCausalLM(config).eval()
    return model, tokenizer


def test_sliding_window_layers_see_only_their_window() -> None:
    """Gemma 3 mixes sliding-window and full layers; the column path applies the window
    itself (by position), so its log-probs equal the plain path's on prompts longer
    than the window."""
    model, tokenizer = _gemma3_sliding()
    window = model.config.sliding_window
    generators = [TransformersGenerator(model, tokenizer, settings=s) for s in (PLAIN, REUSE)]
    for step in range(3):
        chats = [[{"role": "user", "content": "hello there friend " * (k + 3 + step)}]
                 for k in range(3)]  # fmt: skip
        plain, reuse = (g.generate(chats, GenerationConfig(6, 1.0), [1, 2, 3]) for g in generators)
        for a, b in zip(plain, reuse, strict=True):
            assert len(a.prompt_token_ids) > 3 * window
            assert a.token_ids == b.token_ids
            assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4


@pytest.mark.parametrize("family", ["llama", "gemma3-sliding"])
def test_scoring_after_a_generation_reuses_its_prefix_and_matches_the_packed_path(
    family: str,
) -> None:
    """Answer forcing scores the legal labels right after the answer it completes: the
    scores read from the kept prefix equal the packed path's (which prefills every
    prompt), candidates of different lengths and an empty one included, while only the
    prompts' last token and the candidates are prefilled, their shared start once."""
    if family == "llama":
        plain, reuse = tiny_generator(settings=PLAIN), tiny_generator(settings=REUSE)
    else:
        model, tokenizer = _gemma3_sliding()
        plain, reuse = (TransformersGenerator(model, tokenizer, settings=s) for s in (PLAIN, REUSE))
    chats = [[{"role": "user", "content": f"pick a colour, round {k} " * (k + 2)}]
             for k in range(3)]  # fmt: skip
    candidates = [
        ["ACTION=red", "ACTION=blue", "", "ACTION=a much longer label", "ACTION=redder"]
    ] * 3
    for generator in (plain, reuse):
        generator.generate(chats, GenerationConfig(6, 1.0), [1, 2, 3])
    before = reuse.counters["prefilled_tokens"]
    expected, got = plain.score(chats, candidates), reuse.score(chats, candidates)
    prefilled = reuse.counters["prefilled_tokens"] - before
    assert len(got) == 3 and all(row[2] == 0.0 for row in got)
    for a, b in zip(expected, got, strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4, (a, b)
    assert max(len(reuse.encode_chat(chat)) for chat in chats) > 16  # past Gemma's window
    # each prompt's last token, the tokens its candidates share ("ACTION=") once, and
    # the rest of each candidate
    ids = [reuse.continuation_ids(chats[0], c) for c in candidates[0] if c]
    shared = min(common_prefix(np.asarray(c), np.asarray(ids[0])) for c in ids)
    assert 0 < shared == len(reuse.continuation_ids(chats[0], "ACTION="))
    assert prefilled == 3 * (1 + shared + sum(len(c) - shared for c in ids))
    # with a prompt that shares only the template's first tokens with the pool: its
    # whole prompt is prefilled in the same pass, the logits kept only where scored
    mixed = [chats[1], [{"role": "user", "content": "a prompt nobody generated from"}]]
    pairs = [["ACTION=red", "ACTION=blue"], ["ACTION=a much longer label", "ACTION=red"]]
    for a, b in zip(reuse.score(mixed, pairs), plain.score(mixed, pairs), strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4, (a, b)


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="static_cache"):
        TransformersSettings(static_cache=False, prefix_reuse=True)
    with pytest.raises(ConfigError, match="prefix_cache_tokens"):
        TransformersSettings(prefix_cache_tokens=-1)


def test_a_pool_over_its_token_budget_keeps_nothing_too_big() -> None:
    tight = tiny_generator(settings=TransformersSettings(prefix_cache_tokens=10))
    tight.generate([[{"role": "user", "content": "a long prompt " * 5}]], GenerationConfig(4))
    assert tight.prefix_pool.entries == []


def test_the_context_only_grows_while_the_window_holds_every_step() -> None:
    """What prefix reuse relies on: up to the question, the step-t context is the start
    of the step-(t+1) context while t < C; once the window slides, it is not (and the
    backend re-prefills from where the two differ)."""
    from agentbench.agent.context import ContextSettings, build_context
    from agentbench.baselines.registry import make_agent
    from agentbench.envs import make, text_env

    (episode,) = play(make_agent("random"), BANDIT, [0])
    env = text_env(make(BANDIT))
    env.reset(seed=0)
    settings = ContextSettings(history_length=10)

    def text(t: int) -> str:
        return build_context(env, episode.steps[:t], settings)[0]["content"]

    for t in range(1, 10):
        head = text(t).rsplit("\n\n", 1)[0]  # all but the question
        assert text(t + 1).startswith(head), t
    assert not text(12).startswith(text(11).rsplit("\n\n", 1)[0])


def test_generate_leaves_no_cyclic_garbage_holding_tensors() -> None:
    """Caches are freed when dropped, not at the collector's next pass (a cache in a
    reference cycle held about 0.6 GB over a 50-step SmolLM2 episode)."""
    import gc

    generator = tiny_generator(settings=REUSE)
    settings = LLMAgentSettings(cot=False, history_length=None)
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        _play(generator, settings, horizon=6)
        gc.collect()
        tensors = [o for o in gc.garbage if isinstance(o, torch.Tensor)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()
    assert tensors == []
