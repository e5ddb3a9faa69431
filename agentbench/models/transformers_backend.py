"""A TextGenerator over a local transformers causal LM, with our own decoding loop.

Why not ``model.generate``: RL fine-tuning needs, for every sampled token, its
log-probability under the exact distribution it was drawn from, and
reproducible samples per row whatever else shares the batch. Both are simple in
a loop of our own and awkward through ``generate``'s logits processors and the
global torch RNG. The loop is the standard one: left-padded prompts, explicit
position ids, the model's KV cache, one token per step for every unfinished row.

Sampling draws one uniform number per generated token from a CPU
``torch.Generator`` owned by that row (seeded from ``seeds[i]``) and inverts the
row's cumulative distribution, so a row's sample depends only on its seed and
its own logits: not on the batch, the device or the global RNG.

Log-probabilities returned with each token (``Generation.logprobs``):

- temperature > 0: ``log p(token)`` under the distribution actually sampled
  from, i.e. ``softmax(logits / temperature)`` restricted to the top-p nucleus
  and renormalised;
- temperature 0 (greedy): ``log p(token)`` under the untempered model
  distribution ``softmax(logits)`` (a greedy "distribution" would give 0 for
  every token, which says nothing).

``sequence_logprobs`` recomputes these in one forward pass (with gradients when
the model is in train mode), which is what PPO's probability ratio needs.
"""

from __future__ import annotations

import inspect
import secrets
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agentbench.errors import ConfigError
from agentbench.models.attention import MASKABLE, model_attention_mask
from agentbench.models.interface import Chat, Generation, GenerationConfig, Seeds
from agentbench.models.kv_reuse import CachedPrefix, ColumnCache, PrefixPool, common_prefix
from agentbench.models.logprobs import selected_logprobs
from agentbench.models.packing import (
    DEFAULT_MAX_PACKED_TOKENS,
    PackedLogprobs,
    check_logprob_inputs,
    packed_logprobs,
)

# End-of-turn markers of common chat formats (ChatML, Llama 3, Gemma, Phi-3, GPT-2
# style). A model's own eos id is always used too; these catch templates whose
# end-of-turn token differs from the tokenizer's eos.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")

DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass
class TransformersSettings:
    """How the local backend batches work and renders chats for models without a template."""

    max_batch_size: int = 64  # prompts decoded together by generate (larger inputs are split)
    score_batch_size: int = 64  # (prompt, candidate) sequences per forward pass in score
    # Used only when the tokenizer has no chat template; the same plain format as the
    # HTTP backend's completions API, so both backends see the same text.
    prompt_template: str = "{role}: {content}\n"  # fields: {role}, {content}
    reply_prefix: str = "assistant: "
    # Without a template a model happily writes the next turn too; these stop it.
    template_stop: tuple[str, ...] = ("\nuser:", "\nsystem:")
    stop_token_ids: tuple[int, ...] = ()  # extra token ids that end a reply, besides eos
    # The decode cache (models/kv_reuse.py): preallocated and written by column, instead
    # of grown by torch.cat every token. Needs an attention that takes a custom mask
    # (sdpa or eager); other models use the plain path whatever this says.
    static_cache: bool = True
    # Reuse the keys and values of prompt prefixes kept from the previous generate call
    # (an episode's next prompt extends its last one); needs static_cache.
    prefix_reuse: bool = True
    # Tokens kept for reuse, all rows together; each costs layers x 2 x kv_heads x
    # head_dim values (23 KB for SmolLM2-135M in bf16).
    prefix_cache_tokens: int = 131_072

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.score_batch_size < 1:
            raise ConfigError(
                f"max_batch_size {self.max_batch_size} and score_batch_size "
                f"{self.score_batch_size} must be at least 1"
            )
        if self.prefix_reuse and not self.static_cache:
            raise ConfigError("prefix_reuse needs static_cache=True (it reuses the column cache)")
        if self.prefix_cache_tokens < 0:
            raise ConfigError(f"prefix_cache_tokens {self.prefix_cache_tokens} must be >= 0")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: the one asked for, else CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not a torch device; use 'cpu' or 'cuda'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but CUDA is not available; use 'cpu'")
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not supported; use 'cpu' or 'cuda'")
    return resolved


@cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively on ``device``: CUDA devices that support bf16,
    and CPUs with AVX-512-BF16 or AMX under torch's AVX-512 kernels. Elsewhere bf16 is
    emulated: on an AVX2 CPU (AMD EPYC, 2 threads) a 512x576 @ 576x1536 matmul took
    773 ms in bf16 against 9.8 ms in float32."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    capability = torch.backends.cpu.get_cpu_capability()
    native = {"avx512_bf16", "amx_bf16"} & _cpu_flags()
    return capability.startswith("AVX512") and bool(native)


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where it is fast (about 3x faster matmuls than float32 on AVX-512-BF16 /
    AMX CPUs; GPUs that support it), float32 elsewhere (float16 overflows)."""
    return torch.bfloat16 if bf16_is_fast(device) else torch.float32


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """A torch dtype from a name ("bfloat16", "float32", "float16"), or the device's
    default for None or "auto". bf16 asked for where it is emulated is honoured, with
    a warning: it is correct but tens of times slower than float32 there."""
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif dtype in DTYPES:
        resolved = DTYPES[dtype]
    else:
        raise ConfigError(f"dtype {dtype!r} is not one of auto, {', '.join(DTYPES)}")
    if resolved == torch.bfloat16 and device.type == "cpu" and not bf16_is_fast(device):
        warnings.warn(
            "bfloat16 on this CPU is emulated (no AVX-512-BF16/AMX, or torch's AVX2 "
            "kernels), tens of times slower than float32: use dtype 'auto' or 'float32'",
            stacklevel=2,
        )
    return resolved


def _batched(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class TransformersGenerator:
    """Batched generation, continuation scoring and sequence log-probs for a local causal LM.

    Built from an already-loaded ``(model, tokenizer)`` pair (so the RLFT trainer can
    hand in a peft-wrapped model) or with :meth:`from_pretrained`. The model is
    used as is: its device, dtype and train/eval mode are the caller's.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str | None = None,
        settings: TransformersSettings | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings or TransformersSettings()
        self.name = name or str(getattr(model.config, "_name_or_path", "") or "local-model")
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self.stop_token_ids = frozenset(self._end_of_turn_ids())
        if not self.stop_token_ids:
            raise ConfigError(
                f"model {self.name!r} has no eos or end-of-turn token; "
                "pass stop_token_ids in TransformersSettings"
            )
        pad = tokenizer.pad_token_id
        # Padded positions are masked out, so any id works; eos is the usual stand-in.
        self.pad_token_id = int(pad if pad is not None else min(self.stop_token_ids))
        self.prefix_pool = PrefixPool(self.settings.prefix_cache_tokens)
        # transformers 5 renamed the forward argument past_key_values to cache.
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        named = inspect.signature(base.forward).parameters
        self._cache_argument = "cache" if "cache" in named else "past_key_values"
        # Prompt tokens asked for and tokens actually prefilled (the rest were reused).
        self.counters: Counter[str] = Counter()

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        gguf_file: str | None = None,
        *,
        name: str | None = None,
        settings: TransformersSettings | None = None,
        local_files_only: bool = False,
    ) -> TransformersGenerator:
        """Load a model and tokenizer (HF directory, hub id, or ``gguf_file`` inside a directory).

        Weights are read from safetensors only (``use_safetensors``): never a pickle.
        A GGUF file is dequantised by transformers on load, which is slow; the catalog
        converts it once to a safetensors directory instead.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        common: dict[str, Any] = {"local_files_only": local_files_only}
        if gguf_file is not None:
            common["gguf_file"] = gguf_file
        tokenizer = AutoTokenizer.from_pretrained(str(path_or_id), **common)
        model_kwargs = dict(common, dtype=torch_dtype)
        if gguf_file is None:
            model_kwargs["use_safetensors"] = True
        model = AutoModelForCausalLM.from_pretrained(str(path_or_id), **model_kwargs)
        model.to(torch_device).eval()
        return cls(model, tokenizer, name=name or str(path_or_id), settings=settings)

    # ------------------------------------------------------------------ rendering

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def render(self, chat: Chat) -> str:
        """The prompt text of a chat, ending where the assistant's reply starts."""
        if self.has_chat_template:
            return self.tokenizer.apply_chat_template(
                list(chat), add_generation_prompt=True, tokenize=False
            )
        template = self.settings.prompt_template
        lines = [template.format(role=m["role"], content=m["content"]) for m in chat]
        return "".join(lines) + self.settings.reply_prefix

    def _encode_text(self, text: str) -> list[int]:
        # A chat template writes its own special tokens (BOS included where the model
        # wants one), so adding them again would double them; plain text gets them once.
        add_special = not self.has_chat_template
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def encode_chat(self, chat: Chat) -> list[int]:
        """Token ids of the rendered prompt."""
        ids = self._encode_text(self.render(chat))
        if not ids:
            raise ConfigError("a prompt rendered to zero tokens; give at least one message")
        return ids

    def _decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(
            list(token_ids), skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def _end_of_turn_ids(self) -> set[int]:
        ids: set[int] = set(self.settings.stop_token_ids)
        candidates: list[Any] = [self.tokenizer.eos_token_id]
        generation_config = getattr(self.model, "generation_config", None)
        eos = getattr(generation_config, "eos_token_id", None)
        candidates.extend(eos if isinstance(eos, list | tuple) else [eos])
        vocab = self.tokenizer.get_vocab()
        candidates.extend(vocab[token] for token in END_OF_TURN_TOKENS if token in vocab)
        ids.update(int(i) for i in candidates if i is not None)
        return ids

    def _left_pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, padded on the left so every row ends at the last
        column: the next token of every row is then predicted at the same position."""
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
                mask[i, width - len(row) :] = 1
        return ids.to(self.device), mask.to(self.device)

    @staticmethod
    def _positions(mask: torch.Tensor) -> torch.Tensor:
        # Left padding shifts the real tokens; positions must count real tokens only.
        return (mask.cumsum(-1) - 1).clamp(min=0)

    # ------------------------------------------------------------------ generate

    @torch.inference_mode()
    def generate(
        self, prompts: Sequence[Chat], config: GenerationConfig, seeds: Seeds = None
    ) -> list[Generation]:
        """One completion per prompt (see the module docstring for what logprobs mean).

        Rows stop independently at an end-of-turn token (kept in ``token_ids`` and
        ``logprobs``, not in ``text``) or when the text contains a stop string (the
        text is cut before it; ``token_ids`` keep every sampled token, so they may
        decode to more than ``text``). Without seeds, sampling draws fresh seeds from
        the OS: not reproducible.
        """
        _check_config(config)
        if seeds is None:
            seeds = [secrets.randbits(63) for _ in prompts]
        if len(seeds) != len(prompts):
            raise ConfigError(f"got {len(seeds)} seeds for {len(prompts)} prompts; give one each")
        prompt_ids = [self.encode_chat(chat) for chat in prompts]
        stops = tuple(config.stop)
        if not self.has_chat_template:
            stops += self.settings.template_stop
        self.counters["prompt_tokens"] += sum(len(ids) for ids in prompt_ids)
        columns = self.settings.static_cache and self._maskable()
        reuse = columns and self.settings.prefix_reuse
        if reuse:
            self.prefix_pool.check_model(self.model)
        kept: list[CachedPrefix] = []
        # Similar lengths together waste less on padding; per-row generators make the
        # order irrelevant to the samples.
        order = sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i]))
        results: list[Generation | None] = [None] * len(prompts)
        for chunk in _batched(order, self.settings.max_batch_size):
            rows = _Rows(self, [prompt_ids[i] for i in chunk], config, stops)
            generators = [torch.Generator().manual_seed(int(seeds[i]) % 2**63) for i in chunk]
            if config.max_new_tokens == 0:
                generations = rows.generations()
            elif columns:
                pool = self.prefix_pool if reuse else None
                generations = self._generate_columns(rows, config, generators, pool, kept)
            else:
                generations = self._generate_batch(rows, config, generators)
            for i, generation in zip(chunk, generations, strict=True):
                results[i] = generation
        if reuse:
            self.prefix_pool.replace(kept)
        return [g for g in results if g is not None]

    def clear_prefix_cache(self) -> None:
        """Forget the prompt prefixes kept for reuse (they are also dropped by themselves
        when the weights change)."""
        self.prefix_pool.clear()

    def _with_cache(self, cache: Any) -> dict[str, Any]:
        return {self._cache_argument: cache}

    def _maskable(self) -> bool:
        return getattr(self.model.config, "_attn_implementation", "eager") in MASKABLE

    def _generate_batch(
        self, rows: _Rows, config: GenerationConfig, generators: list[torch.Generator]
    ) -> list[Generation]:
        """The plain path: a full left-padded prefill, then a cache grown by concatenation
        (``static_cache=False``, or a model whose attention takes no custom mask)."""
        prompt_ids = rows.prompt_ids
        out, mask, positions = self._prefill(prompt_ids)
        self.counters["prefilled_tokens"] += sum(len(ids) for ids in prompt_ids)
        cache, logits = _output_cache(out), out.logits[:, -1, :]
        next_position = positions[:, -1] + 1
        active = list(range(len(prompt_ids)))  # original row of each row still in the batch
        for _ in range(config.max_new_tokens):
            chosen, chosen_logprobs = _sample(logits, config, [generators[i] for i in active])
            keep = [
                j
                for j, (token, logprob) in enumerate(
                    zip(chosen.tolist(), chosen_logprobs.tolist(), strict=True)
                )
                if rows.add(active[j], token, logprob)
            ]
            if not keep:
                break
            if len(keep) < len(active):
                # Finished rows leave the batch: later steps cost only the live rows.
                index = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(index)
                mask, next_position, chosen = mask[index], next_position[index], chosen[index]
                active = [active[j] for j in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            out = self.model(
                input_ids=chosen[:, None],
                attention_mask=mask,
                position_ids=next_position[:, None],
                **self._with_cache(cache),
                use_cache=True,
            )
            cache, logits = _output_cache(out), out.logits[:, -1, :]
            next_position = next_position + 1
        return rows.generations()

    def _generate_columns(
        self,
        rows: _Rows,
        config: GenerationConfig,
        generators: list[torch.Generator],
        pool: PrefixPool | None,
        kept: list[CachedPrefix],
    ) -> list[Generation]:
        """Generation on a preallocated column cache, reusing pooled prompt prefixes.

        Layout (see kv_reuse.py): reused prefixes end at column P (left-padded), the
        new prompt tokens end at column P + W (left-padded within W), generated tokens
        follow, one column per step for all live rows. Appends this batch's prefixes
        to ``kept`` for the next call.
        """
        prompt_ids = rows.prompt_ids
        n = len(prompt_ids)
        device = self.device
        arrays = [np.asarray(ids, dtype=np.int64) for ids in prompt_ids]
        matches = [pool.match(ids) if pool is not None else (None, 0) for ids in arrays]
        matches = self._share_common_prefix(arrays, matches)
        reused = [length for _, length in matches]
        fresh = [ids[r:] for ids, r in zip(prompt_ids, reused, strict=True)]
        prefix, window = max(reused), max(len(f) for f in fresh)
        self.counters["prefilled_tokens"] += sum(len(f) for f in fresh)
        prompt_end = prefix + window
        cache = ColumnCache(self.model, n, prompt_end + config.max_new_tokens - 1)
        valid = torch.zeros((n, cache.width), dtype=torch.bool, device=device)
        positions = torch.zeros((n, cache.width), dtype=torch.long, device=device)
        input_ids = torch.full((n, window), self.pad_token_id, dtype=torch.long, device=device)
        for i, (r, new) in enumerate(zip(reused, fresh, strict=True)):
            valid[i, prefix - r : prefix] = True
            positions[i, prefix - r : prefix] = torch.arange(r, device=device)
            valid[i, prompt_end - len(new) : prompt_end] = True
            positions[i, prompt_end - len(new) : prompt_end] = torch.arange(
                r, r + len(new), device=device
            )
            input_ids[i, window - len(new) :] = torch.tensor(new, dtype=torch.long)
        self._gather_prefixes(cache, matches, prefix)

        # Prefill the new tokens: each sees its row's valid columns up to itself.
        columns = torch.arange(prompt_end, device=device)
        query_columns = columns[prefix:]
        allowed = valid[:, None, :prompt_end] & (columns[None, :] <= query_columns[:, None])
        cache.cursor.column = prefix
        out = self.model(
            input_ids=input_ids,
            attention_mask=model_attention_mask(
                self.model, allowed, positions[:, prefix:prompt_end], positions[:, :prompt_end]
            ),
            position_ids=positions[:, prefix:prompt_end],
            **self._with_cache(cache),
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1, :]
        next_position = positions[:, prompt_end - 1] + 1
        slot_row = list(range(n))  # original row in each slot; the first cache.cursor.live are live
        column = prompt_end
        for _ in range(config.max_new_tokens):
            live_generators = [generators[i] for i in slot_row[: cache.cursor.live]]
            chosen, chosen_logprobs = _sample(logits, config, live_generators)
            done = [
                j
                for j, (token, logprob) in enumerate(
                    zip(chosen.tolist(), chosen_logprobs.tolist(), strict=True)
                )
                if not rows.add(slot_row[j], token, logprob)
            ]
            # Finished rows move behind the live block (two rows copied each), in
            # descending order so a later swap never picks a row already moved.
            for j in sorted(done, reverse=True):
                last = cache.cursor.live - 1
                if j != last:
                    cache.swap(j, last)
                    for tensor in (valid, positions, next_position, chosen):
                        tensor[[j, last]] = tensor[[last, j]]
                    slot_row[j], slot_row[last] = slot_row[last], slot_row[j]
                cache.cursor.live = last
            live = cache.cursor.live
            if live == 0:
                break
            valid[:live, column] = True
            positions[:live, column] = next_position[:live]
            cache.cursor.column = column
            out = self.model(
                input_ids=chosen[:live, None],
                attention_mask=model_attention_mask(
                    self.model,
                    valid[:live, None, : column + 1],
                    positions[:live, column : column + 1],
                    positions[:live, : column + 1],
                ),
                position_ids=next_position[:live, None],
                **self._with_cache(cache),
                use_cache=True,
            )
            logits = out.logits[:, -1, :]
            next_position[:live] += 1
            column += 1

        if pool is not None:
            for slot, row in enumerate(slot_row):
                fed = prompt_ids[row] + rows.tokens[row][:-1]
                kept.append(
                    CachedPrefix(
                        np.asarray(fed, dtype=np.int64),
                        cache,
                        slot,
                        valid[slot].nonzero().squeeze(1),
                    )  # fmt: skip
                )
        return rows.generations()

    def _share_common_prefix(
        self, arrays: list[np.ndarray], matches: list[tuple[CachedPrefix | None, int]]
    ) -> list[tuple[CachedPrefix | None, int]]:
        """Prefill the prefix common to every prompt once (the task text shared by the
        episodes of a batch), for the rows that found no longer one in the pool."""
        if len(arrays) < 2:
            return matches
        shared = min(len(ids) for ids in arrays) - 1
        for ids in arrays[1:]:
            shared = min(shared, common_prefix(arrays[0], ids))
        needing = [i for i, (_, length) in enumerate(matches) if length < shared]
        if shared < 1 or len(needing) < 2:
            return matches
        cache = ColumnCache(self.model, 1, shared)
        self.counters["prefilled_tokens"] += shared
        ids = torch.tensor(arrays[0][None, :shared], device=self.device)
        positions = torch.arange(shared, device=self.device)[None, :]
        allowed = (positions[0, None, :] <= positions[0, :, None])[None]
        self.model(
            input_ids=ids,
            attention_mask=model_attention_mask(self.model, allowed, positions, positions),
            position_ids=positions,
            **self._with_cache(cache),
            use_cache=True,
            logits_to_keep=1,
        )
        entry = CachedPrefix(arrays[0][:shared], cache, 0, positions[0])
        return [(entry, shared) if i in needing else match for i, match in enumerate(matches)]

    @staticmethod
    def _gather_prefixes(
        cache: ColumnCache, matches: list[tuple[CachedPrefix | None, int]], prefix: int
    ) -> None:
        """Copy each row's matched prefix into its columns ending at ``prefix``."""
        groups: dict[int, list[int]] = {}
        for i, (entry, length) in enumerate(matches):
            if entry is not None and length > 0:
                groups.setdefault(id(entry.cache), []).append(i)
        for members in groups.values():
            source = _entry(matches[members[0]]).cache
            columns = []
            for i in members:
                entry, length = _entry(matches[i]), matches[i][1]
                held = entry.columns[:length]
                # Left padding repeats the first column: finite values that stay masked.
                pad = held[:1].expand(prefix - length)
                columns.append(torch.cat([pad, held]))
            device = source.layers[0].keys.device
            slots = torch.tensor([_entry(matches[i]).slot for i in members], device=device)
            rows = torch.tensor(members, device=device)
            cache.gather_into(rows, prefix, source, slots, torch.stack(columns))

    # ------------------------------------------------------------------ score

    def continuation_ids(self, chat: Chat, text: str) -> list[int]:
        """Tokens of ``text`` as the start of the assistant's reply to ``chat``: the
        tokens :meth:`score` gives its log-probability over."""
        return self._continuation_ids(self.render(chat), self.encode_chat(chat), text)

    def _continuation_ids(self, prompt_text: str, prompt_ids: list[int], text: str) -> list[int]:
        """Tokens of ``text`` as the model would see them after the prompt.

        Tokenizing prompt+text and taking the suffix after the prompt's tokens gives
        the tokenization the model itself would most likely produce. If the two do not
        share the prompt's tokens as a prefix (a merge across the boundary), the text
        is tokenized alone and appended: the prompt stays exactly the same for every
        candidate, which is what makes their scores comparable.
        """
        if not text:
            return []
        full = self._encode_text(prompt_text + text)
        if full[: len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids):
            return full[len(prompt_ids) :]
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @torch.inference_mode()
    def score(
        self, prompts: Sequence[Chat], continuations: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        """Summed log-probs of each candidate as the start of the assistant's reply.

        A prompt and its candidates are packed as one sequence, the candidates as
        branches of the prompt (:mod:`agentbench.models.packing`): a prompt with K
        candidates costs one pass over the prompt plus its K candidates' tokens, the
        units of a batch together. An empty candidate scores 0.
        """
        if len(prompts) != len(continuations):
            raise ConfigError(
                f"got {len(continuations)} candidate lists for {len(prompts)} prompts; "
                "give one list per prompt"
            )
        prompt_texts = [self.render(chat) for chat in prompts]
        prompt_ids = [self.encode_chat(chat) for chat in prompts]
        candidate_ids = [
            [self._continuation_ids(prompt_texts[i], prompt_ids[i], text) for text in texts]
            for i, texts in enumerate(continuations)
        ]
        scores = [[0.0] * len(texts) for texts in continuations]
        if self._score_from_pool(prompt_ids, candidate_ids, scores):
            return scores
        limit = self.settings.score_batch_size
        # A unit is one prompt with up to `limit` of its candidates; a batch is units
        # whose candidates add up to at most `limit` sequences.
        units = [
            (i, chunk)
            for i, ids in enumerate(candidate_ids)
            for chunk in _batched([k for k, c in enumerate(ids) if c], limit)
        ]
        batch: list[tuple[int, list[int]]] = []
        for unit in units:
            if batch and sum(len(c) for _, c in batch) + len(unit[1]) > limit:
                self._score_batch(batch, prompt_ids, candidate_ids, scores)
                batch = []
            batch.append(unit)
        if batch:
            self._score_batch(batch, prompt_ids, candidate_ids, scores)
        return scores

    def _prefill(self, prompt_ids: list[list[int]]) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """One left-padded forward pass over the prompts, keeping the KV cache and the
        last position's logits: (model output, attention mask, position ids)."""
        input_ids, mask = self._left_pad(prompt_ids)
        positions = self._positions(mask)
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        return out, mask, positions

    def _score_from_pool(
        self,
        prompt_ids: list[list[int]],
        candidate_ids: list[list[list[int]]],
        scores: list[list[float]],
    ) -> bool:
        """Score the candidates on the prompts' prefixes kept by the last generate call
        (answer forcing scores right after the answer it completes): only what the pool
        lacks is prefilled. False (nothing done) when prefix reuse is off or no prompt
        finds a kept prefix; the packed path then scores from scratch.

        Layout: one row per prompt in a column cache (kv_reuse.py): the reused prefix
        ends at column P, then, left-padded within W, the prompt's unmatched tokens and
        its candidates one after another. A candidate's tokens see the prompt and
        themselves, never another candidate: the branches of :meth:`score`'s packing.
        Chunks of at most ``score_batch_size`` candidate sequences.
        """
        if not (self.settings.static_cache and self.settings.prefix_reuse and self._maskable()):
            return False
        self.prefix_pool.check_model(self.model)
        arrays = [np.asarray(ids, dtype=np.int64) for ids in prompt_ids]
        matches = [self.prefix_pool.match(ids) for ids in arrays]
        if not any(length > 0 for _, length in matches):
            return False
        chunk: list[int] = []
        held = 0  # candidate sequences in `chunk`
        for i, ids in enumerate(candidate_ids):
            count = sum(1 for c in ids if c)
            if count == 0:
                continue
            if chunk and held + count > self.settings.score_batch_size:
                self._score_columns(chunk, arrays, matches, candidate_ids, scores)
                chunk, held = [], 0
            chunk.append(i)
            held += count
        if chunk:
            self._score_columns(chunk, arrays, matches, candidate_ids, scores)
        return True

    def _score_columns(
        self,
        chunk: list[int],
        arrays: list[np.ndarray],
        matches: list[tuple[CachedPrefix | None, int]],
        candidate_ids: list[list[list[int]]],
        scores: list[list[float]],
    ) -> None:
        """One forward pass over the prompts ``chunk`` (see :meth:`_score_from_pool`).

        The tokens a prompt's candidates all start with (answer forcing's candidates
        share the model's text and ``ACTION=``) are run once, in the prompt's trunk;
        only the rest of each candidate is a branch.
        """
        device = self.device
        chunk_matches = self._share_common_prefix([arrays[i] for i in chunk],
                                                  [matches[i] for i in chunk])  # fmt: skip
        reused = [length for _, length in chunk_matches]
        rows = [
            _ScoreRow(arrays[i], r, candidate_ids[i]) for i, r in zip(chunk, reused, strict=True)
        ]
        n, prefix, window = len(chunk), max(reused), max(len(row.new) for row in rows)
        self.counters["prefilled_tokens"] += sum(len(row.new) for row in rows)
        end = prefix + window
        cache = ColumnCache(self.model, n, end)
        valid = torch.zeros((n, end), dtype=torch.bool, device=device)
        positions = torch.zeros((n, end), dtype=torch.long, device=device)
        branches = torch.full((n, end), -1, dtype=torch.long, device=device)
        input_ids = torch.full((n, window), self.pad_token_id, dtype=torch.long, device=device)
        for k, (r, row) in enumerate(zip(reused, rows, strict=True)):
            valid[k, prefix - r : prefix] = True
            positions[k, prefix - r : prefix] = torch.arange(r, device=device)
            valid[k, end - len(row.new) :] = True
            branches[k, end - len(row.new) :] = torch.tensor(row.branch, device=device)
            positions[k, end - len(row.new) :] = torch.tensor(row.positions, device=device)
            input_ids[k, window - len(row.new) :] = torch.tensor(row.new, dtype=torch.long)
        self._gather_prefixes(cache, chunk_matches, prefix)
        columns = torch.arange(end, device=device)
        query = branches[:, prefix:, None]
        key = branches[:, None, :]
        allowed = (
            valid[:, None, :]
            & (columns[None, None, :] <= columns[None, prefix:, None])
            & ((key == -1) | (key == query))
        )
        cache.cursor.column = prefix
        # Logits only where a candidate token is predicted: the rows end together, so
        # that is the last `keep` columns (from the earliest prompt-last-token on).
        keep = max(row.scored for row in rows)
        logits = self.model(
            input_ids=input_ids,
            attention_mask=model_attention_mask(
                self.model, allowed, positions[:, prefix:], positions
            ),
            position_ids=positions[:, prefix:],
            **self._with_cache(cache),
            use_cache=True,
            logits_to_keep=keep,
        ).logits.float()  # (n, keep, vocab)
        logprobs = torch.log_softmax(logits, dim=-1)
        for k, (i, row) in enumerate(zip(chunk, rows, strict=True)):
            # the row's first new token, counted from the first kept column
            offset = keep - len(row.new)
            for c, (sources, targets) in row.predictions(offset).items():
                picked = logprobs[k, sources, torch.tensor(targets, device=device)]
                scores[i][c] = float(picked.sum())

    def _score_batch(
        self,
        units: list[tuple[int, list[int]]],
        prompt_ids: list[list[int]],
        candidate_ids: list[list[list[int]]],
        scores: list[list[float]],
    ) -> None:
        """One packed forward pass: each unit's prompt once, its candidates as branches."""
        pairs = [(i, k) for i, chunk in units for k in chunk]
        packed = packed_logprobs(
            self.model,
            [prompt_ids[i] for i, _ in pairs],
            [candidate_ids[i][k] for i, k in pairs],
            groups=[u for u, (_, chunk) in enumerate(units) for _ in chunk],
            pad_token_id=self.pad_token_id,
        )
        for (i, k), logprobs in zip(pairs, packed.logprobs, strict=True):
            scores[i][k] = float(logprobs.sum())

    # ------------------------------------------------------------------ training

    def sequence_logprobs(
        self,
        prompt_token_ids: Sequence[Sequence[int]],
        completion_token_ids: Sequence[Sequence[int]],
        temperature: float = 1.0,
    ) -> list[torch.Tensor]:
        """Per-token log-probs of each completion after its prompt, in one forward pass.

        Returns one 1-D tensor per row (length of that completion). With the model in
        train mode the graph is kept, for the policy-gradient loss; in eval mode no
        graph is built. ``temperature`` divides the logits, to match rollouts sampled
        at a temperature other than 1. Matches ``Generation.logprobs`` of a rollout at
        the same temperature with top-p 1 (up to floating-point noise).
        """
        check_logprob_inputs(prompt_token_ids, completion_token_ids, temperature)
        lengths = [len(c) for c in completion_token_ids]
        longest = max(lengths, default=0)
        if longest == 0:
            return [torch.zeros(0, device=self.device) for _ in lengths]
        rows = [
            list(p) + list(c) for p, c in zip(prompt_token_ids, completion_token_ids, strict=True)
        ]
        input_ids, mask = self._left_pad(rows)
        grad = nullcontext() if self.model.training else torch.no_grad()
        with grad:
            # Left padding puts every completion at the end: only the last `longest`+1
            # positions need logits, which keeps the (rows x vocab) tensor small.
            logits = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=self._positions(mask),
                use_cache=False,
                logits_to_keep=longest + 1,
            ).logits  # (rows, longest + 1, vocab); the last position predicts nothing
            rows, width, vocab = logits.shape
            targets = input_ids[:, -longest:].reshape(-1)
            index = torch.arange(rows * width, device=logits.device).view(rows, width)
            token_logprobs = selected_logprobs(
                logits.reshape(-1, vocab), index[:, :-1].reshape(-1), targets, temperature
            ).view(rows, longest)
        return [token_logprobs[i, longest - n :] for i, n in enumerate(lengths)]

    def packed_logprobs(
        self,
        prompt_token_ids: Sequence[Sequence[int]],
        completion_token_ids: Sequence[Sequence[int]],
        temperature: float = 1.0,
        groups: Sequence[Any] | None = None,
        max_packed_tokens: int = DEFAULT_MAX_PACKED_TOKENS,
    ) -> PackedLogprobs:
        """``sequence_logprobs`` with rows that share a prefix packed as one trie, the
        prefix forwarded once (:func:`agentbench.models.packing.packed_logprobs`): the
        same log-probs up to summation order, in one forward pass. Rows pack in the order
        given, a new trie where ``groups`` changes or a trie would exceed
        ``max_packed_tokens``. Graph kept in train mode only, as ``sequence_logprobs``."""
        grad = nullcontext() if self.model.training else torch.no_grad()
        with grad:
            return packed_logprobs(
                self.model,
                prompt_token_ids,
                completion_token_ids,
                temperature=temperature,
                groups=groups,
                max_packed_tokens=max_packed_tokens,
                pad_token_id=self.pad_token_id,
            )


def _check_config(config: GenerationConfig) -> None:
    if config.max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens {config.max_new_tokens} must be 0 or more")
    if config.temperature < 0:
        raise ConfigError(f"temperature {config.temperature} must be 0 (greedy) or positive")
    if not 0 < config.top_p <= 1:
        raise ConfigError(f"top_p {config.top_p} must be in (0, 1]")
    if any(not stop for stop in config.stop):
        raise ConfigError(f"stop strings {config.stop!r} must be non-empty")


def _find_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest stop string in ``text``, or -1."""
    found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    return min(found, default=-1)


def _sample(
    logits: torch.Tensor, config: GenerationConfig, generators: Sequence[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next token of each row and its log-prob (see the module docstring for which one)."""
    logits = logits.float()
    if config.temperature == 0:
        logprobs = F.log_softmax(logits, dim=-1)
        chosen = logits.argmax(dim=-1)
        return chosen, logprobs.gather(1, chosen[:, None]).squeeze(1)
    logprobs = F.log_softmax(logits / config.temperature, dim=-1)
    order = None
    if config.top_p < 1:
        # Keep the smallest set of most likely tokens whose mass reaches top_p.
        logprobs, order = logprobs.sort(dim=-1, descending=True)
        probs = logprobs.exp()
        outside = (probs.cumsum(dim=-1) - probs) >= config.top_p
        logprobs = logprobs.masked_fill(outside, float("-inf"))
        logprobs = logprobs - logprobs.logsumexp(dim=-1, keepdim=True)
    # Inverse-CDF sampling with one uniform per row from the row's own generator.
    uniforms = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])
    cdf = logprobs.exp().double().cumsum(dim=-1)
    targets = uniforms.to(cdf.device)[:, None] * cdf[:, -1:]
    index = torch.searchsorted(cdf, targets, right=True).clamp(max=cdf.shape[-1] - 1)
    chosen_logprobs = logprobs.gather(1, index).squeeze(1)
    chosen = index.squeeze(1) if order is None else order.gather(1, index).squeeze(1)
    return chosen, chosen_logprobs


