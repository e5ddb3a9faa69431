"""The LLM loop's old and new paths side by side, on a real model, in one process.

    .venv/bin/python scripts/bench_llm_loop.py [--quick] [--rounds 3] [--threads 2]

Old and new run interleaved, round after round (median of the rounds), on the
same model object, so machine noise hits both alike. Prints one ``name=value``
line per figure; the ratios are old time / new time (higher is better) except
where the name says otherwise. Issue 11's targets are printed next to them.

- ``rollout_step_speedup``: one no-CoT step (step 41 of 50, C = 50) for 16
  episodes of the 5-arm Gaussian bandit. Old: the whole prompt is prefilled and
  the cache grows by concatenation. New: the step-40 prompts are in the prefix
  pool (the untimed step 40 put them there), so only the new tokens are run.
- ``rollout_episode_speedup``: a whole batch of 50-step episodes through the
  runner and the LLM agent, greedy, no CoT.
- ``prefill_tokens_per_step_ratio``: over that episode batch, tokens the new
  path prefilled / tokens that were new in each prompt (not in the previous
  step's prompt of the same episode).
- ``decode_speedup``: CoT budget 256: decode time (a 256-token generate minus a
  1-token one) of the plain cache vs the preallocated column cache.
- ``decode_mfu`` / ``prefill_mfu``: achieved matmul FLOP/s of the new decode and
  of a full prefill, as a fraction of a bf16 matmul measured in the same run.
- ``forced_score_speedup`` (``--parts forcing``, not in the default parts): answer
  forcing's scoring pass over every label at step 41, packed prefill vs the kept
  prefixes; see :func:`forcing_figures`.
- ``packed_logprob_speedup``: see :func:`training_figures`.
- ``lora_update_peak_rss_ratio``: see :func:`memory_figures`.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agentbench.agent.context import ContextSettings, build_context
from agentbench.agent.llm import LLMAgent, LLMAgentSettings, forced_text
from agentbench.envs import make, text_env
from agentbench.models.catalog import resolve_model
from agentbench.models.interface import Chat, Generation, GenerationConfig
from agentbench.models.kv_reuse import common_prefix
from agentbench.models.transformers_backend import TransformersGenerator, TransformersSettings
from agentbench.records import Episode
from agentbench.rlft.config import EnvSettings
from agentbench.rollout import play

ENV_ID = "agentbench/GaussianBandit-5arms-medium-button-v0"
PLAIN = TransformersSettings(static_cache=False, prefix_reuse=False)
COLUMNS = TransformersSettings(prefix_reuse=False)
REUSE = TransformersSettings()
TARGETS = {
    "rollout_step_speedup": ">= 3",
    "rollout_episode_speedup": ">= 2.5",
    "packed_logprob_speedup": ">= 4",
    "decode_speedup": ">= 1.5",
    "prefill_tokens_per_step_ratio": "<= 1.5",
    "lora_update_peak_rss_ratio": "<= 0.6",
}


def report(name: str, value: float | int | str) -> None:
    target = f"  # target {TARGETS[name]}" if name in TARGETS else ""
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    print(f"{name}={text}{target}", flush=True)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def interleaved(rounds: int, old: Callable[[], Any], new: Callable[[], Any]) -> tuple[float, float]:
    """Median seconds of old and new, run alternately (new first in odd rounds)."""
    times: dict[str, list[float]] = {"old": [], "new": []}
    for r in range(rounds):
        pair = [("old", old), ("new", new)]
        for name, fn in pair if r % 2 == 0 else pair[::-1]:
            times[name].append(timed(fn)[0])
    return statistics.median(times["old"]), statistics.median(times["new"])


def random_histories(episodes: int) -> list[Episode]:
    """Histories to build step-t prompts from, played by the random baseline (the LLM's
    own steps would cost minutes and change nothing about prompt lengths)."""
    from agentbench.baselines.registry import make_agent

    return play(make_agent("random"), ENV_ID, range(episodes), num_envs=episodes)


def step_chats(histories: Sequence[Episode], step: int, settings: ContextSettings) -> list[Chat]:
    chats = []
    for episode in histories:
        env = text_env(make(ENV_ID))
        env.reset(seed=episode.seed)
        chats.append(build_context(env, episode.steps[: step - 1], settings))
    return chats


def matmul_flops(threads: int) -> float:
    """bf16 matmul FLOP/s at the model's shapes (hidden 576 x MLP 1536, 2048 rows)."""
    rng = torch.Generator().manual_seed(0)
    a = torch.randn(2048, 576, dtype=torch.bfloat16, generator=rng)
    b = torch.randn(576, 1536, dtype=torch.bfloat16, generator=rng)
    for _ in range(3):
        a @ b
    best = min(timed(lambda: [a @ b for _ in range(20)])[0] for _ in range(5))
    return 20 * 2 * a.shape[0] * a.shape[1] * b.shape[1] / best


