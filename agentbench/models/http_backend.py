"""A TextGenerator that talks to an OpenAI-compatible HTTP server.

vLLM, the llama.cpp server, ollama and hosted APIs all speak the OpenAI wire
format, so one client covers them. Only the standard library is used
(``urllib`` and a thread pool), so serving a model adds no dependency.

Two endpoints are supported:

- ``api="chat"`` (``/chat/completions``): the server renders the chat with the
  model's own chat template. Generation only: the chat API cannot return the
  log-probabilities of a given continuation, so ``score`` is unsupported.
- ``api="completions"`` (``/completions``): we render the chat into one text
  prompt with ``prompt_template`` ourselves. ``score`` works here on servers
  that echo prompt log-probs (vLLM does; the llama.cpp server does not yet).

The API key is read from the environment variable named by ``api_key_env`` at
each request and sent only as the ``Authorization`` header: it is never stored
on the object, logged or put into an error message. Local servers usually need
no key; when the variable is unset or empty no ``Authorization`` header is sent.

A flaky server costs time, not episodes. An attempt that fails on the way (a
connection refused or reset, ``timeout_s`` passed, a 408/429/5xx) or brings back
an answer that cannot be read (not JSON, cut off, not shaped like an OpenAI
answer) is tried again after an exponential, jittered backoff, or after the
server's Retry-After when it sent one; after ``max_retries`` retries the request
fails with one sentence naming the server and the last failure. ``timeout_s`` is
a deadline for the whole attempt, connecting and reading the full answer
included, so a server that trickles its answer a byte at a time cannot hold a
request for longer.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import random
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from itertools import accumulate
from typing import Any, Literal, TypeVar

from agentbench.errors import ConfigError
from agentbench.models.interface import (
    Chat,
    Generation,
    GenerationConfig,
    GenerationError,
    Seeds,
    UnsupportedOperation,
)

logger = logging.getLogger(__name__)

Json = dict[str, Any]
T = TypeVar("T")

APIS = ("chat", "completions")
# Worth retrying: the request was fine, the server was busy, restarting or behind a flaky proxy.
TRANSIENT_HTTP_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
# How much of a server's error body goes into an error message.
ERROR_DETAIL_CHARS = 200


@dataclass
class OpenAICompatibleSettings:
    """Where the server is and how to talk to it; all but the first two fields have defaults."""

    base_url: str  # e.g. "http://127.0.0.1:8000/v1" (vLLM), "http://127.0.0.1:11434/v1" (ollama)
    model: str  # the model name the server knows, sent as "model" in every request
    api: Literal["chat", "completions"] = "chat"  # completions is needed for score()
    api_key_env: str = "OPENAI_API_KEY"  # the variable holding the key; unset: no auth header
    concurrency: int = 8  # requests in flight at once (vLLM batches them on its side)
    timeout_s: float = 60.0  # deadline of each attempt: connecting, sending, reading all the answer
    # Extra attempts after the first on connection errors, timeouts, 408, 429, 5xx and
    # unreadable answers (not JSON, cut off, wrong shape).
    max_retries: int = 4
    backoff_s: float = 0.5  # first retry delay; doubles each retry, jittered to 50-100 %
    max_backoff_s: float = 30.0  # no single delay is longer (also caps a server's Retry-After)
    backoff_seed: int = 0  # seeds the jitter's random.Random, so runs do not touch the global RNG
    logprobs: bool = True  # ask for token log-probs; turn off for servers that reject the field
    # Completions API only. Each message is rendered with prompt_template and the
    # rendered messages are concatenated; reply_prefix then cues the assistant's
    # turn. The continuation in score() is appended right after reply_prefix, so
    # generated text and scored candidates have the same form ("ACTION=blue").
    prompt_template: str = "{role}: {content}\n"  # fields: {role}, {content}
    reply_prefix: str = "assistant: "
    # Completions API only: without a chat template a model happily writes the
    # user's next turn too; these stop it (added to GenerationConfig.stop).
    template_stop: tuple[str, ...] = ("\nuser:", "\nsystem:")

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"base_url {self.base_url!r} is not an http(s) URL; "
                "use one like 'http://127.0.0.1:8000/v1'"
            )
        if self.api not in APIS:
            raise ConfigError(f"api {self.api!r} is not one of {', '.join(APIS)}")
        if not self.model:
            raise ConfigError("model is empty; give the model name the server serves")
        if self.concurrency < 1:
            raise ConfigError(f"concurrency {self.concurrency} must be at least 1")
        if self.timeout_s <= 0:
            raise ConfigError(f"timeout_s {self.timeout_s} must be positive")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries {self.max_retries} must be 0 or more")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ConfigError(
                f"backoff_s {self.backoff_s} and max_backoff_s {self.max_backoff_s} "
                "must be 0 or more"
            )
        try:
            self.prompt_template.format(role="user", content="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"prompt_template {self.prompt_template!r} is not a format string with only "
                "{role} and {content} fields"
            ) from exc


class OpenAICompatibleGenerator:
    """Generation (and, with the completions API, scoring) through an OpenAI-compatible server.

    Each prompt is one request; requests run on a thread pool of ``concurrency``
    workers, since an inference server batches concurrent requests itself.
    """

    def __init__(self, settings: OpenAICompatibleSettings) -> None:
        self.settings = settings
        self.name = f"http:{settings.model}"
        # One jitter RNG shared by the worker threads, hence the lock.
        self._jitter = random.Random(settings.backoff_seed)
        self._jitter_lock = threading.Lock()

    def __repr__(self) -> str:
        # Spelled out so that it stays free of anything secret whatever fields get added.
        s = self.settings
        return f"{type(self).__name__}(model={s.model!r}, base_url={s.base_url!r}, api={s.api!r})"

    __str__ = __repr__

    # ---- the TextGenerator interface ---------------------------------------------------------

    def generate(
        self, prompts: Sequence[Chat], config: GenerationConfig, seeds: Seeds = None
    ) -> list[Generation]:
        """One completion per prompt, in prompt order; seeds go to the server as ``seed``."""
        if seeds is not None and len(seeds) != len(prompts):
            raise ConfigError(f"got {len(seeds)} seeds for {len(prompts)} prompts; give one each")
        # int(): seeds often come from numpy, whose integers json cannot write.
        row_seeds: list[int | None] = (
            [int(s) for s in seeds] if seeds is not None else [None] * len(prompts)
        )
        generate_one = self._chat if self.settings.api == "chat" else self._complete
        jobs = [
            partial(generate_one, prompt, config, seed)
            for prompt, seed in zip(prompts, row_seeds, strict=True)
        ]
        return self._run_concurrently(jobs)

    def score(
        self, prompts: Sequence[Chat], continuations: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        """Summed log-probs of each continuation after the rendered prompt (completions API).

        The server echoes the log-probs of prompt + continuation (``echo: true``);
        the tokens overlapping the continuation's characters (found through
        ``text_offset``) are summed. A token that straddles the boundary, such as
        " ACTION" after "assistant:", counts as the continuation's: leaving it out
        would drop the first word of every candidate.
        """
        if self.settings.api != "completions":
            raise UnsupportedOperation(
                f"scoring needs api='completions' on a server that echoes prompt log-probs "
                f"(vLLM) or the local transformers backend, but {self.name} at "
                f"{self.settings.base_url} uses api={self.settings.api!r}"
            )
        if len(continuations) != len(prompts):
            raise ConfigError(
                f"got {len(continuations)} continuation lists for {len(prompts)} prompts; "
                "give one list per prompt"
            )
        jobs = [
            partial(self._score_one, prompt, continuation)
            for prompt, candidates in zip(prompts, continuations, strict=True)
            for continuation in candidates
        ]
        flat = iter(self._run_concurrently(jobs))
        return [[next(flat) for _ in candidates] for candidates in continuations]

    # ---- requests per endpoint ---------------------------------------------------------------

    def _chat(
        self, prompt: Chat, config: GenerationConfig, seed: int | None, abort: threading.Event
    ) -> Generation:
        body: Json = {
            "model": self.settings.model,
            "messages": [dict(message) for message in prompt],
            **self._sampling_fields(config, seed, list(config.stop)),
        }
        if self.settings.logprobs:
            body["logprobs"] = True
        answer = self._post(self._url("chat/completions"), body, abort, _read_chat_answer)
        return _cut_at_stop(answer, config.stop)

    def _complete(
        self, prompt: Chat, config: GenerationConfig, seed: int | None, abort: threading.Event
    ) -> Generation:
        stop = list(dict.fromkeys([*self.settings.template_stop, *config.stop]))
        body: Json = {
            "model": self.settings.model,
            "prompt": self.render_prompt(prompt),
            **self._sampling_fields(config, seed, stop),
        }
        if self.settings.logprobs:
            body["logprobs"] = 1
        answer = self._post(self._url("completions"), body, abort, _read_completions_answer)
        return _cut_at_stop(answer, stop)

    def _score_one(self, prompt: Chat, continuation: str, abort: threading.Event) -> float:
        if not continuation:
            return 0.0  # the empty string has probability 1
        prompt_text = self.render_prompt(prompt)
        full_text = prompt_text + continuation
        # max_tokens 1, not 0: vLLM rejects 0; the one generated token lies past full_text.
        body: Json = {
            "model": self.settings.model,
            "prompt": full_text,
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": 1,
        }
        url = self._url("completions")
        read = partial(_continuation_logprob, url=url, prompt_text=prompt_text, full_text=full_text)
        return self._post(url, body, abort, read)

    def render_prompt(self, prompt: Chat) -> str:
        """The completions prompt: each message through prompt_template, then reply_prefix."""
        rendered = "".join(
            self.settings.prompt_template.format(role=m["role"], content=m["content"])
            for m in prompt
        )
        return rendered + self.settings.reply_prefix

    def _sampling_fields(self, config: GenerationConfig, seed: int | None, stop: list[str]) -> Json:
        fields: Json = {
            "max_tokens": int(config.max_new_tokens),
            "temperature": float(config.temperature),
            "top_p": float(config.top_p),
        }
        if stop:  # some servers reject an empty list
            fields["stop"] = stop
        if seed is not None:
            fields["seed"] = seed
        return fields

    # ---- HTTP with retries -------------------------------------------------------------------

    def _url(self, endpoint: str) -> str:
        return f"{self.settings.base_url}/{endpoint}"

    def _post(
        self, url: str, body: Json, abort: threading.Event, read_answer: Callable[[Json], T]
    ) -> T:
        """POST ``body`` as JSON and read the answer with ``read_answer``; retry what is transient.

        Transient: the connection failed or timed out, the status is in
        TRANSIENT_HTTP_STATUSES, or the answer could not be read (``_UnusableAnswer``).
        Any other status, and a GenerationError from ``read_answer``, fails at once.
        """
        data = json.dumps(body).encode("utf-8")
        attempts = self.settings.max_retries + 1
        give_up = ""
        last_error: BaseException | None = None
        for attempt in range(attempts):
            if abort.is_set():  # a batch-mate failed; its error is the one the caller sees
                raise GenerationError(f"request to {url} cancelled after another one failed")
            tried = f"{attempt + 1} attempt" + ("" if attempt == 0 else "s")
            retry_after: float | None = None
            try:
                reply = self._fetch(url, data)
                if 200 <= reply.status < 300:
                    return read_answer(self._parse_json(reply.body))
                status = f"HTTP {reply.status}" + (f" {reply.reason}" if reply.reason else "")
                if reply.status not in TRANSIENT_HTTP_STATUSES:
                    raise GenerationError(
                        f"the model server at {url} rejected the request with {status}"
                        f"{self._error_detail(reply.body)}"
                        f"{_hint(reply.status, self.settings.api_key_env)}"
                    )
                failure, last_error = status, None
                give_up = f"the model server at {url} kept failing with {status} after {tried}"
                retry_after = _retry_after_s(reply.headers)
            except _UnusableAnswer as exc:
                failure, last_error = f"unusable answer ({exc})", exc
                give_up = f"the model server at {url} gave no usable answer in {tried}: {exc}"
            except (OSError, http.client.HTTPException) as exc:
                failure = _describe_connection_failure(exc, self.settings.timeout_s)
                last_error = exc
                give_up = f"could not reach the model server at {url}: {failure} after {tried}"
            if attempt + 1 < attempts:
                delay = self._backoff_s(attempt, retry_after)
                logger.warning(
                    "%s from %s (attempt %d of %d); retrying in %.2f s",
                    failure,
                    url,
                    attempt + 1,
                    attempts,
                    delay,
                )
                abort.wait(delay)  # a batch-mate's failure cuts the wait short
        raise GenerationError(give_up) from last_error

    def _fetch(self, url: str, data: bytes) -> _Reply:
        """One attempt: the status, headers and whole body, all within ``timeout_s``.

        Raises TimeoutError when the deadline passed, _UnusableAnswer when the body
        was cut off, and what urllib raises when the connection failed.
        """
        timeout_s = self.settings.timeout_s
        with _AttemptDeadline(timeout_s) as deadline:
            opener = urllib.request.build_opener(
                _DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline)
            )
            try:
                try:
                    # The socket timeout bounds each step until the deadline cuts them all.
                    with opener.open(self._request(url, data), timeout=timeout_s) as response:
                        reply = _Reply(
                            response.status, response.reason, response.headers, response.read()
                        )
                except urllib.error.HTTPError as exc:
                    with exc:
                        reply = _Reply(exc.code, exc.reason, exc.headers, _error_body(exc))
            except (OSError, http.client.HTTPException) as exc:
                if deadline.expired:
                    raise TimeoutError(f"no answer within timeout_s={timeout_s:g} s") from exc
                if isinstance(exc, http.client.IncompleteRead):
                    raise _UnusableAnswer(
                        f"the answer was cut off after {len(exc.partial)} bytes"
                    ) from exc
                raise
            if deadline.expired:  # a body without Content-Length ends where the deadline cut it
                raise TimeoutError(f"no answer within timeout_s={timeout_s:g} s")
        return reply

    def _request(self, url: str, data: bytes) -> urllib.request.Request:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.settings.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return urllib.request.Request(url, data=data, headers=headers, method="POST")

    def _backoff_s(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter, so that parallel requests do not retry in lockstep."""
        with self._jitter_lock:
            jitter = self._jitter.uniform(0.5, 1.0)
        delay = self.settings.backoff_s * (2**attempt) * jitter
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.settings.max_backoff_s)

    def _error_detail(self, body: bytes) -> str:
        """The server's own explanation of a rejection, short and with the API key blanked out."""
        raw = body.decode("utf-8", errors="replace")
        try:
            parsed = json.loads(raw)
            error = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
            text = error.get("message", raw) if isinstance(error, dict) else str(error)
        except json.JSONDecodeError:
            text = raw
        text = self._without_key(" ".join(str(text).split()))[:ERROR_DETAIL_CHARS]
        return f" ({text})" if text else ""

    def _without_key(self, text: str) -> str:
        """``text`` without the API key: a server that echoes the request must not leak it."""
        key = os.environ.get(self.settings.api_key_env)
        return text.replace(key, "***") if key else text

    def _parse_json(self, payload: bytes) -> Json:
        text = payload.decode("utf-8", errors="replace")
        try:
            parsed = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            parsed = None
        if not isinstance(parsed, dict):
            # The key is blanked before cutting, so that no prefix of it can show.
            raise _UnusableAnswer(
                f"the answer is not a JSON object: {self._without_key(text)[:ERROR_DETAIL_CHARS]!r}"
            )
        return parsed

    def _run_concurrently(self, jobs: list[Callable[[threading.Event], T]]) -> list[T]:
        """Run the jobs on at most ``concurrency`` threads; results in job order.

        The first failure stops the batch: it sets ``abort`` at once, so queued jobs
        give up before their first request and running ones stop retrying; a dead
        server fails once, not once per prompt. That first failure is what is raised.
        """
        if not jobs:
            return []
        abort = threading.Event()
        first_failure: list[BaseException] = []
        failure_lock = threading.Lock()

        def run(job: Callable[[threading.Event], T]) -> T:
            try:
                return job(abort)
            except BaseException as exc:
                with failure_lock:
                    if not abort.is_set():
                        first_failure.append(exc)
                    abort.set()
                raise

        workers = min(self.settings.concurrency, len(jobs))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agentbench-http") as pool:
            futures = [pool.submit(run, job) for job in jobs]
            wait(futures, return_when=FIRST_EXCEPTION)
            if abort.is_set():
                pool.shutdown(wait=True, cancel_futures=True)
                raise first_failure[0]
            return [future.result() for future in futures]


