"""The gateway program: authenticates team keys, routes OpenAI requests by `model`, enforces
per-team limits and writes one audit record per call.

Standard library only, so it runs unchanged on the pinned Python image (mounted from a
ConfigMap, no image to build) and in the tests as a plain process:

    python -m workloads.gateway.server --config /etc/gateway/config.json --port 8080

The config file (rendered by `workloads.gateway.config.render`) holds, per team, the SHA-256 of
its key (never the key), the models it may call and its limits; per model, the upstream
base URL and the environment variable that holds the upstream's own key (vLLM's
`VLLM_API_KEY`, the second factor). The file is re-read when it changes (a mounted Secret
is updated in place by the kubelet), so adding or revoking a team restarts nothing.

Limits (per team and model, in this process): requests per minute and tokens per minute over
a sliding 60 s window, tokens per UTC day. A request over a limit gets 429 with `Retry-After`
(seconds until the window admits it) before it reaches the model; the tokens of a call are
counted from the upstream's `usage` when it returns.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import http.client
import json
import math
import os
import sys
import threading
import time
import urllib.parse
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

WINDOW_S = 60.0
DAY_S = 86400
MAX_BODY_BYTES = 8 * 1024 * 1024
# the audit file is renamed to `<file>.1` past this size (the shipper follows the rename)
AUDIT_ROTATE_BYTES = 64 * 1024 * 1024
UPSTREAM_TIMEOUT_S = 600.0
# the OpenAI routes that carry a `model` in their JSON body
MODEL_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


def key_digest(key: str) -> str:
    """What the config stores for a team key: its SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Team:
    name: str
    key_sha256: str
    models: frozenset[str]
    rpm: int | None
    tpm: int | None
    tokens_per_day: int | None


@dataclass(frozen=True)
class Route:
    model: str
    base_url: str  # http://<service>.<namespace>.svc.cluster.local:8000
    api_key_env: str | None  # the variable that holds the upstream's key


@dataclass(frozen=True)
class GatewayConfig:
    teams: tuple[Team, ...]
    routes: dict[str, Route]
    audit_file: str | None
    log_prompts: bool
    audit_rotate_bytes: int = AUDIT_ROTATE_BYTES

    @staticmethod
    def parse(data: dict[str, Any]) -> GatewayConfig:
        teams = tuple(
            Team(
                name=t["name"],
                key_sha256=t["key_sha256"],
                models=frozenset(t["models"]),
                rpm=t.get("rpm"),
                tpm=t.get("tpm"),
                tokens_per_day=t.get("tokens_per_day"),
            )
            for t in data["teams"]
        )
        routes = {
            r["model"]: Route(r["model"], r["base_url"].rstrip("/"), r.get("api_key_env"))
            for r in data["routes"]
        }
        return GatewayConfig(
            teams,
            routes,
            data.get("audit_file"),
            bool(data.get("log_prompts")),
            int(data.get("audit_rotate_bytes") or AUDIT_ROTATE_BYTES),
        )

    def team_for(self, key: str) -> Team | None:
        digest = key_digest(key)
        for team in self.teams:  # constant-time per comparison
            if hmac.compare_digest(team.key_sha256, digest):
                return team
        return None


@dataclass
class Usage:
    """One team's use of one model: request times and token counts, oldest first."""

    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    day: int = -1
    day_tokens: int = 0