def forward_flops(model: Any, tokens: int, context: float) -> float:
    """Matmul FLOPs of running ``tokens`` tokens with ``context`` keys each on average:
    2 per weight (embedding lookups excluded, the tied output layer included) plus
    attention's two matmuls."""
    config = model.config
    weights = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
    output = config.vocab_size * config.hidden_size
    attention = 4 * context * config.num_attention_heads * config.head_dim
    return tokens * (2 * (weights + output) + config.num_hidden_layers * attention)


class Recording:
    """A TextGenerator that keeps every prompt's token ids, per episode order."""

    def __init__(self, inner: TransformersGenerator) -> None:
        self.inner, self.name = inner, inner.name
        self.prompts: list[list[list[int]]] = []

    def generate(self, prompts: Sequence[Chat], config: GenerationConfig,
                 seeds: Sequence[int] | None = None) -> list[Generation]:  # fmt: skip
        generations = self.inner.generate(prompts, config, seeds)
        self.prompts.append([g.prompt_token_ids for g in generations])
        return generations

    def score(self, prompts: Sequence[Chat], continuations: Sequence[Sequence[str]]) -> Any:
        return self.inner.score(prompts, continuations)


def new_tokens_per_step(calls: list[list[list[int]]]) -> int:
    """Tokens of each prompt that the same row's previous prompt did not start with
    (rows keep their order while all episodes run in step; the first step counts whole)."""
    total = sum(len(ids) for ids in calls[0])
    for before, after in zip(calls, calls[1:], strict=False):
        for a, b in zip(before, after, strict=True):
            total += len(b) - common_prefix(np.asarray(a), np.asarray(b))
    return total


def rollout_figures(old: TransformersGenerator, new: TransformersGenerator, args: Any) -> None:
    histories = random_histories(args.episodes)
    direct = ContextSettings(cot=False, history_length=50)
    step40, step41 = (step_chats(histories, t, direct) for t in (40, 41))
    config = GenerationConfig(max_new_tokens=16)
    seeds = list(range(len(step41)))

    def new_step() -> Any:
        new.clear_prefix_cache()
        new.generate(step40, config, seeds)  # untimed: fills the pool like step 40 would
        return timed(lambda: new.generate(step41, config, seeds))[0]

    old_times, new_times = [], []
    for r in range(args.rounds):
        if r % 2:
            new_times.append(new_step())
        old_times.append(timed(lambda: old.generate(step41, config, seeds))[0])
        if r % 2 == 0:
            new_times.append(new_step())
    report("rollout_step_old_s", statistics.median(old_times))
    report("rollout_step_new_s", statistics.median(new_times))
    report("rollout_step_speedup", statistics.median(old_times) / statistics.median(new_times))

    settings = LLMAgentSettings(cot=False, history_length=50)
    recorder = Recording(new)

    def episode(generator: Any) -> Callable[[], Any]:
        def run() -> Any:
            if generator is recorder:
                new.clear_prefix_cache()
                recorder.prompts.clear()
            agent = LLMAgent(generator, settings)
            return play(agent, ENV_ID, range(args.episode_batch), num_envs=args.episode_batch)

        return run

    before = dict(new.counters)
    old_s, new_s = interleaved(args.episode_rounds, episode(old), episode(recorder))
    report("rollout_episode_old_s", old_s)
    report("rollout_episode_new_s", new_s)
    report("rollout_episode_speedup", old_s / new_s)
    # The last new run's counters: its prompts are in recorder.prompts.
    prefilled = new.counters["prefilled_tokens"] - before.get("prefilled_tokens", 0)
    prefilled_last = prefilled / args.episode_rounds
    report("prefill_tokens_per_step_ratio", prefilled_last / new_tokens_per_step(recorder.prompts))


