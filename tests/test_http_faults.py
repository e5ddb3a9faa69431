"""The HTTP backend against a flaky OpenAI-compatible server on 127.0.0.1.

The server answers each request well or with one fault: a 500, a 429 with
Retry-After, a hang past the client's deadline, malformed JSON, a truncated
body, a connection reset, a wrongly shaped answer, or an answer trickled a byte
at a time. Focused tests play one fault each; the last test plays 8 bandit
episodes of 50 steps through the runner against 30 % faults of all kinds.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentbench.cli import main
from agentbench.models.http_backend import OpenAICompatibleGenerator, OpenAICompatibleSettings
from agentbench.models.interface import GenerationConfig, GenerationError
from agentbench.records import read_episodes

Json = dict[str, Any]
GOOD_TEXT = "Blue it is. ACTION=blue"
PROMPT = [{"role": "user", "content": "Pick a colour."}]
FAULTS = (
    "500",
    "429",
    "hang",
    "malformed",
    "truncated",
    "reset",
    "wrong-shape",
    "trickle",
)
# Answers that parse as JSON but are not an OpenAI chat answer. Several still hold
# GOOD_TEXT somewhere, so a client that reads them anyhow would record a wrong step.
WRONG_SHAPES: dict[str, Any] = {
    "no-choices": {"message": {"role": "assistant", "content": GOOD_TEXT}},
    "error-object": {"error": {"message": "internal error", "type": "server_error"}},
    "choices-not-a-list": {"choices": {"message": {"content": GOOD_TEXT}}},
    "choices-empty": {"choices": []},
    "message-a-string": {"choices": [{"message": GOOD_TEXT}]},
    "content-a-number": {"choices": [{"message": {"role": "assistant", "content": 7}}]},
    "content-a-list": {"choices": [{"message": {"content": [GOOD_TEXT]}}]},
    "logprob-a-string": {
        "choices": [
            {"message": {"content": GOOD_TEXT}, "logprobs": {"content": [{"logprob": "low"}]}}
        ]
    },
    "a-list": [{"message": {"content": GOOD_TEXT}}],
}
MALFORMED_BODIES = (
    b"<html><body><h1>502 Bad Gateway</h1></body></html>",
    b'{"choices": [{"message": {"content": "' + GOOD_TEXT.encode() + b'"}},]}',
    b"",
)


def good_answer() -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", "content": GOOD_TEXT}}
    return json.dumps({"choices": [{**choice, "finish_reason": "stop"}]}).encode()


class FaultServer(ThreadingHTTPServer):
    """Plays ``choose(body, rng) -> fault`` for each request; "ok" answers well.

    ``rng`` is seeded by the request itself (its body and how often that body was
    seen before), so the same requests meet the same faults whatever order
    concurrent requests arrive in.
    """

    daemon_threads = False  # server_close() waits for every handler
    request_queue_size = 64

    def __init__(self, choose: Callable[[bytes, np.random.Generator], str], seed: int) -> None:
        super().__init__(("127.0.0.1", 0), FaultHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/v1"
        self.choose = choose
        self.seed = seed
        self.hang_s = 3.0
        self.trickle_interval_s = 0.05
        self.retry_after = "0.1"
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.seen: Counter[str] = Counter()
        self.faults: list[str] = []  # per request, in arrival order
        self.arrivals: list[float] = []
        self.canned: dict[str, bytes] = {}  # more faults: a 200 with this body
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05})

    def start(self) -> FaultServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # cuts hangs and trickles short
        self.shutdown()
        self.server_close()  # joins the handler threads
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()

    def fault_for(self, body: bytes) -> tuple[str, np.random.Generator]:
        digest = hashlib.sha256(body).hexdigest()
        with self.lock:
            repeat = self.seen[digest]
            self.seen[digest] += 1
        rng = np.random.default_rng([self.seed, int(digest[:15], 16), repeat])
        fault = self.choose(body, rng)
        with self.lock:
            self.faults.append(fault)
            self.arrivals.append(time.monotonic())
        return fault, rng


class FaultHandler(BaseHTTPRequestHandler):
    server: FaultServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (the name http.server looks up)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.close_connection = True
        fault, rng = self.server.fault_for(body)
        try:
            self.play(fault, rng)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on this answer

    def play(self, fault: str, rng: np.random.Generator) -> None:
        server = self.server
        if fault == "ok":
            self.answer(200, good_answer())
        elif fault in server.canned:
            self.answer(200, server.canned[fault])
        elif fault == "500":
            self.answer(500, b'{"error": {"message": "internal error"}}')
        elif fault == "429":
            self.answer(429, b'{"error": {"message": "slow down"}}', server.retry_after)
        elif fault == "hang":
            server.stopping.wait(server.hang_s)  # then close without a word
        elif fault == "malformed":
            self.answer(200, MALFORMED_BODIES[rng.integers(len(MALFORMED_BODIES))])
        elif fault.startswith("wrong-shape"):  # "wrong-shape:NAME" plays that one
            name = fault.partition(":")[2] or list(WRONG_SHAPES)[rng.integers(len(WRONG_SHAPES))]
            self.answer(200, json.dumps(WRONG_SHAPES[name]).encode())
        elif fault in ("truncated", "truncated-declared", "truncated-undeclared"):
            # Declared: Content-Length says more is coming; undeclared: the body ends at close.
            declared = fault == "truncated-declared" or (
                fault == "truncated" and rng.random() < 0.5
            )
            data = good_answer()
            self.head(200, len(data) if declared else None)
            self.wfile.write(data[: len(data) // 2])
        elif fault == "reset":
            data = good_answer()
            self.head(200, len(data))
            self.wfile.write(data[: len(data) // 3])
            # SO_LINGER 0: close() sends RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        elif fault == "trickle":
            data = good_answer()
            response = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(data), data)
            )
            for i in range(len(response)):  # status line and headers too
                if server.stopping.wait(server.trickle_interval_s):
                    return
                self.wfile.write(response[i : i + 1])
        else:
            raise ValueError(f"unknown fault {fault!r}")

    def head(self, status: int, length: int | None, retry_after: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if length is not None:
            self.send_header("Content-Length", str(length))
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Connection", "close")
        self.end_headers()

    def answer(self, status: int, data: bytes, retry_after: str | None = None) -> None:
        self.head(status, len(data), retry_after)
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        pass


@pytest.fixture
def scripted() -> Iterator[Callable[[list[str]], FaultServer]]:
    """A server that plays the given faults to its first requests in turn, then answers well."""
    servers: list[FaultServer] = []

    def start(plan: list[str]) -> FaultServer:
        def choose(body: bytes, rng: np.random.Generator) -> str:
            index = len(server.faults)
            return plan[index] if index < len(plan) else "ok"

        server = FaultServer(choose, seed=0).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def make_generator(url: str, **overrides: Any) -> OpenAICompatibleGenerator:
    settings: Json = {
        "model": "flaky-model",
        "timeout_s": 1.0,
        "max_retries": 2,
        "backoff_s": 0.001,
        "max_backoff_s": 2.0,
    }
    settings.update(overrides)
    return OpenAICompatibleGenerator(OpenAICompatibleSettings(base_url=url, **settings))


def generate_once(generator: OpenAICompatibleGenerator) -> str:
    (generation,) = generator.generate([PROMPT], GenerationConfig(max_new_tokens=8))
    return generation.text


# ---- one fault, then a good answer -------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    ["500", "429", "hang", "malformed", "truncated-declared", "truncated-undeclared", "reset",
     "trickle"],
)  # fmt: skip
def test_one_fault_is_retried_and_the_good_answer_after_it_is_read(
    scripted: Callable[[list[str]], FaultServer], fault: str
) -> None:
    server = scripted([fault])
    server.retry_after = "0"
    started = time.monotonic()

    assert generate_once(make_generator(server.url)) == GOOD_TEXT

    assert server.faults == [fault, "ok"]
    # A hang or a trickle costs the 1 s deadline, no more.
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("shape", list(WRONG_SHAPES))
def test_a_wrongly_shaped_answer_is_retried_not_read(
    scripted: Callable[[list[str]], FaultServer], shape: str
) -> None:
    server = scripted([f"wrong-shape:{shape}"])

    assert generate_once(make_generator(server.url)) == GOOD_TEXT

    assert server.faults == [f"wrong-shape:{shape}", "ok"]


def test_a_trickled_answer_is_cut_at_the_deadline_of_the_whole_attempt(
    scripted: Callable[[list[str]], FaultServer],
) -> None:
    # The case: a byte every 0.4 s held a 1 s-timeout request for 71 s.
    server = scripted(["trickle"])
    server.trickle_interval_s = 0.4
    started = time.monotonic()

    with pytest.raises(GenerationError) as caught:
        generate_once(make_generator(server.url, max_retries=0))

    assert time.monotonic() - started < 1.5
    assert str(caught.value) == (
        f"could not reach the model server at {server.url}/chat/completions: "
        "no answer within timeout_s=1 s after 1 attempt"
    )


def test_a_429s_retry_after_is_waited_for(scripted: Callable[[list[str]], FaultServer]) -> None:
    server = scripted(["429"])
    server.retry_after = "1"

    assert generate_once(make_generator(server.url)) == GOOD_TEXT

    assert server.faults == ["429", "ok"]
    waited = server.arrivals[1] - server.arrivals[0]
    assert 1.0 <= waited < 1.5  # the server's second, not the 1 ms backoff


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("500", "kept failing with HTTP 500 Internal Server Error after 3 attempts"),
        ("malformed", "gave no usable answer in 3 attempts: the answer is not a JSON object"),
        ("truncated-declared", "gave no usable answer in 3 attempts: the answer was cut off"),
        ("reset", "after 3 attempts"),
        ("wrong-shape", "gave no usable answer in 3 attempts: the answer has "),
        ("hang", "no answer within timeout_s=0.3 s after 3 attempts"),
        ("trickle", "no answer within timeout_s=0.3 s after 3 attempts"),
    ],
)
def test_a_fault_that_persists_ends_in_one_clear_line(
    scripted: Callable[[list[str]], FaultServer], fault: str, message: str
) -> None:
    server = scripted([fault] * 3)  # a random shape each time for "wrong-shape"

    started = time.monotonic()
    with pytest.raises(GenerationError) as caught:
        generate_once(make_generator(server.url, timeout_s=0.3, max_retries=2))

    text = str(caught.value)
    assert f"model server at {server.url}/chat/completions" in text and message in text
    assert "\n" not in text and "Traceback" not in text
    assert len(server.faults) == 3
    assert time.monotonic() - started < 3 * 0.3 + 1.0


def test_score_retries_an_echo_with_wrongly_typed_offsets(
    scripted: Callable[[list[str]], FaultServer],
) -> None:
    prompt_text = "user: Pick a colour.\nassistant: "
    tokens = ["user:", " Pick", " a", " colour.", "\n", "assistant:", " ACTION", "=blue", "\n"]
    offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    logprobs = [None, -1.0, -1.0, -1.0, -1.0, -1.0, -0.5, -0.25, -9.0]

    def echo(offset_of: Callable[[int], Any]) -> bytes:
        echoed = {"tokens": tokens, "token_logprobs": logprobs,
                  "text_offset": [offset_of(o) for o in offsets]}  # fmt: skip
        return json.dumps({"choices": [{"text": "".join(tokens), "logprobs": echoed}]}).encode()

    server = scripted(["offsets-as-strings", "good-echo"])
    server.canned = {"offsets-as-strings": echo(str), "good-echo": echo(int)}
    generator = make_generator(server.url, api="completions")
    assert generator.render_prompt(PROMPT) == prompt_text

    # " ACTION" straddles the boundary and counts; the generated "\n" does not.
    assert generator.score([PROMPT], [["ACTION=blue"]]) == [[-0.75]]
    assert server.faults == ["offsets-as-strings", "good-echo"]


# ---- 8 episodes against 30 % faults of every kind ----------------------------------------------


def flaky(rate: float) -> Callable[[bytes, np.random.Generator], str]:
    def choose(body: bytes, rng: np.random.Generator) -> str:
        return str(rng.choice(FAULTS)) if rng.random() < rate else "ok"

    return choose


def test_eight_bandit_episodes_all_finish_against_a_server_with_30_percent_faults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = FaultServer(flaky(0.3), seed=10).start()
    try:
        suite = tmp_path / "suite.toml"
        suite.write_text(
            f"""