# ---- reading answers -------------------------------------------------------------------------


class _UnusableAnswer(Exception):
    """An answer that cannot be read (not JSON, cut off, wrong shape): worth another attempt.

    The message is a clause about "the answer" without the server's text, except
    for the short, key-blanked excerpt that ``_parse_json`` quotes.
    """


def _read_chat_answer(answer: Json) -> Generation:
    choice = _first_choice(answer)
    message = _member(choice, "message", "an object", "choices[0]", required=True)
    # null content is OpenAI's "no text" (e.g. a refusal); anything but a string or null is wrong.
    content = _member(message, "content", "a string", "choices[0].message")
    logprobs = _member(choice, "logprobs", "an object", "choices[0]") or {}
    entries = _member(logprobs, "content", "an array", "choices[0].logprobs") or []
    values = []
    for i, entry in enumerate(entries):
        where = f"choices[0].logprobs.content[{i}]"
        _expect(entry, "an object", where)
        values.append(_member(entry, "logprob", "a number", where))
    return Generation(
        text=content or "",
        logprobs=_numbers(values, "choices[0].logprobs.content[].logprob"),
        finish_reason=_finish_reason(choice),
    )


def _read_completions_answer(answer: Json) -> Generation:
    choice = _first_choice(answer)
    text = _member(choice, "text", "a string", "choices[0]", required=True)
    logprobs = _member(choice, "logprobs", "an object", "choices[0]") or {}
    values = _member(logprobs, "token_logprobs", "an array", "choices[0].logprobs") or []
    return Generation(
        text=text,
        logprobs=_numbers(values, "choices[0].logprobs.token_logprobs"),
        finish_reason=_finish_reason(choice),
    )


