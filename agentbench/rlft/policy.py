"""What every trainer does with the policy: adapters, seeded randomness, its own tokens,
and the learning-rate schedule. PPO, SFT, expert iteration and return-conditioned training all
stand on these; none of them owns them."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from agentbench.agent.interface import Decision
from agentbench.agent.llm import forced_prefix, forced_text
from agentbench.models.kv_reuse import common_prefix
from agentbench.records import Episode, Step


@contextmanager
def forked_torch_rng(seed: int) -> Iterator[None]:
    """Seed torch's global RNGs (dropout, peft's init) inside a fork: restored after.

    Dropout and peft draw from the global generators; forking keeps the caller's
    state untouched while making these draws reproducible from ``seed``.
    """
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed_all(seed)
        yield


def add_lora(
    model: Any,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.0,
    target_modules: list[str] | str = "all-linear",
    seed: int = 0,
) -> Any:
    """``model`` with peft LoRA adapters injected (in place, as peft does); only the
    adapters are trainable. With a bf16 model peft keeps the adapters in float32."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
    )
    # peft initialises LoRA A with the global RNG: seed it in a fork, so the run is
    # reproducible and the caller's RNG untouched.
    with forked_torch_rng(seed):
        return get_peft_model(model, lora)


@dataclass(frozen=True)
class PolicyTokens:
    """A step's answer as the trainers see it: the prompt, the answer's tokens, and which
    of them the policy generated (None: all of them)."""

    prompt_ids: list[int]
    completion_ids: list[int]
    trained: list[bool] | None = None  # False for template tokens (answer forcing's prefix)


def generated_tokens(
    episode: Episode, step: Step, decision: Decision, generator: Any = None
) -> PolicyTokens:
    """The prompt and generated token ids of a step's LLM answer (an ``on_decision``
    hook's arguments); an error for a step the model did not write itself (a
    template answer of try-all or epsilon-greedy), since RL fine-tuning trains only
    on the model's own answers. A forced answer (see :func:`forced_tokens`) needs the
    ``generator`` that scored it; its text may be empty (``direct_choice``): the label
    is still the policy's."""
    generation = decision.extras.get("generation")
    if generation is not None and decision.extras.get("forced"):
        if generator is None:
            raise RuntimeError(
                f"step {step.t} of episode seed {episode.seed} is a forced answer; its "
                "tokens need the generator that scored it"
            )
        return forced_tokens(generator, decision)
    if generation is None or not generation.token_ids:
        raise RuntimeError(
            f"step {step.t} of episode seed {episode.seed} has no generated tokens; "
            "RL fine-tuning trains only on the model's own answers"
        )
    return PolicyTokens(list(generation.prompt_token_ids), list(generation.token_ids))


def forced_tokens(generator: Any, decision: Decision) -> PolicyTokens:
    """A forced answer's tokens, as answer forcing scored them: the model's text, the
    ``ACTION=`` prefix and the chosen label, tokenized as one continuation of the prompt
    (``generator.continuation_ids``). The text and the label are the policy's
    (the label drawn from its own log-probabilities); the prefix between them is
    template, marked untrained, so it carries no policy-gradient or KL term. A token
    that straddles a boundary (a tokenizer merge) counts as template."""
    chat = decision.extras["prompt"]
    text = decision.extras["generation"].text
    # The last generation with the forced label, as it was scored (after self-correction
    # the decision's text also holds the first answer, which the review chat already has).
    label = decision.extras["forced"].get("label")
    full = generator.continuation_ids(
        chat, decision.text if label is None else forced_text(text, label)
    )
    ids = np.asarray(full)
    body = common_prefix(np.asarray(generator.continuation_ids(chat, text.rstrip())), ids)
    prefix = max(
        body, common_prefix(np.asarray(generator.continuation_ids(chat, forced_prefix(text))), ids)
    )
    trained = [i < body or i >= prefix for i in range(len(full))]
    return PolicyTokens(generator.encode_chat(chat), full, trained)


def lr_factor(step: int, warmup_steps: int, total_steps: int, lr: float, lr_min: float) -> float:
    """Multiplier of the peak lr at optimizer step ``step``: linear warm-up over
    ``warmup_steps`` (the first step already learns), then cosine decay to ``lr_min``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return (lr_min + (lr - lr_min) * 0.5 * (1 + math.cos(math.pi * progress))) / lr