def forcing_figures(old: TransformersGenerator, new: TransformersGenerator, args: Any) -> None:
    """Answer forcing's scoring pass at step 41: every legal label after each row's own
    answer, scored right after the generate call that wrote the answers. Old: the
    packed path prefills each prompt; new: the prompts come from the kept prefixes and
    the candidates' shared start (the answer and ``ACTION=``) is run once."""
    histories = random_histories(args.episodes)
    chats = step_chats(histories, 41, ContextSettings(cot=False, history_length=50))
    labels = text_env(make(ENV_ID)).action_labels()
    seeds = list(range(len(chats)))
    new.clear_prefix_cache()
    answers = new.generate(chats, GenerationConfig(max_new_tokens=16, temperature=1.0), seeds)
    candidates = [[forced_text(a.text, label) for label in labels] for a in answers]
    before = new.counters["prefilled_tokens"]
    scores: dict[str, Any] = {}

    def score(name: str, generator: TransformersGenerator) -> Callable[[], Any]:
        def run() -> Any:
            scores[name] = generator.score(chats, candidates)

        return run

    old_s, new_s = interleaved(args.rounds, score("old", old), score("new", new))
    prefilled = (new.counters["prefilled_tokens"] - before) / args.rounds
    full = sum(len(new.encode_chat(c)) + sum(len(new.continuation_ids(c, t)) for t in texts)
               for c, texts in zip(chats, candidates, strict=True))  # fmt: skip
    report("forced_score_rows", len(chats))
    report("forced_score_old_s", old_s)
    report("forced_score_new_s", new_s)
    report("forced_score_speedup", old_s / new_s)
    report("forced_score_prefilled_ratio", prefilled / full)
    gap = max(abs(x - y) for a, b in zip(scores["old"], scores["new"], strict=True)
              for x, y in zip(a, b, strict=True))  # fmt: skip
    report("forced_score_max_abs_difference", gap)
    same = sum(int(np.argmax(a) == np.argmax(b)) for a, b in zip(scores["old"], scores["new"],
                                                                 strict=True))  # fmt: skip
    report("forced_score_same_argmax", f"{same}/{len(chats)}")


