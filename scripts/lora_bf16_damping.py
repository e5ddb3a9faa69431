"""How much of a LoRA adapter's effect survives a bf16 base? The same adapter, on the same
tokens, over SmolLM2 in float32 and in bf16.

peft adds a LoRA layer's output to the frozen layer's output and casts the sum back to the
base's dtype, so over a bf16 base an adapter's contribution is rounded to 8 bits of mantissa
at every layer. This script loads a trained adapter (a PPO checkpoint directory), scales its
B matrices by each ``--scales`` factor (smaller factors stand for smaller updates), and
prints, for each base dtype, the mean absolute change of the next-token log-probs that the
adapter makes on a fixed bandit-shaped text (adapter on vs off, the same weights, the same
tokens), and ``kept_<scale>``: the bf16 change projected on the float32 one
(<d_bf16, d_f32> / <d_f32, d_f32>, over the tokens): near 1, the bf16 base keeps the
adapter's effect; near 0, it swallows it. Any perturbation of a bf16 forward also flips
roundings that the layers amplify, so the bf16 change has a floor of its own
(``mean_abs_logprob_change_bf16`` at the smallest scales); the projection separates the
adapter's effect from that noise.

    .venv/bin/python scripts/lora_bf16_damping.py runs/rlft/forced-bandit5/checkpoints/update_000001

bf16 runs emulated (slowly) on CPUs without native bf16; 128 tokens keep it to minutes.
"""

from __future__ import annotations

import argparse

import torch

from agentbench.models import catalog

TEXT = (
    "You are in a room with 5 buttons labeled red, blue, green, yellow, purple. Each button "
    "gives a random reward when pressed. Your goal is to maximise the total reward over 50 "
    "steps.\nstep=0 action=red reward=0.62\nstep=1 action=red reward=0.41\nstep=2 "
    "action=blue reward=0.15\nstep=3 action=red reward=0.77\nstep=4 action=red reward=0.58\n"
    "step=5 action=green reward=0.33\nstep=6 action=red reward=0.49\nWhich button do you press "
    "next? Answer with ACTION=<label>.\nACTION=red"
)


def _token_logprobs(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    return torch.log_softmax(logits[0, :-1], dim=-1).gather(1, ids[0, 1:, None])[:, 0]


def adapter_effect(
    checkpoint: str, dtype: torch.dtype, scales: list[float], tokens: int
) -> dict[float, torch.Tensor]:
    """The per-token log-prob change the adapter makes over a base in ``dtype``, per scale."""
    from peft import PeftModel

    generator = catalog.resolve_model("smollm2-135m-instruct", device="cpu", dtype=dtype)
    ids = generator.tokenizer(TEXT, return_tensors="pt").input_ids[:, :tokens]
    model = PeftModel.from_pretrained(generator.model, checkpoint).eval()
    b_weights = {
        name: p.detach().clone() for name, p in model.named_parameters() if "lora_B" in name
    }
    with model.disable_adapter():
        off = _token_logprobs(model, ids)
    effects = {}
    for scale in scales:
        for name, p in model.named_parameters():
            if name in b_weights:
                p.data.copy_(b_weights[name] * scale)
        on = _token_logprobs(model, ids)
        effects[scale] = on - off
    return effects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a PPO checkpoint directory holding LoRA adapters")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.1, 0.01])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    effects = {
        label: adapter_effect(args.checkpoint, dtype, args.scales, args.tokens)
        for label, dtype in (("float32", torch.float32), ("bf16", torch.bfloat16))
    }
    for label, by_scale in effects.items():
        for scale, change in by_scale.items():
            print(f"mean_abs_logprob_change_{label}_{scale:g}={float(change.abs().mean()):.6f}")
    for scale in args.scales:
        exact, rounded = effects["float32"][scale], effects["bf16"][scale]
        print(f"kept_{scale:g}={float(rounded @ exact / (exact @ exact)):.3f}")


if __name__ == "__main__":
    main()
