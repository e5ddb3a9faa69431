"""Tiny random-init causal LMs with a locally built tokenizer, for tests.

Nothing is downloaded: the tokenizer is byte-level (every byte is a token, so any
text an agent writes can be encoded and decoded back exactly) plus ChatML-style
special tokens, and the model is a small Llama initialised from a seed. Building
one takes a few milliseconds once transformers is imported.
"""

from __future__ import annotations

import torch

from agentbench.models.transformers_backend import (
    TransformersGenerator,
    TransformersSettings,
    resolve_device,
    resolve_dtype,
)

PAD, END_OF_TEXT, TURN_START, TURN_END = "<pad>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD, END_OF_TEXT, TURN_START, TURN_END)

# ChatML, as SmolLM2 and Qwen use it: exercises template rendering in tests.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_tokenizer(
    chat_template: str | None = CHATML_TEMPLATE, word_tokens: tuple[str, ...] = ()
) -> object:
    """A byte-level tokenizer (256 byte tokens + 4 special ones), built in memory.

    A BPE model with no merges over the byte-level alphabet: each UTF-8 byte is one
    token. ``chat_template=None`` gives a tokenizer without a template, to exercise
    the backend's plain fallback. ``word_tokens`` are extra whole-string tokens
    (ids after the bytes), e.g. ``("ACTION=",)``: a real BPE vocabulary spells the
    answer format in a token or two, where bytes make it a chain of seven samples.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    backend.add_tokens([AddedToken(word, normalized=False) for word in word_tokens])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=TURN_END,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny_generator(
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    init_std: float = 0.3,
    chat_template: str | None = CHATML_TEMPLATE,
    device: str | None = "cpu",
    dtype: str | torch.dtype | None = torch.float32,
    settings: TransformersSettings | None = None,
    word_tokens: tuple[str, ...] = (),
    vocab_size: int | None = None,
) -> TransformersGenerator:
    """A small random Llama behind the real backend; same seed, same weights.

        float32 on the CPU by default, so tests compare numbers without bf16 noise.
        ``init_std`` is larger than the usual 0.02, which would make a random model
        repeat one token whatever the prompt; at 0.3 greedy outputs differ by prompt,
        which is what batching tests need to see. ``word_tokens``: see :func:`byte_tokenizer`.
    ``vocab_size`` (default: the tokenizer's) gives the LM head a real model's width.
        The weights come from a forked RNG seeded with ``seed``: the caller's global
        torch RNG is left exactly as it was.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer(chat_template, word_tokens)
    config = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        initializer_range=init_std,
    )
    torch_device = resolve_device(device)
    # Seeding inside fork_rng: the caller's global torch RNG state is restored after.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.to(device=torch_device, dtype=resolve_dtype(dtype, torch_device)).eval()
    name = f"tiny-llama-seed{seed}" + "".join(f"+{word}" for word in word_tokens)
    return TransformersGenerator(model, tokenizer, name=name, settings=settings)
