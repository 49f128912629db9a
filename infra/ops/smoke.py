"""`llmcloud smoke`: check a deployed OpenAI-compatible endpoint the way a user meets it.

In order, stopping at the first failure (each check needs the one before):
1. `/v1/models` without a key is refused (401/403), and with a wrong key too;
2. `/v1/models` with the key answers and lists the model;
3. one short completion succeeds;
4. a streamed completion (server-sent events) arrives token by token: time to first token
   and decode tokens/s are measured.
Works with any OpenAI-compatible server (vLLM, or anything speaking the same API).

Against the model gateway (workloads/gateway) with a team key, `GatewayChecks` adds:
5. a model the team may not call is refused (403), when one is named;
6. calls past the team's limit get 429 with a `Retry-After` in seconds (at most
   `limit_probe` one-token calls are sent: use a smoke team with a small rpm);
7. the audit record of step 3 (found by its `X-Request-Id`) reached the CloudWatch Logs group.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx

PROMPT = "Write one sentence about the sea."
COMPLETION_MAX_TOKENS = 16
STREAM_MAX_TOKENS = 64
REFUSED = (401, 403)
AUDIT_POLL_S = 2.0


class SmokeUsageError(Exception):
    """Bad arguments (exit 2)."""


@dataclass(frozen=True)
class GatewayChecks:
    """The gateway's own checks (steps 5-7); each runs only when given what it needs."""

    denied_model: str | None = None
    limit_probe: int = 0  # most calls sent to reach the team's limit (0: skip)
    audit_log_group: str | None = None
    audit_wait_s: float = 60.0  # the shipper flushes every few seconds
    region: str | None = None
    endpoint_url: str | None = None


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class SmokeResult:
    url: str
    checks: list[Check] = field(default_factory=list)
    model: str | None = None
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    completion_tokens: int | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failed(self) -> Check | None:
        return next((c for c in self.checks if not c.ok), None)


@dataclass(frozen=True)
class StreamStats:
    ttft_s: float
    tokens: int
    tokens_per_s: float
    text: str


def base_url(url: str) -> str:
    """`http://host:8000`, `.../v1` or `.../v1/` all mean the same server root."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SmokeUsageError(f"--url {url!r} is not an http(s) URL, like http://host:8000")
    root = url.rstrip("/")
    return root.removesuffix("/v1")


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _describe(response: httpx.Response) -> str:
    body = response.text.strip().replace("\n", " ")
    return f"HTTP {response.status_code}" + (f": {body[:200]}" if body else "")


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON payloads of a server-sent event stream, up to `data: [DONE]`."""
    for line in lines:
        if not line.startswith("data:"):
            continue  # comments (":"), event names, blank separators
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            return
        if payload:
            yield json.loads(payload)


