"""Agents by name, for suites and the CLI: the baselines plus ``llm``.

An LLM agent entry in a suite names its model and any agent settings:

    agents = [{ name = "llm", model = "smollm2-135m-instruct", budget = 64 }]
    agents = [{ name = "llm", model = "Qwen2.5-7B-Instruct",
                base_url = "http://127.0.0.1:8000/v1" }]          # vLLM, ollama, ...

``model`` is a catalog name (built-in alias, local path, GGUF file, hub id);
with ``base_url`` it is the model name on an OpenAI-compatible server, and the
keys ``api``, ``api_key_env``, ``concurrency``, ``timeout_s``, ``max_retries``
configure that server. Every other key is an :class:`LLMAgentSettings` field.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from agentbench.agent.interface import Agent
from agentbench.agent.llm import LLMAgent, settings_from_dict
from agentbench.baselines import AGENT_NAMES as BASELINE_NAMES
from agentbench.baselines import make_agent as make_baseline
from agentbench.models.interface import TextGenerator

LLM_AGENT = "llm"
DEFAULT_MODEL = "smollm2-135m-instruct"
AGENT_NAMES: tuple[str, ...] = (*BASELINE_NAMES, LLM_AGENT)
# Options of the local transformers backend (the rest are agent settings).
LOCAL_BACKEND_KEYS = ("device", "dtype")

# One loaded model per (model, backend options): several agents of a suite that
# differ only in agent settings share the weights.
_GENERATORS: dict[tuple, TextGenerator] = {}


def load_generator(model: str, **backend: Any) -> TextGenerator:
    """A text generator for ``model`` (cached): an HTTP server with ``base_url``, else local."""
    key = (model, tuple(sorted(backend.items())))
    if key not in _GENERATORS:
        if "base_url" in backend:
            from agentbench.models.http_backend import (
                OpenAICompatibleGenerator,
                OpenAICompatibleSettings,
            )

            _GENERATORS[key] = OpenAICompatibleGenerator(
                OpenAICompatibleSettings(model=model, **backend)
            )
        else:
            from agentbench.models.catalog import resolve_model

            _GENERATORS[key] = resolve_model(model, **backend)
    return _GENERATORS[key]


def _http_keys() -> set[str]:
    from agentbench.models.http_backend import OpenAICompatibleSettings

    return {f.name for f in fields(OpenAICompatibleSettings)} - {"model"}


def make_agent(name: str, **options: Any) -> Agent:
    """A baseline by name, or the LLM agent (``name="llm"``) with its model and settings."""
    if name != LLM_AGENT:
        return make_baseline(name, **options)
    options = dict(options)
    model = str(options.pop("model", DEFAULT_MODEL))
    backend_keys = _http_keys() if "base_url" in options else set(LOCAL_BACKEND_KEYS)
    backend = {key: options.pop(key) for key in list(options) if key in backend_keys}
    settings = settings_from_dict(options)
    generator = load_generator(model, **backend)
    return LLMAgent(generator, settings, name=f"llm:{model}")