def _cut_at_stop(generation: Generation, stop: Sequence[str]) -> Generation:
    """The text up to the first stop string, as OpenAI's API returns it: some servers
    (``transformers serve``) keep the matched stop string at the end."""
    cuts = [i for i in (generation.text.find(s) for s in stop if s) if i >= 0]
    if cuts:
        generation.text = generation.text[: min(cuts)]
        generation.finish_reason = "stop"
    return generation


def _continuation_logprob(answer: Json, *, url: str, prompt_text: str, full_text: str) -> float:
    """The summed log-probs of the echoed tokens that overlap ``full_text[len(prompt_text):]``."""
    logprobs = _member(_first_choice(answer), "logprobs", "an object", "choices[0]") or {}
    where = "choices[0].logprobs"
    tokens = _member(logprobs, "tokens", "an array", where)
    offsets = _member(logprobs, "text_offset", "an array", where)
    token_logprobs = _member(logprobs, "token_logprobs", "an array", where)
    # A server that ignores echo returns only the generated token's log-prob; summing
    # nothing would score every candidate 0.0 silently, so refuse instead. That is the
    # server's nature, not a fault of this answer: no retry.
    if tokens is None or offsets is None or token_logprobs is None:
        raise _no_echo(url)
    if not len(tokens) == len(offsets) == len(token_logprobs):
        raise _no_echo(url)
    for i, (token, offset, logprob) in enumerate(zip(tokens, offsets, token_logprobs, strict=True)):
        _expect(token, "a string", f"{where}.tokens[{i}]")
        _expect(offset, "a number", f"{where}.text_offset[{i}]")
        if logprob is not None:
            _expect(logprob, "a number", f"{where}.token_logprobs[{i}]")
    echoed = "".join(tokens)
    if len(echoed) < len(full_text):
        raise _no_echo(url)
    if any(offset < 0 for offset in offsets):
        # SGLang echoes the tokens but writes -1 for every offset; the tokens' own
        # lengths place them in the echoed text (which is their concatenation).
        offsets = [0, *accumulate(len(token) for token in tokens)][:-1]
    # Offsets count characters of the echoed text; a server that shows a special
    # token first (e.g. "<s>") shifts them, so find where our text begins in it.
    start = max(echoed.find(full_text), 0)
    boundary, end = start + len(prompt_text), start + len(full_text)
    total = 0.0
    for token, offset, logprob in zip(tokens, offsets, token_logprobs, strict=True):
        if offset < end and offset + len(token) > boundary:
            if logprob is None:
                raise GenerationError(
                    f"the model server at {url} gave no log-prob for the continuation "
                    f"token {token!r}"
                )
            total += float(logprob)
    return total


