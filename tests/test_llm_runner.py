"""The LLM agent through the suite runner against a local OpenAI-compatible server
(loopback only): a server that goes down ends the run with a clear message and
keeps the episodes finished so far; the run then resumes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agentbench.cli import main
from agentbench.records import read_episodes


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        server = self.server
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        with server.lock:
            server.requests += 1
            failing = server.requests > server.fail_after
        if failing:
            self.send_response(503)
            self.end_headers()
            return
        assert body["messages"][0]["role"] == "user"
        reply = {
            "choices": [
                {"message": {"role": "assistant", "content": "Blue it is. ACTION=blue"},
                 "finish_reason": "stop"}
            ]
        }  # fmt: skip
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.lock = threading.Lock()
    httpd.requests = 0
    httpd.fail_after = 10**9
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _suite(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(
        f"""
name = "llm-http"
episodes = 4
num_envs = 1
envs = ["agentbench/GaussianBandit-5arms-medium-button-v0"]
[[agents]]
name = "llm"
model = "test-model"
base_url = "http://127.0.0.1:{port}/v1"
max_retries = 1
backoff_s = 0.01
budget = 8
"""
    )
    return path


def test_a_server_that_goes_down_keeps_finished_episodes_and_the_run_resumes(
    server: ThreadingHTTPServer, tmp_path: Path, capsys
) -> None:
    suite = _suite(tmp_path, server.server_address[1])
    out = tmp_path / "run"
    server.fail_after = 120  # two full episodes of 50 steps, then 503 for good
    assert main(["run", str(suite), "--out", str(out), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "HTTP 503" in error and f"127.0.0.1:{server.server_address[1]}" in error
    assert "2 episodes finished so far are kept" in error
    kept = read_episodes(out / "episodes.jsonl")
    assert [ep.seed for ep in kept] == [0, 1]
    assert all(step.label == "blue" and step.valid for ep in kept for step in ep.steps)

    server.fail_after = 10**9  # the server is back
    assert main(["run", str(suite), "--out", str(out), "--no-progress"]) == 0
    episodes = read_episodes(out / "episodes.jsonl")
    assert sorted(ep.seed for ep in episodes) == [0, 1, 2, 3]
    assert episodes[0].steps[0].text == "Blue it is. ACTION=blue"
    assert "4 episodes" not in capsys.readouterr().err
