"""`llmcloud smoke` against a local OpenAI-compatible server (stdlib http.server on
127.0.0.1): auth on /v1, a models list, completions with and without SSE streaming, and the
ways a real endpoint goes wrong."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from infra.cli import app
from infra.ops.smoke import SmokeUsageError, base_url, run_smoke, sse_events

KEY = "test-key-0123456789"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
TOKENS = ["The", " sea", " is", " wide", " and", " deep", "."]


@dataclass
class Behaviour:
    """How the fake endpoint misbehaves (all False: a healthy vLLM)."""

    open_models: bool = False  # /v1/models answers without a key
    any_key: bool = False  # any bearer token is accepted
    broken_stream: bool = False  # the stream ends without tokens
    completion_status: int = 200
    token_delay_s: float = 0.01


class FakeOpenAI(BaseHTTPRequestHandler):
    behaviour = Behaviour()

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if self.behaviour.any_key:
            return header.startswith("Bearer ")
        return header == f"Bearer {KEY}"

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._json(200, {})
        elif self.path == "/v1/models":
            if not (self.behaviour.open_models or self._authorized()):
                self._json(401, {"error": "Unauthorized"})
                return
            self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/v1/completions":
            self._json(404, {"error": "not found"})
            return
        if not self._authorized():
            self._json(401, {"error": "Unauthorized"})
            return
        if body.get("model") != MODEL:
            self._json(404, {"error": f"model {body.get('model')} does not exist"})
            return
        if self.behaviour.completion_status != 200:
            self._json(self.behaviour.completion_status, {"error": "engine dead"})
            return
        tokens = TOKENS[: int(body.get("max_tokens", 16))]
        if not body.get("stream"):
            self._json(
                200,
                {
                    "object": "text_completion",
                    "model": MODEL,
                    "choices": [{"index": 0, "text": "".join(tokens), "finish_reason": "stop"}],
                    "usage": {"completion_tokens": len(tokens)},
                },
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if not self.behaviour.broken_stream:
            for token in tokens:
                time.sleep(self.behaviour.token_delay_s)
                chunk = {"object": "text_completion", "choices": [{"index": 0, "text": token}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            usage = {"choices": [], "usage": {"completion_tokens": len(tokens)}}
            self.wfile.write(f"data: {json.dumps(usage)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour]]:
    behaviour = Behaviour()
    handler = type("Handler", (FakeOpenAI,), {"behaviour": behaviour})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", behaviour
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_healthy_endpoint_passes_every_check_and_measures_streaming(server):
    url, _ = server
    result = run_smoke(url, KEY, timeout_s=10)
    assert result.ok, result.checks
    assert [c.name for c in result.checks] == [
        "refuses a request without the key",
        "refuses a wrong key",
        "answers with the key",
        "completes a prompt",
        "streams a completion",
    ]
    assert result.model == MODEL
    assert result.completion_tokens == len(TOKENS)
    # the server sleeps 10 ms before each token: TTFT is at least one delay, and the decode
    # rate cannot exceed one token per delay
    assert result.ttft_s is not None and result.ttft_s >= 0.01
    assert result.tokens_per_s is not None and 0 < result.tokens_per_s <= 1 / 0.01 * 1.05


def test_open_endpoint_fails_the_first_check(server):
    url, behaviour = server
    behaviour.open_models = True
    result = run_smoke(url, KEY, timeout_s=10)
    assert not result.ok
    assert result.failed.name == "refuses a request without the key"
    assert "the endpoint is open" in result.failed.detail
    assert len(result.checks) == 1


def test_endpoint_accepting_any_key_fails(server):
    url, behaviour = server
    behaviour.any_key = True
    result = run_smoke(url, KEY, timeout_s=10)
    assert result.failed.name == "refuses a wrong key"
    assert "any key is accepted" in result.failed.detail


def test_wrong_key_given_to_smoke_fails_at_the_authenticated_check(server):
    url, _ = server
    result = run_smoke(url, "not-the-key", timeout_s=10)
    assert result.failed.name == "answers with the key"
    assert "HTTP 401" in result.failed.detail


def test_unknown_model_is_named_in_the_failure(server):
    url, _ = server
    result = run_smoke(url, KEY, model="no-such-model", timeout_s=10)
    assert result.failed.name == "answers with the key"
    assert "no-such-model" in result.failed.detail and MODEL in result.failed.detail


def test_failing_engine_fails_the_completion_check(server):
    url, behaviour = server
    behaviour.completion_status = 500
    result = run_smoke(url, KEY, timeout_s=10)
    assert result.failed.name == "completes a prompt"
    assert "HTTP 500" in result.failed.detail


def test_stream_without_tokens_fails_the_streaming_check(server):
    url, behaviour = server
    behaviour.broken_stream = True
    result = run_smoke(url, KEY, timeout_s=10)
    assert result.failed.name == "streams a completion"
    assert "no tokens" in result.failed.detail


def test_unreachable_endpoint_is_a_failed_check_not_a_traceback():
    result = run_smoke("http://127.0.0.1:9", KEY, timeout_s=2)
    assert not result.ok
    assert result.failed.name == "reachable"


def test_sse_parser_skips_comments_and_stops_at_done():
    lines = [
        ": ping",
        "",
        'data: {"a": 1}',
        "event: x",
        'data:{"b": 2}',
        "data: [DONE]",
        'data: {"c": 3}',
    ]
    assert list(sse_events(iter(lines))) == [{"a": 1}, {"b": 2}]


def test_base_url_accepts_root_or_v1_and_rejects_other_schemes():
    assert base_url("http://h:8000/v1/") == "http://h:8000"
    assert base_url("https://h") == "https://h"
    with pytest.raises(SmokeUsageError):
        base_url("h:8000")


def test_cli_exit_codes(server, monkeypatch):
    url, behaviour = server
    runner = CliRunner()
    monkeypatch.delenv("LLMCLOUD_API_KEY", raising=False)
    ok = runner.invoke(app, ["smoke", "--url", url, "--api-key", KEY, "--timeout", "10"])
    assert ok.exit_code == 0, ok.output
    assert "tokens/s" in ok.output and "time to first token" in ok.output

    monkeypatch.setenv("LLMCLOUD_API_KEY", KEY)
    behaviour.any_key = True
    bad = runner.invoke(app, ["smoke", "--url", url, "--timeout", "10"])
    assert bad.exit_code == 1
    assert "refuses a wrong key" in bad.output

    monkeypatch.delenv("LLMCLOUD_API_KEY")
    usage = runner.invoke(app, ["smoke", "--url", url])
    assert usage.exit_code == 2
    assert "--api-key" in usage.output
    assert "Traceback" not in usage.output
