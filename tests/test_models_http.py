"""The OpenAI-compatible HTTP backend against a scripted server on 127.0.0.1.

The server records every request and answers with whatever the test scripts,
so each test checks both what the client sends and how it reads the answer.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from typing import Any

import pytest

from agentbench.errors import ConfigError
from agentbench.models.http_backend import OpenAICompatibleGenerator, OpenAICompatibleSettings
from agentbench.models.interface import (
    GenerationConfig,
    GenerationError,
    TextGenerator,
    UnsupportedOperation,
)

Json = dict[str, Any]
PROMPT = [
    {"role": "system", "content": "You choose arms."},
    {"role": "user", "content": "Pick a colour."},
]
SECRET = "sk-test-7f3a9c1e5b"
KEY_ENV = "AGENTBENCH_TEST_API_KEY"


@dataclass
class Exchange:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: Json


@dataclass
class ScriptedServer:
    """What the handler does, set per test: ``reply(exchange, index) -> (status, json)``."""

    url: str = ""
    reply: Callable[[Exchange, int], tuple[int, Any]] = lambda exchange, index: (200, {})
    delay_s: Callable[[Exchange], float] = lambda exchange: 0.0
    exchanges: list[Exchange] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)


class ScriptedHandler(BaseHTTPRequestHandler):
    server: ScriptedHTTPServer

    def do_POST(self) -> None:  # noqa: N802 (the name http.server looks up)
        script = self.server.script
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        exchange = Exchange(self.path, dict(self.headers.items()), json.loads(raw))
        with script.lock:
            script.exchanges.append(exchange)
            index = len(script.exchanges) - 1
            script.in_flight += 1
            script.max_in_flight = max(script.max_in_flight, script.in_flight)
        try:
            script.stopping.wait(script.delay_s(exchange))  # teardown cuts long sleeps short
            status, payload = script.reply(exchange, index)
        finally:
            # Before answering: the client may send its next request the moment it reads this.
            with script.lock:
                script.in_flight -= 1
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        pass


class ScriptedHTTPServer(ThreadingHTTPServer):
    script: ScriptedServer


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    httpd = ScriptedHTTPServer(("127.0.0.1", 0), ScriptedHandler)
    httpd.script = ScriptedServer(url=f"http://127.0.0.1:{httpd.server_address[1]}/v1")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield httpd.script
    httpd.script.stopping.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def make_generator(base_url: str, **overrides: Any) -> OpenAICompatibleGenerator:
    """Tiny backoff so that retry tests take milliseconds."""
    settings: Json = {"model": "tiny-model", "backoff_s": 0.001, "max_backoff_s": 0.01}
    settings.update(overrides)
    return OpenAICompatibleGenerator(OpenAICompatibleSettings(base_url=base_url, **settings))


def chat_answer(text: str, logprobs: list[float] | None = None, finish: str = "stop") -> Json:
    content = [{"token": f"t{i}", "logprob": lp} for i, lp in enumerate(logprobs or [])]
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "logprobs": {"content": content} if logprobs is not None else None,
        "finish_reason": finish,
    }
    return {"object": "chat.completion", "choices": [choice]}


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_chat_generation_sends_the_sampling_settings_and_reads_text_logprobs_and_finish(
    server: ScriptedServer,
) -> None:
    server.reply = lambda exchange, index: (
        200,
        chat_answer("ACTION=blue", [-0.5, -0.25], "length"),
    )
    generator = make_generator(server.url)
    assert isinstance(generator, TextGenerator) and generator.name == "http:tiny-model"
    config = GenerationConfig(max_new_tokens=7, temperature=0.7, top_p=0.9, stop=("\n",))

    (generation,) = generator.generate([PROMPT], config, seeds=[11])

    assert generation.text == "ACTION=blue"
    assert generation.logprobs == [-0.5, -0.25]
    assert generation.finish_reason == "length"
    assert generation.token_ids == []  # the chat API does not give token ids
    (exchange,) = server.exchanges
    assert exchange.path == "/v1/chat/completions"
    assert exchange.body == {
        "model": "tiny-model",
        "messages": PROMPT,
        "max_tokens": 7,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["\n"],
        "seed": 11,
        "logprobs": True,
    }
    # Without seeds no seed is sent; a server without logprobs still gives the text.
    server.reply = lambda exchange, index: (200, chat_answer("ACTION=red"))
    (plain,) = generator.generate([PROMPT], GenerationConfig())
    assert (plain.text, plain.logprobs, plain.finish_reason) == ("ACTION=red", [], "stop")
    assert "seed" not in server.exchanges[-1].body and "stop" not in server.exchanges[-1].body


def test_completions_generation_renders_the_chat_into_one_prompt(server: ScriptedServer) -> None:
    answer = {
        "choices": [
            {
                "text": "ACTION=red",
                "logprobs": {"tokens": ["ACTION", "=red"], "token_logprobs": [-0.1, -0.2]},
                "finish_reason": "stop",
            }
        ]
    }
    server.reply = lambda exchange, index: (200, answer)
    generator = make_generator(server.url, api="completions")

    (generation,) = generator.generate([PROMPT], GenerationConfig(stop=("END",)), seeds=[3])

    assert (generation.text, generation.logprobs) == ("ACTION=red", [-0.1, -0.2])
    (exchange,) = server.exchanges
    assert exchange.path == "/v1/completions"
    assert exchange.body["prompt"] == "system: You choose arms.\nuser: Pick a colour.\nassistant: "
    assert exchange.body["logprobs"] == 1 and exchange.body["seed"] == 3
    assert exchange.body["stop"] == ["\nuser:", "\nsystem:", "END"]  # no writing the user's turn

    custom = make_generator(
        server.url,
        api="completions",
        prompt_template="<|{role}|>\n{content}\n",
        reply_prefix="<|assistant|>\n",
    )
    assert custom.render_prompt(PROMPT) == (
        "<|system|>\nYou choose arms.\n<|user|>\nPick a colour.\n<|assistant|>\n"
    )
    with pytest.raises(ConfigError, match="prompt_template"):
        make_generator(server.url, api="completions", prompt_template="{speaker}: {content}")
    with pytest.raises(ConfigError, match="api 'responses'"):
        make_generator(server.url, api="responses")


def test_requests_run_concurrently_within_the_bound_and_results_keep_prompt_order(
    server: ScriptedServer,
) -> None:
    count, bound = 12, 3

    def user_text(exchange: Exchange) -> str:
        return exchange.body["messages"][-1]["content"]

    # Early prompts answer slowest, so completion order is not prompt order.
    server.delay_s = lambda exchange: 0.01 * (count - int(user_text(exchange).split()[-1]))
    server.reply = lambda exchange, index: (200, chat_answer(f"answer to {user_text(exchange)}"))
    prompts = [[{"role": "user", "content": f"prompt {i}"}] for i in range(count)]

    generations = make_generator(server.url, concurrency=bound).generate(
        prompts, GenerationConfig(), seeds=list(range(count))
    )

    assert [g.text for g in generations] == [f"answer to prompt {i}" for i in range(count)]
    assert 1 < server.max_in_flight <= bound
    assert sorted(e.body["seed"] for e in server.exchanges) == list(range(count))


def test_503_and_429_are_retried_until_the_server_answers(server: ScriptedServer) -> None:
    failures = {0: 503, 1: 503, 2: 429}
    server.reply = lambda exchange, index: (
        (failures[index], {"error": {"message": "busy"}})
        if index in failures
        else (200, chat_answer("ACTION=green"))
    )

    (generation,) = make_generator(server.url, max_retries=4).generate([PROMPT], GenerationConfig())

    assert generation.text == "ACTION=green"
    assert len(server.exchanges) == 4


def test_a_server_that_stays_busy_fails_after_max_retries(server: ScriptedServer) -> None:
    server.reply = lambda exchange, index: (503, {"error": {"message": "overloaded"}})
    with pytest.raises(GenerationError) as caught:
        make_generator(server.url, max_retries=2).generate([PROMPT], GenerationConfig())
    assert str(caught.value) == (
        f"the model server at {server.url}/chat/completions kept failing with "
        "HTTP 503 Service Unavailable after 3 attempts"
    )
    assert len(server.exchanges) == 3


def test_a_400_fails_at_once_with_the_servers_reason(server: ScriptedServer) -> None:
    server.reply = lambda exchange, index: (
        400,
        {"error": {"message": "max_tokens must be at most 4096"}},
    )
    with pytest.raises(GenerationError) as caught:
        make_generator(server.url, max_retries=4).generate([PROMPT], GenerationConfig())
    message = str(caught.value)
    assert f"{server.url}/chat/completions" in message and "HTTP 400" in message
    assert "max_tokens must be at most 4096" in message
    assert len(server.exchanges) == 1  # no retry


def test_a_server_that_is_down_fails_after_max_retries_naming_the_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = closed_port_url()
    attempts: list[str] = []
    real_open = urllib.request.OpenerDirector.open

    def counting_open(
        opener: urllib.request.OpenerDirector, request: Any, *args: Any, **kwargs: Any
    ) -> Any:
        attempts.append(request.full_url)
        return real_open(opener, request, *args, **kwargs)

    monkeypatch.setattr(urllib.request.OpenerDirector, "open", counting_open)
    generator = make_generator(url, max_retries=3)

    with pytest.raises(GenerationError) as caught:
        generator.generate([PROMPT], GenerationConfig())
    assert str(caught.value) == (
        f"could not reach the model server at {url}/chat/completions: "
        "connection refused after 4 attempts"
    )
    assert len(attempts) == 4

    # A batch fails once: queued prompts are cancelled rather than each retrying in turn.
    attempts.clear()
    batch = make_generator(url, max_retries=3, concurrency=2)
    with pytest.raises(GenerationError, match="connection refused"):
        batch.generate([PROMPT] * 10, GenerationConfig())
    assert 4 <= len(attempts) <= 2 * 4  # the two running prompts at most


def test_a_server_slower_than_timeout_is_retried_then_fails(server: ScriptedServer) -> None:
    server.delay_s = lambda exchange: 3.0
    server.reply = lambda exchange, index: (200, chat_answer("too late"))
    generator = make_generator(server.url, timeout_s=0.2, max_retries=1)

    started = time.monotonic()
    with pytest.raises(GenerationError) as caught:
        generator.generate([PROMPT], GenerationConfig())

    assert time.monotonic() - started < 2.0
    assert str(caught.value) == (
        f"could not reach the model server at {server.url}/chat/completions: "
        "no answer within timeout_s=0.2 s after 2 attempts"
    )
    assert len(server.exchanges) == 2


def test_the_api_key_goes_only_into_the_authorization_header(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    generator = make_generator(server.url, api_key_env=KEY_ENV, max_retries=1)
    server.reply = lambda exchange, index: (200, chat_answer("ACTION=blue"))
    generator.generate([PROMPT], GenerationConfig())
    assert server.exchanges[-1].headers["Authorization"] == f"Bearer {SECRET}"

    # A server that echoes the key back: in a complaint, while failing, in a malformed answer.
    complaint = {"error": {"message": f"key {SECRET} is not allowed"}}
    raised: list[GenerationError] = []
    for status, payload in [(401, complaint), (503, complaint), (200, [f"echo {SECRET}"])]:
        server.reply = lambda exchange, index, status=status, payload=payload: (status, payload)
        with caplog.at_level(logging.DEBUG), pytest.raises(GenerationError) as caught:
            generator.generate([PROMPT], GenerationConfig())
        raised.append(caught.value)
    assert "HTTP 401" in str(raised[0]) and KEY_ENV in str(raised[0])  # says where to put it
    assert "HTTP 503" in str(raised[1]) and "JSON object" in str(raised[2])
    for error in raised:
        assert SECRET not in "".join(traceback.format_exception(error))
    assert "retrying" in caplog.text and SECRET not in caplog.text
    assert SECRET not in repr(generator) and SECRET not in str(generator)
    assert SECRET not in repr(generator.settings) and SECRET not in repr(vars(generator))

    # Local servers need no key: without the variable no Authorization header is sent.
    monkeypatch.delenv(KEY_ENV)
    server.reply = lambda exchange, index: (200, chat_answer("ACTION=blue"))
    generator.generate([PROMPT], GenerationConfig())
    assert "Authorization" not in server.exchanges[-1].headers


def echo_answer(text: str, bos: bool, sglang: bool = False) -> Json:
    """Echo ``text`` split into word-ish tokens with log p = -len(token), plus one generated token.

    Prompt tokens, the generated token (-100) and an optional "<s>" (-1000) all
    have log-probs that would show up in the sum if wrongly counted.
    """
    tokens = re.findall(r"\s*[^\s=]+|=|\s+", text)
    assert "".join(tokens) == text
    logprobs: list[float | None] = [-float(len(token)) for token in tokens]
    logprobs[0] = None  # the first token has no context
    tokens, logprobs = tokens + ["\n"], logprobs + [-100.0]
    if bos:
        tokens, logprobs = ["<s>"] + tokens, [None, -1000.0] + logprobs[1:]
    offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    if sglang:  # SGLang echoes the tokens but writes -1 for every offset
        offsets = [-1] * len(tokens)
    logprobs_json = {"tokens": tokens, "token_logprobs": logprobs, "text_offset": offsets}
    return {"choices": [{"text": "".join(tokens), "logprobs": logprobs_json}]}


@pytest.mark.parametrize(("bos", "sglang"), [(False, False), (True, False), (False, True)])
def test_score_sums_exactly_the_continuation_tokens_of_the_echo(
    server: ScriptedServer, bos: bool, sglang: bool
) -> None:
    server.reply = lambda exchange, index: (
        200,
        echo_answer(exchange.body["prompt"], bos, sglang),
    )
    generator = make_generator(server.url, api="completions")
    prompts = [PROMPT, [{"role": "user", "content": "Which cell?"}]]
    continuations = [["ACTION=blue", "ACTION=green"], ["ACTION=4", "", "ACTION=10"]]

    scores = generator.score(prompts, continuations)

    # " ACTION" straddles "assistant: " and the continuation: it is the candidate's first word.
    assert scores == [[-12.0, -13.0], [-9.0, 0.0, -10.0]]
    assert len(server.exchanges) == 4  # the empty continuation needs no request
    # the requests run concurrently: they arrive in any order
    colour = "system: You choose arms.\nuser: Pick a colour.\nassistant: "
    cell = "user: Which cell?\nassistant: "
    expected = [
        colour + "ACTION=blue",
        colour + "ACTION=green",
        cell + "ACTION=4",
        cell + "ACTION=10",
    ]
    assert sorted(e.body["prompt"] for e in server.exchanges) == sorted(expected)
    assert all(e.body["echo"] is True and e.body["logprobs"] >= 1 for e in server.exchanges)


def test_score_refuses_servers_that_cannot_score(server: ScriptedServer) -> None:
    with pytest.raises(UnsupportedOperation, match="api='completions'"):
        make_generator(server.url, api="chat").score([PROMPT], [["ACTION=blue"]])
    assert server.exchanges == []

    # A server that ignores echo returns the generated token only: no silent 0.0 scores.
    generated_only = {"tokens": ["\n"], "token_logprobs": [-0.1], "text_offset": [0]}
    server.reply = lambda exchange, index: (200, {"choices": [{"logprobs": generated_only}]})
    with pytest.raises(GenerationError, match="did not echo"):
        make_generator(server.url, api="completions").score([PROMPT], [["ACTION=blue"]])


def _episode_requests(server: ScriptedServer, api: str, **agent: Any) -> list[Json]:
    """The request bodies of one 50-step bandit episode played through the HTTP backend,
    the scripted server answering a colour by the request's index."""
    from agentbench.agent.llm import LLMAgent, LLMAgentSettings
    from agentbench.rollout import play

    colours = ["blue", "green", "red", "yellow", "orange"]

    def reply(exchange: Exchange, index: int) -> tuple[int, Json]:
        text = f"ACTION={colours[index * 7 % 5]}"
        if api == "chat":
            return 200, chat_answer(text)
        return 200, {"choices": [{"text": text, "finish_reason": "stop"}]}

    server.reply = reply
    agent_ = LLMAgent(make_generator(server.url, api=api), LLMAgentSettings(cot=False, **agent))
    (episode,) = play(agent_, "agentbench/GaussianBandit-5arms-medium-button-v0", [0])
    assert len(episode.steps) == 50 and all(step.valid for step in episode.steps)
    return [exchange.body for exchange in server.exchanges]


