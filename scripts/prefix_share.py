"""What a server's prefix cache gets to reuse, step after step, in each context layout.

A prefix cache (vLLM, SGLang, llama.cpp's slots) keeps the tokens of earlier prompts
and prefills only what follows the longest prefix a new prompt shares with them. This
script rebuilds the prompts of one 50-step UCB episode on a bandit in the ``single``
and the ``turns`` layout (with and without the context summary), renders them with
a model's chat template and tokenizer (SmolLM2's by default), and prints per layout:
the mean prompt length, the mean number of tokens a step adds after the prefix it
shares with the previous prompt (what a cache must still prefill), and whether every
prompt is the start of the next. One ``name=value`` line per figure.

    python scripts/prefix_share.py [--model smollm2-135m-instruct] [--env ENV] [--steps 50]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from transformers import AutoTokenizer

from agentbench.agent.context import LAYOUTS, ContextSettings, build_context
from agentbench.baselines import make_agent
from agentbench.envs import make, text_env
from agentbench.models import local_model_dir
from agentbench.models.kv_reuse import common_prefix
from agentbench.rollout import play


def prompts(env_id: str, seed: int, settings: ContextSettings, tokenizer) -> list[list[int]]:
    """The token ids of every step's prompt in one UCB episode (``seed``)."""
    (episode,) = play(make_agent("ucb"), env_id, [seed])
    env = make(env_id)
    env.reset(seed=seed)
    view, ids = text_env(env), []
    for t, step in enumerate(episode.steps):
        chat = build_context(view, episode.steps[:t], settings, observation=step.observation)
        text = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        env.step(step.action)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="catalog name or path")
    parser.add_argument("--env", default="agentbench/GaussianBandit-5arms-medium-button-v0")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    path = local_model_dir(args.model) if not os.path.isdir(args.model) else args.model
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    for layout in LAYOUTS:
        for summary in (False, True):
            settings = ContextSettings(cot=False, layout=layout, summary=summary)
            ids = prompts(args.env, args.seed, settings, tokenizer)
            pairs = list(zip(ids, ids[1:], strict=False))
            shared = [common_prefix(np.array(a), np.array(b)) for a, b in pairs]
            added = [len(b) - s for (_, b), s in zip(pairs, shared, strict=True)]
            name = layout + ("_summary" if summary else "")
            print(f"{name}.prompt_tokens={np.mean([len(p) for p in ids]):.0f}")
            print(f"{name}.tokens_to_prefill_per_step={np.mean(added):.1f}")
            extends = all(s == len(a) for (a, _), s in zip(pairs, shared, strict=True))
            print(f"{name}.every_prompt_extends_the_last={extends}")


if __name__ == "__main__":
    main()
