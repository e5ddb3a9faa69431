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
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar

from agentbench.errors import ConfigError
from agentbench.models.interface import (
    Chat,
    Generation,
    GenerationConfig,
    GenerationError,
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
    timeout_s: float = 60.0  # per attempt: connecting plus waiting for the whole answer
    max_retries: int = 4  # extra attempts after the first on connection errors, timeouts, 429, 5xx
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
        self,
        prompts: Sequence[Chat],
        config: GenerationConfig,
        seeds: Sequence[int] | None = None,
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
        url = self._url("chat/completions")
        choice = self._first_choice(self._post(url, body, abort), url)
        message = choice.get("message") or {}
        content = message.get("content")
        logprobs = [
            float(entry["logprob"])
            for entry in ((choice.get("logprobs") or {}).get("content") or [])
            if entry.get("logprob") is not None
        ]
        return Generation(
            text=content if isinstance(content, str) else "",
            logprobs=logprobs,
            finish_reason=_finish_reason(choice),
        )

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
        url = self._url("completions")
        choice = self._first_choice(self._post(url, body, abort), url)
        token_logprobs = (choice.get("logprobs") or {}).get("token_logprobs") or []
        text = choice.get("text")
        return Generation(
            text=text if isinstance(text, str) else "",
            logprobs=[float(lp) for lp in token_logprobs if lp is not None],
            finish_reason=_finish_reason(choice),
        )

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
        logprobs = self._first_choice(self._post(url, body, abort), url).get("logprobs") or {}
        tokens = logprobs.get("tokens")
        offsets = logprobs.get("text_offset")
        token_logprobs = logprobs.get("token_logprobs")
        echoed = "".join(str(t) for t in tokens) if isinstance(tokens, list) else ""
        # A server that ignores echo returns only the generated token's log-prob; summing
        # nothing would score every candidate 0.0 silently, so refuse instead.
        if not (
            len(echoed) >= len(full_text)  # so tokens is a list
            and isinstance(offsets, list)
            and isinstance(token_logprobs, list)
            and len(tokens) == len(offsets) == len(token_logprobs)
        ):
            raise GenerationError(
                f"the model server at {url} did not echo the prompt's tokens with log-probs "
                "(tokens, text_offset, token_logprobs), so it cannot score; vLLM can"
            )
        # Offsets count characters of the echoed text; a server that shows a special
        # token first (e.g. "<s>") shifts them, so find where our text begins in it.
        start = max(echoed.find(full_text), 0)
        boundary, end = start + len(prompt_text), start + len(full_text)
        total = 0.0
        for token, offset, logprob in zip(tokens, offsets, token_logprobs, strict=True):
            if offset < end and offset + len(str(token)) > boundary:
                if logprob is None:
                    raise GenerationError(
                        f"the model server at {url} gave no log-prob for the continuation "
                        f"token {token!r}"
                    )
                total += float(logprob)
        return total

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

    def _post(self, url: str, body: Json, abort: threading.Event) -> Json:
        """POST ``body`` as JSON; retry transient failures with backoff; parse the JSON answer."""
        data = json.dumps(body).encode("utf-8")
        attempts = self.settings.max_retries + 1
        made = 0
        failure = ""
        last_error: BaseException | None = None
        for attempt in range(attempts):
            if abort.is_set():  # a batch-mate failed; its error is the one the caller sees
                raise GenerationError(f"request to {url} cancelled after another one failed")
            made += 1
            retry_after: float | None = None
            try:
                with urllib.request.urlopen(
                    self._request(url, data), timeout=self.settings.timeout_s
                ) as response:
                    payload = response.read()
            except urllib.error.HTTPError as exc:
                status = f"HTTP {exc.code}" + (f" {exc.reason}" if exc.reason else "")
                if exc.code not in TRANSIENT_HTTP_STATUSES:
                    raise GenerationError(
                        f"the model server at {url} rejected the request with {status}"
                        f"{self._error_detail(exc)}{_hint(exc.code, self.settings.api_key_env)}"
                    ) from None
                failure, last_error = status, exc
                retry_after = _retry_after_s(exc)
                exc.close()
            except (OSError, http.client.HTTPException) as exc:
                failure = _describe_connection_failure(exc, self.settings.timeout_s)
                last_error = exc
            else:
                return self._parse_json(payload, url)
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
        plural = "attempt" if made == 1 else "attempts"
        if failure.startswith("HTTP"):
            message = f"the model server at {url} kept failing with {failure} after {made} {plural}"
        else:
            message = f"could not reach the model server at {url}: {failure} after {made} {plural}"
        raise GenerationError(message) from last_error

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

    def _error_detail(self, exc: urllib.error.HTTPError) -> str:
        """The server's own explanation of a rejection, short and with the API key blanked out."""
        try:
            raw = exc.read().decode("utf-8", errors="replace")
        except (OSError, http.client.HTTPException):
            return ""
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

    def _parse_json(self, payload: bytes, url: str) -> Json:
        text = payload.decode("utf-8", errors="replace")
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise GenerationError(
                f"the model server at {url} answered with something other than a JSON object: "
                f"{self._without_key(text)[:ERROR_DETAIL_CHARS]!r}"
            )
        return parsed

    def _first_choice(self, response: Json, url: str) -> Json:
        choices = response.get("choices")
        if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)):
            raise GenerationError(
                f"the model server at {url} answered without choices[0]; "
                "is it an OpenAI-compatible server?"
            )
        return choices[0]

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


def _finish_reason(choice: Json) -> str:
    """The interface knows two reasons: out of budget, or stopped for any other reason."""
    return "length" if choice.get("finish_reason") == "length" else "stop"


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


def _retry_after_s(exc: urllib.error.HTTPError) -> float | None:
    """A 429/503's Retry-After in seconds, when the server sent one as a number."""
    value = exc.headers.get("Retry-After") if exc.headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date; the exponential backoff will do


def _hint(status: int, api_key_env: str) -> str:
    """The likely fix for the rejections people meet most."""
    if status in (401, 403):
        return f"; put the API key in the environment variable {api_key_env}"
    if status == 404:
        return "; check base_url (it usually ends in /v1) and the model name"
    return ""