def _output_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _entry(match: tuple[CachedPrefix | None, int]) -> CachedPrefix:
    entry = match[0]
    if entry is None:
        raise AssertionError("a row without a matched prefix has nothing to gather")
    return entry


class _Rows:
    """What each row of a batch has generated so far, and why it stopped."""

    def __init__(
        self,
        backend: TransformersGenerator,
        prompt_ids: list[list[int]],
        config: GenerationConfig,
        stops: tuple[str, ...],
    ) -> None:
        self.backend, self.prompt_ids, self.stops = backend, prompt_ids, stops
        self.max_new_tokens = config.max_new_tokens
        self.tokens: list[list[int]] = [[] for _ in prompt_ids]
        self.logprobs: list[list[float]] = [[] for _ in prompt_ids]
        self.finish = ["length"] * len(prompt_ids)

    def add(self, row: int, token: int, logprob: float) -> bool:
        """Record a sampled token; True while the row goes on."""
        self.tokens[row].append(token)
        self.logprobs[row].append(logprob)
        if token in self.backend.stop_token_ids or (
            self.stops and _find_stop(self.backend._decode(self.tokens[row]), self.stops) >= 0
        ):
            self.finish[row] = "stop"
            return False
        return len(self.tokens[row]) < self.max_new_tokens

    def generations(self) -> list[Generation]:
        generations = []
        for row, prompt in enumerate(self.prompt_ids):
            body = self.tokens[row]
            if body and body[-1] in self.backend.stop_token_ids:
                body = body[:-1]
            text = self.backend._decode(body)
            cut = _find_stop(text, self.stops) if self.stops else -1
            if cut >= 0:
                text, self.finish[row] = text[:cut], "stop"
            generations.append(
                Generation(text, self.tokens[row], self.logprobs[row], prompt, self.finish[row])
            )
        return generations


