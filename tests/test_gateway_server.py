"""The gateway program run for real: a process on 127.0.0.1 in front of an OpenAI-compatible
stub, two teams' keys, a model each may and may not call, a limit hit, the audit read back."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from workloads.gateway.server import Limiter, Team, key_digest

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_KEY = "vllm-second-factor"
KEYS = {"research": "key-research-0123456789", "product": "key-product-9876543210"}


class Stub(BaseHTTPRequestHandler):
    """vLLM's contract as far as the gateway uses it: Bearer key, `usage` in the answer,
    an SSE stream ending with a usage chunk when `stream_options.include_usage` is set."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Stub.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        if self.headers.get("Authorization") != f"Bearer {UPSTREAM_KEY}":
            self._send(401, b'{"error":"Unauthorized"}', "application/json")
            return
        usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
        if body.get("stream"):
            chat = self.path.endswith("/chat/completions")
            piece = {"delta": {"content": "hi"}} if chat else {"text": "hi"}
            chunks = [{"choices": [piece]}, {"choices": [piece]}]
            if (body.get("stream_options") or {}).get("include_usage"):
                chunks.append({"choices": [], "usage": usage})
            data = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks)
            self._send(200, data + b"data: [DONE]\n\n", "text/event-stream")
            return
        answer = {"model": body["model"], "choices": [{"text": "hi"}], "usage": usage}
        self._send(200, json.dumps(answer).encode(), "application/json")

    def _send(self, status: int, data: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_stub() -> Iterator[str]:
    """The stub upstream on a free loopback port, in a thread; yields its base URL."""
    stub = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{stub.server_address[1]}"
    finally:
        stub.shutdown()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("gateway")
    with running_stub() as base:
        audit = tmp / "audit.jsonl"
        config = {
            "teams": [
                {
                    "name": "research",
                    "key_sha256": key_digest(KEYS["research"]),
                    "models": ["llama-70b", "qwen-7b"],
                    "rpm": 3,
                    "tpm": 1000,
                    "tokens_per_day": 100000,
                },
                {
                    "name": "product",
                    "key_sha256": key_digest(KEYS["product"]),
                    "models": ["qwen-7b"],
                    "rpm": 100,
                    "tpm": 20,
                    "tokens_per_day": 100000,
                },
            ],
            "routes": [
                {"model": "llama-70b", "base_url": base, "api_key_env": "UPSTREAM_KEY_LLAMA"},
                {"model": "qwen-7b", "base_url": base, "api_key_env": "UPSTREAM_KEY_QWEN"},
            ],
            "audit_file": str(audit),
            "log_prompts": False,
        }
        path = tmp / "config.json"
        env = {"UPSTREAM_KEY_LLAMA": UPSTREAM_KEY, "UPSTREAM_KEY_QWEN": UPSTREAM_KEY}
        with running_gateway(path, config, env) as url:
            yield {"url": url, "audit": audit, "config": path, "conf": config}


@contextlib.contextmanager
def running_gateway(path: Path, config: dict[str, Any], env: dict[str, str]) -> Iterator[str]:
    """The gateway program as its own process on a free loopback port, serving `config`
    (written to `path`) with the upstream keys in `env`; yields its URL once /healthz answers."""
    path.write_text(json.dumps(config))
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workloads.gateway.server",
            "--config",
            str(path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1).read()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"gateway did not start: {proc.stdout.read() if proc.stdout else ''}")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(5)