def _extends(previous: Json, following: Json) -> bool:
    """The earlier request is the start of the later one: messages (chat) or prompt text."""
    if "messages" in previous:
        return following["messages"][: len(previous["messages"])] == previous["messages"]
    return following["prompt"].startswith(previous["prompt"])


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_the_turns_layout_sends_each_prompt_as_the_start_of_the_next(
    server: ScriptedServer, api: str
) -> None:
    """What a server's prefix cache (vLLM, SGLang) needs: over a 50-step episode every
    request extends the one before, so only the new exchange is prefilled; the paper's
    single-message layout rewrites the end of its one message every step."""
    bodies = _episode_requests(server, api, context_layout="turns")
    assert len(bodies) == 50
    assert all(_extends(a, b) for a, b in pairwise(bodies))
    server.exchanges.clear()
    single = _episode_requests(server, api)
    assert not any(_extends(a, b) for a, b in pairwise(single))
    # The single message still grows only at its end, before the question (what the local
    # backend's prefix reuse relies on): a cache shares all of it but the question. From
    # the second step on: the first says "No steps taken yet." where the history starts.
    for a, b in pairwise(single[1:]):
        text_a, text_b = (x["prompt"] if api == "completions" else x["messages"][-1]["content"]
                          for x in (a, b))  # fmt: skip
        assert text_b.startswith(text_a[: text_a.rindex("\n\nStep ")])


