"""How far an exported (LoRA-merged) model is from the policy PPO trained.

`agentbench train --export` merges the LoRA adapters into the weights. Over a bf16
base the merged weights are rounded to bf16, so the exported model evaluated by
`agentbench run` is not bit-for-bit the trained policy. This script measures the
gap on held-out decisions and sets it next to how far training moved the policy:

    python scripts/check_export.py runs/rlft/forced-bandit5 runs/rlft/forced-bandit5/model

It plays a few greedy episodes with the trained policy (from the run's latest
checkpoint), and scores every ``--every``-th decision's tokens under three models:
the trained policy, the exported model and the starting model (adapters off). It
prints the mean absolute per-token log-prob difference of each pair.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from agentbench.agent.llm import LLMAgent
from agentbench.models.catalog import resolve_model
from agentbench.rlft import PPOTrainer
from agentbench.rlft.collection import played_with_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="PPO output directory (holds checkpoints)")
    parser.add_argument("export", help="the exported model directory")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--every", type=int, default=10, help="score every N-th decision")
    parser.add_argument("--seed", type=int, default=3_000_000, help="first held-out seed")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    trainer = PPOTrainer.resume(args.run)
    if not trainer.config.model.use_lora:
        raise SystemExit("the run trained every weight: its export is the policy itself")
    config = trainer.config
    agent = LLMAgent(trainer.policy, config.agent_settings(temperature=0.0), name="trained")
    trainer.model.eval()
    played = played_with_tokens(
        agent,
        config.env.id,
        range(args.seed, args.seed + args.episodes),
        num_envs=args.episodes,
        env_kwargs=config.env.kwargs,
    )
    steps = [step for episode in played for step in episode.steps[:: args.every]]
    prompts = [step.prompt_ids for step in steps]
    completions = [step.completion_ids for step in steps]

    def logprobs(generator) -> list[np.ndarray]:
        rows = generator.sequence_logprobs(prompts, completions)
        return [row.float().cpu().numpy() for row in rows]

    trained = logprobs(trainer.policy)
    with trainer.model.disable_adapter():
        start = logprobs(trainer.policy)
    exported = resolve_model(args.export, dtype=config.model.dtype)
    exported.model.eval()
    merged = logprobs(exported)

    def gap(a: list[np.ndarray], b: list[np.ndarray]) -> float:
        return float(np.mean(np.abs(np.concatenate(a) - np.concatenate(b))))

    result = {
        "decisions": len(steps),
        "tokens": int(sum(len(c) for c in completions)),
        "trained_vs_exported": gap(trained, merged),
        "trained_vs_start": gap(trained, start),
        "exported_vs_start": gap(merged, start),
        "update": trainer.update,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