def stream_completion(
    client: httpx.Client, root: str, key: str, model: str, max_tokens: int = STREAM_MAX_TOKENS
) -> StreamStats:
    """Stream one completion; raise ValueError on a malformed or empty stream."""
    body = {
        "model": model,
        "prompt": PROMPT,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = last = None
    chunks, usage_tokens, text = 0, None, []
    with client.stream("POST", f"{root}/v1/completions", json=body, headers=_auth(key)) as r:
        if r.status_code != 200:
            r.read()
            raise ValueError(_describe(r))
        for event in sse_events(r.iter_lines()):
            if "error" in event:
                raise ValueError(f"the stream reported an error: {event['error']}")
            for choice in event.get("choices") or []:
                piece = choice.get("text") or ""
                if piece:
                    now = time.perf_counter()
                    first = now if first is None else first
                    last = now
                    chunks += 1
                    text.append(piece)
            usage = event.get("usage") or {}
            if usage.get("completion_tokens") is not None:
                usage_tokens = int(usage["completion_tokens"])
    if first is None or last is None:
        raise ValueError("the stream carried no tokens")
    tokens = usage_tokens if usage_tokens else chunks
    decode_s = last - first
    if tokens > 1 and decode_s > 0:
        rate = (tokens - 1) / decode_s
    else:
        rate = tokens / max(last - started, 1e-9)
    return StreamStats(ttft_s=first - started, tokens=tokens, tokens_per_s=rate, text="".join(text))


def run_smoke(
    url: str,
    api_key: str | None,
    *,
    model: str | None = None,
    timeout_s: float = 60.0,
    transport: httpx.BaseTransport | None = None,
    gateway: GatewayChecks | None = None,
    logs_client: Any = None,
) -> SmokeResult:
    if not api_key:
        raise SmokeUsageError("give the endpoint's key: --api-key KEY or env LLMCLOUD_API_KEY")
    if timeout_s <= 0:
        raise SmokeUsageError(f"--timeout {timeout_s:g}: must be a positive number of seconds")
    root = base_url(url)
    result = SmokeResult(url=root)
    if gateway is not None and gateway.limit_probe < 0:
        raise SmokeUsageError(f"--limit-probe {gateway.limit_probe}: must be 0 or more calls")
    if gateway is not None and gateway.audit_log_group and logs_client is None:
        from infra.ops.awsclient import AwsUsageError, client

        try:
            logs_client = client("logs", region=gateway.region, endpoint_url=gateway.endpoint_url)
        except AwsUsageError as e:
            raise SmokeUsageError(str(e)) from None

    def check(name: str, ok: bool, detail: str) -> bool:
        result.checks.append(Check(name, ok, detail))
        return ok

    with httpx.Client(timeout=timeout_s, transport=transport) as client:
        try:
            request_id = f"smoke-{secrets.token_hex(8)}"
            _run(client, root, api_key, model, result, check, request_id)
            if gateway is not None and result.ok:
                _gateway(client, root, api_key, result, check, gateway, logs_client, request_id)
        except httpx.HTTPError as e:
            step = f"step {len(result.checks) + 1}"
            check("reachable", False, f"{type(e).__name__} at {step}: {e} ({root})")
    return result


def _run(client, root, key, model, result, check, request_id: str) -> None:
    models_url = f"{root}/v1/models"
    refusals = (
        ("refuses a request without the key", {}, "without a key", "the endpoint is open"),
        (
            "refuses a wrong key",
            _auth("wrong-" + secrets.token_hex(8)),
            "with a wrong key",
            "any key is accepted",
        ),
    )
    for name, headers, sent, otherwise in refusals:
        r = client.get(models_url, headers=headers)
        refused = r.status_code in REFUSED
        detail = f"GET /v1/models {sent}: {_describe(r)}"
        if not check(name, refused, detail + ("" if refused else f" (expected 401: {otherwise})")):
            return
    r = client.get(models_url, headers=_auth(key))
    if r.status_code != 200:
        check("answers with the key", False, f"GET /v1/models with the key: {_describe(r)}")
        return
    try:
        ids = [m["id"] for m in r.json()["data"]]
    except (ValueError, KeyError, TypeError):
        check("answers with the key", False, f"GET /v1/models: not a model list: {r.text[:200]}")
        return
    if model is not None and model not in ids:
        check("answers with the key", False, f"model {model!r} is not served; served: {ids}")
        return
    if not ids:
        check("answers with the key", False, "GET /v1/models lists no model")
        return
    result.model = model or ids[0]
    check("answers with the key", True, f"serves {', '.join(ids)}")

    body = {
        "model": result.model,
        "prompt": PROMPT,
        "max_tokens": COMPLETION_MAX_TOKENS,
        "temperature": 0,
    }
    r = client.post(
        f"{root}/v1/completions", json=body, headers={**_auth(key), "X-Request-Id": request_id}
    )
    text = None
    if r.status_code == 200:
        try:
            text = r.json()["choices"][0]["text"]
        except (ValueError, KeyError, IndexError, TypeError):
            text = None
    if not check(
        "completes a prompt",
        isinstance(text, str) and bool(text.strip()),
        f"{text.strip()[:60]!r}" if text else f"POST /v1/completions: {_describe(r)}",
    ):
        return

    try:
        stats = stream_completion(client, root, key, result.model)
    except (ValueError, json.JSONDecodeError) as e:
        check("streams a completion", False, f"POST /v1/completions (stream): {e}")
        return
    result.ttft_s, result.tokens_per_s = stats.ttft_s, stats.tokens_per_s
    result.completion_tokens = stats.tokens
    check(
        "streams a completion",
        True,
        f"{stats.tokens} tokens, first after {stats.ttft_s * 1000:.0f} ms, "
        f"{stats.tokens_per_s:.1f} tokens/s",
    )


def _gateway(client, root, key, result, check, gw: GatewayChecks, logs, request_id) -> None:
    """Steps 5-7: what only the gateway enforces."""
    one_token = {"prompt": "hi", "max_tokens": 1, "temperature": 0}
    url = f"{root}/v1/completions"
    if gw.denied_model:
        r = client.post(url, json={**one_token, "model": gw.denied_model}, headers=_auth(key))
        if not check(
            "refuses a model the team may not call",
            r.status_code == 403,
            f"POST /v1/completions model {gw.denied_model!r}: {_describe(r)}",
        ):
            return
    if gw.limit_probe:
        limited = None
        for sent in range(1, gw.limit_probe + 1):
            r = client.post(url, json={**one_token, "model": result.model}, headers=_auth(key))
            if r.status_code == 429:
                limited = (sent, r)
                break
            if r.status_code != 200:
                check("limits the team", False, f"call {sent} before any 429: {_describe(r)}")
                return
        if limited is None:
            check("limits the team", False, f"{gw.limit_probe} calls and no 429: no limit hit")
            return
        sent, r = limited
        retry = r.headers.get("Retry-After", "")
        if not check(
            "limits the team",
            retry.isdigit() and int(retry) >= 1,
            f"429 after {sent} calls, Retry-After {retry or 'missing'}",
        ):
            return
    if gw.audit_log_group:
        deadline = time.monotonic() + gw.audit_wait_s
        while True:
            events = logs.filter_log_events(
                logGroupName=gw.audit_log_group, filterPattern=f'"{request_id}"'
            ).get("events", [])
            records = [_json(e.get("message", "")) for e in events]
            found = [x for x in records if x.get("request_id") == request_id]
            if found or time.monotonic() >= deadline:
                break
            time.sleep(AUDIT_POLL_S)
        record = found[0] if found else {}
        check(
            "records the call in the audit log",
            bool(found),
            f"{gw.audit_log_group}: team {record.get('team')}, status {record.get('status')}, "
            f"{record.get('prompt_tokens')}+{record.get('completion_tokens')} tokens"
            if found
            else f"no record with request_id {request_id} in {gw.audit_log_group} "
            f"after {gw.audit_wait_s:g} s",
        )


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def render(result: SmokeResult, console: Any) -> None:
    """A table of the checks and the streaming numbers, for people."""
    from rich.table import Table
    from rich.text import Text  # details quote the endpoint's replies: not rich markup

    table = Table(title=f"smoke {result.url}", show_lines=False)
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for c in result.checks:
        table.add_row(c.name, "[green]ok[/]" if c.ok else "[red]FAILED[/]", Text(c.detail))
    console.print(table)
    if result.ttft_s is not None and result.tokens_per_s is not None:
        console.print(
            f"model {result.model}: time to first token {result.ttft_s * 1000:.0f} ms, "
            f"{result.tokens_per_s:.1f} tokens/s ({result.completion_tokens} tokens streamed)",
            highlight=False,
        )
