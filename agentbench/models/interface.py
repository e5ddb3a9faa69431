"""What every text generator offers: batched generation and continuation scoring.

The LLM agent, the RLFT trainer and the analysers talk to models only through
this interface, so a local transformers model and an OpenAI-compatible server
are interchangeable where the server allows it.

A prompt is a chat: a list of ``{"role": ..., "content": ...}`` messages. A
backend renders it with the model's chat template when the model has one
(plain concatenation otherwise), so callers never format model-specific
special tokens themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from agentbench.errors import AgentbenchError

Message = dict[str, str]
Chat = list[Message]
Seeds = Sequence[int] | None  # one sampling seed per prompt; None: the generator's own


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling settings of one generate call (SPEC.md 2)."""

    max_new_tokens: int = 256  # the generation budget G
    temperature: float = 0.0  # 0: greedy decoding (evaluation); 1.0 in training rollouts
    top_p: float = 1.0
    stop: tuple[str, ...] = ()  # extra stop strings (the model's end-of-turn token always stops)


@dataclass
class Generation:
    """One completion, with what RL fine-tuning needs to recompute its probability."""

    text: str
    token_ids: list[int] = field(default_factory=list)  # generated tokens (empty if unknown)
    logprobs: list[float] = field(default_factory=list)  # log p(token) under the sampling policy
    prompt_token_ids: list[int] = field(default_factory=list)  # the rendered prompt's tokens
    finish_reason: str = "stop"  # "stop" (end of turn or stop string) or "length"


class GenerationError(AgentbenchError):
    """A backend could not produce a generation (server down, bad response, ...)."""


class UnsupportedOperation(AgentbenchError):
    """The backend cannot do this (e.g. scoring through a chat-only HTTP server)."""


@runtime_checkable
class TextGenerator(Protocol):
    name: str

    def generate(
        self, prompts: Sequence[Chat], config: GenerationConfig, seeds: Seeds = None
    ) -> list[Generation]:
        """One completion per prompt, in order.

        ``seeds`` (one per prompt) make sampling reproducible row by row,
        whatever else is in the batch; with temperature 0 they do not matter.
        """

    def score(
        self, prompts: Sequence[Chat], continuations: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        """Log-probability of each continuation as the start of the assistant's reply.

        ``continuations[i]`` are candidates for ``prompts[i]`` (e.g. ``ACTION=blue``,
        ``ACTION=green``, ...); returns the summed token log-probs of each.
        """