def test_the_turns_layout_extends_its_prompts_while_the_window_holds(
    server: ScriptedServer,
) -> None:
    """With a window of C = 10 transitions the prompt grows for the first 10 steps; after
    that the oldest exchange leaves it every step (the server prefills from there)."""
    bodies = _episode_requests(server, "completions", context_layout="turns", history_length=10)
    extends = [_extends(a, b) for a, b in pairwise(bodies)]
    assert extends == [True] * 10 + [False] * 39


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_a_stop_string_the_server_kept_is_cut_off(server: ScriptedServer, api: str) -> None:
    """OpenAI's API drops a matched stop string; transformers serve keeps it."""
    text = "ACTION=blue\nuser: and now?"
    if api == "chat":
        server.reply = lambda exchange, index: (200, chat_answer(text, finish="stop"))
    else:
        server.reply = lambda exchange, index: (200, {"choices": [{"text": text}]})
    config = GenerationConfig(stop=("\nuser:",))
    (generation,) = make_generator(server.url, api=api).generate([PROMPT], config)
    assert generation.text == "ACTION=blue" and generation.finish_reason == "stop"
    server.reply = lambda exchange, index: (200, chat_answer("ACTION=red", finish="length"))
    (generation,) = make_generator(server.url).generate([PROMPT], config)
    assert generation.text == "ACTION=red" and generation.finish_reason == "length"