def _no_echo(url: str) -> GenerationError:
    return GenerationError(
        f"the model server at {url} did not echo the prompt's tokens with log-probs "
        "(tokens, text_offset, token_logprobs), so it cannot score; vLLM can"
    )


def _first_choice(answer: Json) -> Json:
    choices = answer.get("choices")
    if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)):
        raise _UnusableAnswer(
            "the answer has no choices[0] object; is it an OpenAI-compatible server?"
        )
    return choices[0]


def _member(container: Json, key: str, expected: str, where: str, required: bool = False) -> Any:
    """``container[key]`` if it is ``expected`` (a JSON type, see _json_type).

    Absent or null gives None, unless ``required``.
    """
    value = container.get(key)
    if value is None and not required:
        return None
    _expect(value, expected, f"{where}.{key}")
    return value


def _expect(value: Any, expected: str, where: str) -> None:
    if value is None:
        raise _UnusableAnswer(f"the answer has no {where}")
    if _json_type(value) != expected:
        raise _UnusableAnswer(f"the answer has {where} as {_json_type(value)}, not {expected}")


def _numbers(values: list[Any], where: str) -> list[float]:
    """The log-probs in ``values`` as floats, nulls left out (a first token has none)."""
    for value in values:
        if value is not None:
            _expect(value, "a number", where)
    return [float(value) for value in values if value is not None]