def call(
    url: str, path: str, key: str | None, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def completion(model: str) -> dict[str, Any]:
    return {"model": model, "prompt": "secret prompt text", "max_tokens": 5}


def audit_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_gateway_refuses_a_call_without_a_key_or_with_an_unknown_one(gateway: dict) -> None:
    status, headers, _ = call(gateway["url"], "/v1/completions", None, completion("qwen-7b"))
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    status, _, _ = call(gateway["url"], "/v1/completions", "not-a-key", completion("qwen-7b"))
    assert status == 401


def test_each_team_reaches_its_models_with_the_upstream_key_and_no_other(gateway: dict) -> None:
    url = gateway["url"]
    Stub.seen.clear()
    status, _, body = call(url, "/v1/completions", KEYS["product"], completion("qwen-7b"))
    assert status == 200 and json.loads(body)["model"] == "qwen-7b"
    # the upstream got its own key, not the team's
    assert Stub.seen[-1]["auth"] == f"Bearer {UPSTREAM_KEY}"
    status, _, body = call(url, "/v1/completions", KEYS["product"], completion("llama-70b"))
    assert status == 403 and b"product may not call" in body
    assert len(Stub.seen) == 1  # the refused call never reached a model
    status, _, _ = call(
        url,
        "/v1/chat/completions",
        KEYS["research"],
        {"model": "llama-70b", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert status == 200
    status, _, _ = call(url, "/v1/completions", KEYS["research"], completion("no-such-model"))
    assert status == 404
    status, _, body = call(url, "/v1/models", KEYS["product"])
    assert [m["id"] for m in json.loads(body)["data"]] == ["qwen-7b"]


def test_a_team_past_its_limit_gets_429_with_retry_after(gateway: dict) -> None:
    url = gateway["url"]
    # product: tpm 20, each call uses 12 tokens; one call ran above, one more fills the window
    statuses = [
        call(url, "/v1/completions", KEYS["product"], completion("qwen-7b")) for _ in range(2)
    ]
    assert [s for s, _, _ in statuses] == [200, 429]
    _, headers, body = statuses[1]
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert b"tokens per minute" in body
    # the other team's counters are its own: research still calls qwen-7b
    assert call(url, "/v1/completions", KEYS["research"], completion("qwen-7b"))[0] == 200


def test_streamed_calls_are_counted_from_the_final_usage_chunk(gateway: dict) -> None:
    url = gateway["url"]
    status, _, body = call(
        url, "/v1/completions", KEYS["research"], {**completion("qwen-7b"), "stream": True}
    )
    assert status == 200 and body.endswith(b"data: [DONE]\n\n")
    assert Stub.seen[-1]["stream_options"] == {"include_usage": True}
    last = audit_records(gateway["audit"])[-1]
    assert (last["team"], last["prompt_tokens"], last["completion_tokens"]) == ("research", 7, 5)


def test_every_call_has_one_audit_record_without_the_prompt(gateway: dict) -> None:
    records = audit_records(gateway["audit"])
    for r in records:
        assert {
            "time",
            "team",
            "model",
            "status",
            "prompt_tokens",
            "completion_tokens",
            "latency_ms",
            "request_id",
        } <= set(r)
        assert "prompt" not in r
    assert "secret prompt text" not in gateway["audit"].read_text()
    by_status = {(r["team"], r["model"], r["status"]) for r in records}
    assert ("product", "llama-70b", 403) in by_status
    assert ("product", "qwen-7b", 429) in by_status
    assert (None, None, 401) in by_status
    ok = [r for r in records if r["status"] == 200 and r["team"] == "product"]
    assert ok and all(r["prompt_tokens"] == 7 and r["completion_tokens"] == 5 for r in ok)


def test_revoking_a_team_in_the_config_file_takes_effect_without_a_restart(gateway: dict) -> None:
    conf = json.loads(gateway["config"].read_text())
    conf["teams"] = [t for t in conf["teams"] if t["name"] != "research"]
    gateway["config"].write_text(json.dumps(conf))
    os.utime(gateway["config"], (time.time() + 5, time.time() + 5))
    url = gateway["url"]
    assert call(url, "/v1/completions", KEYS["research"], completion("qwen-7b"))[0] == 401
    assert call(url, "/v1/models", KEYS["product"])[0] == 200
    gateway["config"].write_text(json.dumps(gateway["conf"]))
    os.utime(gateway["config"], (time.time() + 10, time.time() + 10))


def test_request_limit_waits_for_the_oldest_request_to_leave_the_minute() -> None:
    now = [1000.0]
    limiter = Limiter(clock=lambda: now[0])
    team = Team("t", "", frozenset({"m"}), rpm=2, tpm=None, tokens_per_day=None)
    assert limiter.admit(team, "m") is None
    now[0] += 10
    assert limiter.admit(team, "m") is None
    now[0] += 5
    assert limiter.admit(team, "m") == (45, "requests per minute")
    now[0] += 45
    assert limiter.admit(team, "m") is None


def test_daily_token_limit_resets_at_midnight_utc() -> None:
    now = [86400.0 * 10 + 86000]
    limiter = Limiter(clock=lambda: now[0])
    team = Team("t", "", frozenset({"m"}), rpm=None, tpm=None, tokens_per_day=100)
    assert limiter.admit(team, "m") is None
    limiter.charge("t", "m", 100)
    assert limiter.admit(team, "m") == (400, "tokens per day")
    now[0] += 400
    assert limiter.admit(team, "m") is None


def test_a_refused_call_leaves_the_keep_alive_connection_in_step(gateway: dict) -> None:
    import http.client

    host, port = gateway["url"].removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        body = json.dumps(completion("qwen-7b"))
        conn.request(
            "POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"}
        )
        first = conn.getresponse()
        first.read()
        assert first.status == 401
        # the same connection: the unauthenticated body was consumed, not taken for a request
        conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {KEYS['product']}"})
        second = conn.getresponse()
        assert second.status == 200 and json.loads(second.read())["object"] == "list"
    finally:
        conn.close()


def test_a_full_audit_file_is_renamed_and_a_new_one_started(tmp_path: Path) -> None:
    from workloads.gateway.server import Audit

    path = tmp_path / "audit.jsonl"
    audit = Audit()
    for i in range(20):
        audit.write(str(path), {"request_id": f"r{i}", "team": "t"}, rotate_bytes=200)
    rotated = (tmp_path / "audit.jsonl.1").read_text().splitlines()
    current = path.read_text().splitlines()
    assert path.stat().st_size <= 200 and (tmp_path / "audit.jsonl.1").stat().st_size <= 200
    # the two files hold the newest records in order (older ones were the shipper's to read)
    ids = [json.loads(x)["request_id"] for x in rotated + current]
    assert ids == [f"r{i}" for i in range(20 - len(ids), 20)]