class _ScoreRow:
    """One prompt's row of :meth:`TransformersGenerator._score_columns`: after the
    ``reused`` tokens held in the cache, the trunk (the rest of the prompt and the
    tokens every candidate starts with, branch -1), then each candidate's remaining
    tokens as branch ``c``."""

    def __init__(self, prompt: np.ndarray, reused: int, candidates: list[list[int]]) -> None:
        self.candidates = candidates
        filled = [ids for ids in candidates if ids]
        shared = min(len(ids) for ids in filled)
        for ids in filled[1:]:
            shared = min(shared, common_prefix(np.asarray(filled[0]), np.asarray(ids)))
        self.shared = shared
        self.prompt_length = len(prompt)
        self.new = [int(t) for t in prompt[reused:]] + list(filled[0][:shared])
        self.branch = [-1] * len(self.new)
        self.positions = list(range(reused, self.prompt_length + shared))
        self.trunk = len(self.new)
        self.starts: dict[int, int] = {}  # candidate -> its branch's first index in `new`
        for c, ids in enumerate(candidates):
            if ids:
                self.starts[c] = len(self.new)
                rest = ids[shared:]
                self.new += rest
                self.branch += [c] * len(rest)
                self.positions += range(self.prompt_length + shared, self.prompt_length + len(ids))

    @property
    def scored(self) -> int:
        """How many of the row's last tokens need logits: from the prompt's last token
        (it predicts the first candidate token) to the end."""
        return len(self.new) - (self.trunk - self.shared - 1)

    def predictions(self, offset: int) -> dict[int, tuple[list[int], list[int]]]:
        """For each non-empty candidate: the indices of the logits that predict its
        tokens, and the tokens (index ``offset`` is the row's first new token; it may
        be negative, where the logits start within the row)."""
        first_shared = offset + self.trunk - self.shared - 1  # the prompt's last token
        result = {}
        for c, start in self.starts.items():
            ids = self.candidates[c]
            sources = [first_shared + j for j in range(min(self.shared + 1, len(ids)))]
            sources += [offset + start + j for j in range(len(ids) - self.shared - 1)]
            result[c] = (sources, list(ids))
        return result