def _json_type(value: Any) -> str:
    """What a parsed JSON value is, with its article, for messages."""
    if isinstance(value, bool):  # before int: bool is an int in Python
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    kinds = {str: "a string", list: "an array", dict: "an object"}
    return kinds.get(type(value), "null")


def _finish_reason(choice: Json) -> str:
    """The interface knows two reasons: out of budget, or stopped for any other reason."""
    return "length" if choice.get("finish_reason") == "length" else "stop"


# ---- one attempt against a deadline ----------------------------------------------------------


@dataclass
class _Reply:
    """What one attempt brought back, whatever the status."""

    status: int
    reason: str
    headers: http.client.HTTPMessage | None
    body: bytes


class _AttemptDeadline:
    """Shuts an attempt's connection down once ``timeout_s`` has passed, whatever it is doing.

    A socket timeout bounds each read, not the answer: a server that sends a byte
    every 0.4 s never trips a 1 s timeout. So a timer shuts the socket down at the
    deadline, which ends a send or read in progress at once; connecting is
    bounded by the socket timeout itself.
    """

    def __init__(self, timeout_s: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(timeout_s, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _AttemptDeadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down at the deadline.

        Through a duplicate: TLS wraps the socket in a new object and detaches this
        one, while a shutdown of the duplicate ends the connection under both.
        """
        duplicate = sock.dup()
        with self._lock:
            self._sockets.append(duplicate)
            if self.expired:  # connecting took the whole time
                _shut_down(duplicate)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut_down(sock)


def _shut_down(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the other side


def _watched_connection(
    deadline: _AttemptDeadline,
    connection_class: type[http.client.HTTPConnection],
    *args: Any,
    **kwargs: Any,
) -> http.client.HTTPConnection:
    """A ``connection_class`` whose socket ``deadline`` watches from the moment it connects.

    http.client opens sockets through the per-connection ``_create_connection``, so
    wrapping it covers plain HTTP, TLS and proxy tunnels alike.
    """
    connection = connection_class(*args, **kwargs)
    open_socket = connection._create_connection

    def open_watched_socket(*open_args: Any, **open_kwargs: Any) -> socket.socket:
        sock = open_socket(*open_args, **open_kwargs)
        deadline.watch(sock)
        return sock

    connection._create_connection = open_watched_socket
    return connection


class _DeadlineHandlerMixin:
    """Makes a urllib HTTP(S) handler open connections that ``deadline`` watches."""

    def __init__(self, deadline: _AttemptDeadline) -> None:
        super().__init__()
        self._deadline = deadline

    def do_open(self, http_class: Any, req: urllib.request.Request, **http_conn_args: Any) -> Any:
        watched = partial(_watched_connection, self._deadline, http_class)
        return super().do_open(watched, req, **http_conn_args)  # type: ignore[misc]


class _DeadlineHTTPHandler(_DeadlineHandlerMixin, urllib.request.HTTPHandler):
    pass


class _DeadlineHTTPSHandler(_DeadlineHandlerMixin, urllib.request.HTTPSHandler):
    pass


def _error_body(exc: urllib.error.HTTPError) -> bytes:
    """The body of an error answer; its status decides what happens, so a broken body is b''."""
    try:
        return exc.read()
    except (OSError, http.client.HTTPException):
        return b""


def _describe_connection_failure(exc: BaseException, timeout_s: float) -> str:
    """A few words on what went wrong below HTTP, e.g. 'connection refused'."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        return f"no answer within timeout_s={timeout_s:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(reason, ConnectionError):
        return "the connection broke"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__


def _retry_after_s(headers: http.client.HTTPMessage | None) -> float | None:
    """A 429/503's Retry-After in seconds, when the server sent one as a number."""
    value = headers.get("Retry-After") if headers is not None else None
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date; the exponential backoff will do
    return seconds if seconds is not None and 0 <= seconds < math.inf else None


def _hint(status: int, api_key_env: str) -> str:
    """The likely fix for the rejections people meet most."""
    if status in (401, 403):
        return f"; put the API key in the environment variable {api_key_env}"
    if status == 404:
        return "; check base_url (it usually ends in /v1) and the model name"
    return ""