name = "flaky-http"
episodes = 8
num_envs = 8
envs = ["agentbench/GaussianBandit-5arms-medium-button-v0"]
[[agents]]
name = "llm"
model = "flaky-model"
base_url = "{server.url}"
concurrency = 8
timeout_s = 0.5
max_retries = 10
backoff_s = 0.01
max_backoff_s = 0.25
budget = 8
"""
        )
        out = tmp_path / "run"
        started = time.monotonic()
        code = main(["run", str(suite), "--out", str(out), "--no-progress"])
        elapsed = time.monotonic() - started
    finally:
        server.stop()

    assert code == 0, capsys.readouterr().err
    episodes = read_episodes(out / "episodes.jsonl")
    assert sorted(ep.seed for ep in episodes) == list(range(8))
    assert all(len(ep.steps) == 50 for ep in episodes)
    # Every step is the good answer: no fault was read as a (wrong) answer.
    assert all(step.text == GOOD_TEXT and step.label == "blue" for ep in episodes
               for step in ep.steps)  # fmt: skip

    injected = Counter(server.faults)
    faults = len(server.faults) - injected["ok"]
    assert injected["ok"] >= 8 * 50  # a good answer per step (more only if one came too late)
    assert set(FAULTS) <= set(injected)  # every kind was played
    assert 0.2 < faults / len(server.faults) < 0.4
    print(f"\n{elapsed:.1f} s, {len(server.faults)} requests, {faults} faults: {dict(injected)}")
    assert elapsed < 60.0  # a safety net: about 15 s here; hangs and trickles cost 0.5 s each