class Limiter:
    """Per (team, model) counters; `admit` answers None or the seconds to wait."""

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._usage: dict[tuple[str, str], Usage] = {}

    def _get(self, team: str, model: str, now: float) -> Usage:
        u = self._usage.setdefault((team, model), Usage())
        while u.requests and u.requests[0] <= now - WINDOW_S:
            u.requests.popleft()
        while u.tokens and u.tokens[0][0] <= now - WINDOW_S:
            u.tokens.popleft()
        day = int(now // DAY_S)
        if u.day != day:
            u.day, u.day_tokens = day, 0
        return u

    def admit(self, team: Team, model: str) -> tuple[int, str] | None:
        """Record the request and return None, or return (Retry-After seconds, which limit)."""
        with self._lock:
            now = self._clock()
            u = self._get(team.name, model, now)
            waits: list[tuple[float, str]] = []
            if team.rpm is not None and len(u.requests) >= team.rpm:
                waits.append((u.requests[0] + WINDOW_S - now, "requests per minute"))
            if team.tpm is not None and sum(n for _, n in u.tokens) >= team.tpm:
                # wait until enough old tokens leave the window to fall under the limit
                excess, at = sum(n for _, n in u.tokens) - team.tpm, u.tokens[0][0]
                for ts, n in u.tokens:
                    excess -= n
                    at = ts
                    if excess < 0:
                        break
                waits.append((at + WINDOW_S - now, "tokens per minute"))
            if team.tokens_per_day is not None and u.day_tokens >= team.tokens_per_day:
                waits.append(((u.day + 1) * DAY_S - now, "tokens per day"))
            if waits:
                wait, which = max(waits)
                return max(1, math.ceil(wait)), which
            u.requests.append(now)
            return None

    def charge(self, team: str, model: str, tokens: int) -> None:
        with self._lock:
            now = self._clock()
            u = self._get(team, model, now)
            u.tokens.append((now, tokens))
            u.day_tokens += tokens


class Audit:
    """Appends one JSON line per call to the audit file (and stdout when there is none),
    renaming a full file to `<file>.1` first so the pod's volume never fills up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def write(self, path: str | None, record: dict[str, Any], rotate_bytes: int) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            if path:
                try:
                    if os.path.getsize(path) + len(line) > rotate_bytes:
                        os.replace(path, f"{path}.1")
                except FileNotFoundError:
                    pass
                with open(path, "a", encoding="utf-8") as f:
                    f.write(line)
            else:
                sys.stdout.write(line)
                sys.stdout.flush()


class ConfigFile:
    """The config, re-read when the file's mtime changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._mtime = -1.0
        self._config: GatewayConfig | None = None
        self.get()

    def get(self) -> GatewayConfig:
        mtime = self._path.stat().st_mtime
        with self._lock:
            if self._config is None or mtime != self._mtime:
                self._config = GatewayConfig.parse(json.loads(self._path.read_text()))
                self._mtime = mtime
            return self._config


class Handler(BaseHTTPRequestHandler):
    server: GatewayServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # the audit is the access log
        return

    # ------------------------------------------------------------------ replies

    def _reply(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        self._reply(status, {"error": {"message": message, "type": kind, "code": status}}, headers)

    # ------------------------------------------------------------------ routes

    def do_GET(self) -> None:
        if self.path in ("/healthz", "/health"):
            self._reply(200, {"status": "ok"})
            return
        config = self.server.config.get()
        team = self._team(config)
        if team is None:
            return
        if self.path.rstrip("/") == "/v1/models":
            names = sorted(m for m in team.models if m in config.routes)
            self._reply(
                200,
                {
                    "object": "list",
                    "data": [{"id": m, "object": "model", "owned_by": "llmcloud"} for m in names],
                },
            )
            return
        self._error(404, "not_found", f"no route {self.path}")

    def do_POST(self) -> None:
        started = time.monotonic()
        config = self.server.config.get()
        record: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": self.headers.get("X-Request-Id") or uuid.uuid4().hex,
            "path": self.path,
            "team": None,
            "model": None,
            "status": None,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        }
        try:
            record["status"] = self._post(config, record)
        finally:
            record["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
            self.server.audit.write(config.audit_file, record, config.audit_rotate_bytes)

    def _team(self, config: GatewayConfig) -> Team | None:
        auth = self.headers.get("Authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        team = config.team_for(key) if key else None
        if team is None:
            self._error(
                401,
                "authentication_error",
                "missing or unknown API key (Authorization: Bearer <team key>)",
                {"WWW-Authenticate": "Bearer"},
            )
        return team

    def _post(self, config: GatewayConfig, record: dict[str, Any]) -> int:
        # The body is read before any answer: an answer that leaves it unread would have the
        # next request of a keep-alive connection start in the middle of it.
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            self._error(413, "invalid_request_error", f"body over {MAX_BODY_BYTES} bytes")
            return 413
        raw = self.rfile.read(length) if length else b""
        team = self._team(config)
        if team is None:
            return 401
        record["team"] = team.name
        if self.path not in MODEL_ROUTES:
            self._error(404, "not_found", f"no route {self.path}")
            return 404
        try:
            body = json.loads(raw or b"{}")
            model = body["model"]
        except (ValueError, KeyError, TypeError):
            self._error(400, "invalid_request_error", "a JSON body with a `model` is required")
            return 400
        record["model"] = model
        route = config.routes.get(model)
        if route is None:
            self._error(404, "model_not_found", f"model {model!r} is not served here")
            return 404
        if model not in team.models:
            self._error(403, "permission_denied", f"team {team.name} may not call {model!r}")
            return 403
        refused = self.server.limiter.admit(team, model)
        if refused is not None:
            wait, which = refused
            self._error(
                429,
                "rate_limit_exceeded",
                f"team {team.name}: {which} limit of {model!r} reached; retry in {wait} s",
                {"Retry-After": str(wait)},
            )
            record["limit"] = which
            return 429
        if config.log_prompts:
            record["prompt"] = body.get("messages", body.get("prompt", body.get("input")))
        stream = bool(body.get("stream"))
        if stream:  # ask vLLM for the usage chunk at the end of the stream
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        status, usage = self._forward(route, json.dumps(body).encode(), stream)
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        record.update(prompt_tokens=prompt, completion_tokens=completion)
        if prompt + completion:
            self.server.limiter.charge(team.name, model, prompt + completion)
        return status

    def _forward(self, route: Route, data: bytes, stream: bool) -> tuple[int, dict[str, Any]]:
        """Send the request to the model's endpoint and relay its answer; return the status
        and the `usage` the answer reported."""
        url = urllib.parse.urlsplit(route.base_url)
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        if route.api_key_env and os.environ.get(route.api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[route.api_key_env]}"
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=UPSTREAM_TIMEOUT_S)
        try:
            try:
                conn.request("POST", url.path + self.path, body=data, headers=headers)
                resp = conn.getresponse()
            except OSError as e:
                self._error(502, "upstream_error", f"model endpoint unreachable: {e}")
                return 502, {}
            ctype = resp.getheader("Content-Type", "application/json")
            if stream and resp.status == 200 and ctype.startswith("text/event-stream"):
                return resp.status, self._relay_stream(resp, ctype)
            payload = resp.read()
            self.send_response(resp.status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            try:
                usage = json.loads(payload).get("usage") or {}
            except (ValueError, AttributeError):
                usage = {}
            return resp.status, usage
        finally:
            conn.close()

    def _relay_stream(self, resp: http.client.HTTPResponse, ctype: str) -> dict[str, Any]:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        usage: dict[str, Any] = {}
        for line in resp:
            self.wfile.write(line)
            if line.startswith(b"data: {"):
                with contextlib.suppress(ValueError):
                    usage = json.loads(line[6:]).get("usage") or usage
            if line == b"\n":
                self.wfile.flush()
        self.wfile.flush()
        return usage


class GatewayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], config: ConfigFile) -> None:
        super().__init__(address, Handler)
        self.config = config
        self.limiter = Limiter()
        self.audit = Audit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    try:
        config = ConfigFile(args.config)
    except (OSError, ValueError, KeyError) as e:
        print(f"gateway: cannot read config {args.config}: {e}", file=sys.stderr)
        return 2
    server = GatewayServer((args.host, args.port), config)
    print(f"gateway listening on {args.host}:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
