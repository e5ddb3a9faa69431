"""Gradient checkpointing trades compute for memory and changes nothing else.

Recomputing a layer's activations in the backward pass runs the same float32
arithmetic again, so the gradients (packed passes, LoRA and full fine-tuning)
and a whole PPO update come out the same as without it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agentbench.agent.llm import LLMAgentSettings
from agentbench.models.tiny import tiny_generator
from agentbench.rlft.config import EnvSettings, PPOConfig
from agentbench.rlft.policy import add_lora
from agentbench.rlft.ppo import PPOTrainer
from agentbench.rlft.precision import set_gradient_checkpointing

PROMPTS = [[5, 6, 7, 8, 9, 10], [5, 6, 7, 8, 11], [5, 6, 12]]
COMPLETIONS = [[20, 21, 22], [23, 24], [25, 26, 27, 28]]


def _gradients(lora: bool, checkpointing: bool) -> dict[str, torch.Tensor]:
    generator = tiny_generator(seed=3)
    model = add_lora(generator.model) if lora else generator.model.requires_grad_(True)
    generator.model = model
    set_gradient_checkpointing(model, checkpointing)
    model.train()
    layer = next(m for n, m in model.named_modules() if n.endswith("layers.0"))
    runs: list[int] = []
    if checkpointing:  # count the layer's forwards that go through torch's checkpoint
        inner = layer._gradient_checkpointing_func
        layer._gradient_checkpointing_func = lambda *a, **k: runs.append(1) or inner(*a, **k)
    packed = generator.packed_logprobs(PROMPTS, COMPLETIONS, groups=[0, 0, 0])
    torch.cat(packed.logprobs).sum().backward()
    assert len(runs) == (1 if checkpointing else 0)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("lora", [False, True])
def test_checkpointed_gradients_equal_the_plain_ones(lora: bool) -> None:
    plain, checkpointed = _gradients(lora, False), _gradients(lora, True)
    assert plain.keys() == checkpointed.keys() and plain
    assert any(g.abs().sum() > 0 for g in plain.values())
    for name, gradient in plain.items():
        torch.testing.assert_close(checkpointed[name], gradient, rtol=1e-5, atol=1e-6,
                                   msg=name)  # fmt: skip


def test_a_ppo_update_is_the_same_with_checkpointing(tmp_path: Path) -> None:
    def update(checkpointing: bool) -> dict[str, float]:
        config = PPOConfig(
            env=EnvSettings("agentbench/BernoulliBandit-5arms-low-button-v0", {"horizon": 4}),
            num_envs=4,
            episodes_per_update=4,
            total_updates=1,
            num_minibatches=2,
            agent=LLMAgentSettings(cot=False),
            optimizer="adamw",
            warmup_steps=0,
            eval_every=0,
            checkpoint_every=0,
            output_dir=str(tmp_path / str(checkpointing)),
            progress=False,
            gradient_checkpointing=checkpointing,
        )
        trainer = PPOTrainer(config, tiny_generator(seed=1))
        if checkpointing:
            base = trainer.model
            assert any(getattr(m, "gradient_checkpointing", False) for m in base.modules())
        return trainer.train()[-1]

    plain, checkpointed = update(False), update(True)
    for key in ("policy_loss", "kl", "return", "invalid_rate"):
        assert checkpointed[key] == pytest.approx(plain[key], rel=1e-5, abs=1e-7), key