def decode_figures(old: TransformersGenerator, columns: TransformersGenerator,
                   args: Any, peak: float) -> None:  # fmt: skip
    histories = random_histories(args.decode_rows)
    chats = step_chats(histories, 41, ContextSettings(cot=True, history_length=50))
    seeds = list(range(len(chats)))
    full, first = GenerationConfig(max_new_tokens=256), GenerationConfig(max_new_tokens=1)
    results: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    lengths: dict[str, list[int]] = {}
    for r in range(args.rounds):
        pair = [("old", old), ("new", columns)]
        for name, generator in pair if r % 2 == 0 else pair[::-1]:
            t_full, generations = timed(lambda g=generator: g.generate(chats, full, seeds))
            t_first = timed(lambda g=generator: g.generate(chats, first, seeds))[0]
            results[name].setdefault("decode", []).append(t_full - t_first)
            results[name].setdefault("prefill", []).append(t_first)
            lengths[name] = [len(g.token_ids) for g in generations]
    old_decode = statistics.median(results["old"]["decode"])
    new_decode = statistics.median(results["new"]["decode"])
    report("decode_old_s", old_decode)
    report("decode_new_s", new_decode)
    report("decode_steps", max(lengths["new"]))
    report("decode_same_lengths", str(lengths["old"] == lengths["new"]))
    report("decode_speedup", old_decode / new_decode)
    model = columns.model
    prompt = statistics.mean(len(columns.encode_chat(c)) for c in chats)
    decoded = sum(max(n - 1, 0) for n in lengths["new"])
    decode_flops = forward_flops(model, decoded, prompt + 128)
    report("decode_mfu", decode_flops / new_decode / peak)
    prefill_tokens = sum(len(columns.encode_chat(c)) for c in chats)
    prefill_s = statistics.median(results["new"]["prefill"])
    report("prefill_mfu", forward_flops(model, prefill_tokens, prompt / 2) / prefill_s / peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and episodes")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per figure (>= 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--parts", default="rollout,decode,training,memory",
                        help="comma-separated: rollout, decode, training, memory, forcing "
                        "(forcing is not in the default)")  # fmt: skip
    parser.add_argument("--train-episodes", type=int, default=None)
    parser.add_argument("--train-steps", type=int, default=None)
    parser.add_argument("--rss-child", choices=("lora", "full"), help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--return-freed-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.train_episodes = args.train_episodes or (1 if args.quick else 2)
    args.train_steps = args.train_steps or (20 if args.quick else 50)
    if args.rss_child:
        rss_child(args)
        return
    args.rounds = args.rounds or 3
    args.episodes = 16
    args.episode_batch = 2 if args.quick else 16
    args.decode_rows = 8 if args.quick else 16
    args.episode_rounds = args.rounds
    report("threads", torch.get_num_threads())
    report("model", args.model)
    report("dtype", args.dtype)
    old = resolve_model(args.model, device="cpu", dtype=args.dtype, settings=PLAIN)
    old.model.eval()
    new = TransformersGenerator(old.model, old.tokenizer, name=old.name, settings=REUSE)
    columns = TransformersGenerator(old.model, old.tokenizer, name=old.name, settings=COLUMNS)
    peak = matmul_flops(torch.get_num_threads())
    report("bf16_matmul_gflops", peak / 1e9)
    parts = args.parts.split(",")
    if "rollout" in parts:
        rollout_figures(old, new, args)
        new.clear_prefix_cache()
    if "forcing" in parts:
        forcing_figures(old, new, args)
        new.clear_prefix_cache()
    if "decode" in parts:
        decode_figures(old, columns, args, peak)
    if "training" in parts:
        training_figures(old, args)
    if "memory" in parts:
        memory_figures(args)


def training_rows(
    generator: TransformersGenerator, episodes: int, steps: int
) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """Prompts, completions and episode ids of a PPO batch: ``episodes`` x ``steps``
    no-CoT steps (C = 50), each answered ``ACTION=<label>`` and end of turn."""
    histories = random_histories(episodes)
    settings = ContextSettings(cot=False, history_length=50)
    end = min(generator.stop_token_ids)
    prompts, completions, groups = [], [], []
    for t in range(1, steps + 1):
        for e, chat in enumerate(step_chats(histories, t, settings)):
            label = histories[e].steps[t - 1].label
            prompts.append(generator.encode_chat(chat))
            answer = generator.tokenizer(f"ACTION={label}", add_special_tokens=False)
            completions.append([*answer["input_ids"], end])
            groups.append(e)
    order = sorted(range(len(prompts)), key=lambda i: (groups[i], len(prompts[i])))
    return ([prompts[i] for i in order], [completions[i] for i in order],
            [groups[i] for i in order])  # fmt: skip


def update_passes(policy: TransformersGenerator, rows: Any, packed: bool, micro: int) -> None:
    """The three log-prob passes of one PPO update: old and reference (no graph), then
    the training pass with its backward. LoRA's reference pass runs with the adapters
    off, as the PPO trainer's does."""
    from agentbench.rlft.precision import compute_precision

    prompts, completions, groups = rows
    model = policy.model

    def forward() -> list[torch.Tensor]:
        if packed:
            return policy.packed_logprobs(prompts, completions, groups=groups).logprobs
        out: list[torch.Tensor] = []
        for start in range(0, len(prompts), micro):
            out += policy.sequence_logprobs(prompts[start : start + micro],
                                            completions[start : start + micro])  # fmt: skip
        return out

    with compute_precision(model, torch.bfloat16):
        model.eval()
        forward()  # old log-probs
        with model.disable_adapter():
            forward()  # reference log-probs
        model.train()
        if packed:
            loss = -torch.cat(forward()).mean()
            loss.backward()
        else:
            for start in range(0, len(prompts), micro):
                chunk = policy.sequence_logprobs(prompts[start : start + micro],
                                                 completions[start : start + micro])  # fmt: skip
                (-torch.cat(chunk).sum() / len(prompts)).backward()
    model.zero_grad(set_to_none=True)
    model.eval()


def training_figures(old: TransformersGenerator, args: Any) -> None:
    """``packed_logprob_speedup``: the old, reference and training passes of one LoRA
    PPO update (bf16 autocast over float32 weights) over ``episodes`` x ``steps``,
    per-row in micro-batches of 4 rows (16 would need ~1 GB of activations per row
    and run out of memory) vs packed."""
    import copy

    from agentbench.rlft.policy import add_lora

    model = copy.deepcopy(old.model).float()
    policy = TransformersGenerator(add_lora(model), old.tokenizer, name=old.name)
    rows = training_rows(policy, args.train_episodes, args.train_steps)
    report("train_rows", len(rows[0]))
    tokens = sum(len(p) + len(c) for p, c in zip(rows[0], rows[1], strict=True))
    report("train_tokens_per_row_pass", tokens)
    old_s, new_s = interleaved(
        args.rounds,
        lambda: update_passes(policy, rows, packed=False, micro=4),
        lambda: update_passes(policy, rows, packed=True, micro=4),
    )
    report("packed_update_passes_old_s", old_s)
    report("packed_update_passes_new_s", new_s)
    report("packed_logprob_speedup", old_s / new_s)


def memory_figures(args: Any) -> None:
    """``lora_update_peak_rss_ratio``: peak RSS of a process doing two PPO updates with
    LoRA / with full fine-tuning, one fresh process each (:func:`rss_child`), the same
    micro-batch (one episode of ``train_steps`` steps), bf16 compute, Adafactor.

    The target figure compares the two in their memory-lean setting: gradient
    checkpointing on and ``return_freed_memory = true`` for both (agentbench.memory:
    freed blocks go back to the system instead of staying in glibc's heap), full
    fine-tuning with float32 weights (a bf16 weight swallows small updates) and LoRA
    over a frozen base loaded in bf16 (``[model] dtype = "bfloat16"``; the adapters
    stay float32). The other figures, for the diagnosis: LoRA over a float32 base
    in the same setting, both under glibc's default allocator, and (unless --quick)
    without checkpointing."""
    runs = [  # (figure name, mode, weight dtype, checkpointing, return freed memory)
        ("lora_bf16_base", "lora", "bfloat16", True, True),
        ("lora", "lora", "float32", True, True),
        ("full", "full", "float32", True, True),
        ("lora_default_allocator", "lora", "float32", True, False),
        ("full_default_allocator", "full", "float32", True, False),
    ]
    if not args.quick:
        runs += [
            ("lora_without_checkpointing", "lora", "float32", False, True),
            ("full_without_checkpointing", "full", "float32", False, True),
        ]
    peaks = {}
    for name, mode, dtype, checkpointing, lean in runs:
        command = [sys.executable, __file__, "--rss-child", mode, "--model", args.model,
                   "--train-episodes", "1", "--train-steps", str(args.train_steps),
                   "--dtype", dtype]  # fmt: skip
        command += ["--checkpointing"] if checkpointing else []
        command += ["--return-freed-memory"] if lean else []
        command += ["--threads", str(args.threads)] if args.threads else []
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        peaks[name] = int(result.stdout.strip().splitlines()[-1])
        report(f"{name}_update_peak_rss_mb", peaks[name] / 1024)
        report(f"{name}_update_process_s", time.perf_counter() - started)
    report("lora_update_peak_rss_ratio", peaks["lora_bf16_base"] / peaks["full"])
    report("lora_fp32_base_update_peak_rss_ratio", peaks["lora"] / peaks["full"])
    report("lora_update_peak_rss_ratio_default_allocator",
           peaks["lora_default_allocator"] / peaks["full_default_allocator"])  # fmt: skip
    if not args.quick:
        without = peaks["lora_without_checkpointing"] / peaks["full_without_checkpointing"]
        report("lora_update_peak_rss_ratio_without_checkpointing", without)


def rss_child(args: Any) -> None:
    """Two PPO updates (the second one's peak includes the optimizer state made by the
    first) in this fresh process, through the PPO trainer itself; prints the peak RSS
    in KiB. Weights in ``--dtype`` (float32 unless the caller says), bf16 compute, the
    default optimizer (Adafactor), one episode per minibatch; full fine-tuning keeps
    its frozen reference copy, LoRA switches its adapters off for the reference pass."""
    import tempfile

    from agentbench.rlft.config import ModelSettings, PPOConfig
    from agentbench.rlft.ppo import PPOTrainer

    with tempfile.TemporaryDirectory() as output_dir:
        config = PPOConfig(
            model=ModelSettings(
                args.model, device="cpu", dtype=args.dtype, use_lora=args.rss_child == "lora"
            ),
            env=EnvSettings(ENV_ID, {"horizon": args.train_steps}),
            num_envs=args.train_episodes,
            episodes_per_update=args.train_episodes,
            num_minibatches=args.train_episodes,
            total_updates=2,
            agent=LLMAgentSettings(cot=False, history_length=50),
            eval_every=0,
            checkpoint_every=0,
            output_dir=output_dir,
            progress=False,
            gradient_checkpointing=args.checkpointing,
            return_freed_memory=args.return_freed_memory,
            compute_dtype="bfloat16",
        )
        PPOTrainer(config).train()
    print(peak_rss_kib())


def peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM). Not ``ru_maxrss``: on Linux that keeps
    the parent's peak across fork and exec, so every child would report the parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


if __name__ == "__main__":
    main()
