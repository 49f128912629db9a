"""`llmcloud smoke` against the gateway program run for real (127.0.0.1, an OpenAI-compatible
stub behind it): routing with a team key, 401 without one, 403 for another team's model, 429
with Retry-After past the limit, and the call's audit record found in CloudWatch Logs (moto;
a thread of the test ships the audit file there, as Fluent Bit does in the pod)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.ops.smoke import GatewayChecks, run_smoke
from tests.test_gateway_server import UPSTREAM_KEY, running_gateway, running_stub
from workloads.gateway.server import key_digest

TEAM_KEY = "key-smoke-0123456789abcdef"
OTHER_KEY = "key-other-fedcba9876543210"
LOG_GROUP = "/llmcloud/llm-test/gateway/access"
REGION = "us-east-2"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("gateway-smoke")
    with running_stub() as base:
        audit = tmp / "audit.jsonl"
        config = {
            "teams": [
                {
                    "name": "smoke",
                    "key_sha256": key_digest(TEAM_KEY),
                    "models": ["qwen-7b"],
                    "rpm": 6,
                    "tpm": 100000,
                    "tokens_per_day": 1000000,
                },
                {
                    "name": "other",
                    "key_sha256": key_digest(OTHER_KEY),
                    "models": ["qwen-7b", "llama-70b"],
                },
            ],
            "routes": [
                {"model": "qwen-7b", "base_url": base, "api_key_env": "UPSTREAM_KEY_QWEN"},
                {"model": "llama-70b", "base_url": base, "api_key_env": "UPSTREAM_KEY_QWEN"},
            ],
            "audit_file": str(audit),
        }
        with running_gateway(
            tmp / "config.json", config, {"UPSTREAM_KEY_QWEN": UPSTREAM_KEY}
        ) as url:
            yield {"url": url, "audit": audit}


def ship(audit: Path, logs: Any, stop: threading.Event) -> None:
    """What the pod's Fluent Bit does: each new line of the audit file, as it is, one event."""
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName="gateway-0")
    offset = 0
    while not stop.is_set():
        if audit.exists():
            with audit.open() as f:
                f.seek(offset)
                lines = f.readlines()
                offset = f.tell()
            if lines:
                now_ms = int(time.time() * 1000)
                logs.put_log_events(
                    logGroupName=LOG_GROUP,
                    logStreamName="gateway-0",
                    logEvents=[
                        {"timestamp": now_ms, "message": line.rstrip("\n")} for line in lines
                    ],
                )
        stop.wait(0.2)


def test_smoke_checks_routing_keys_limits_and_the_audit_record_through_the_gateway(gateway):
    with mock_aws():
        logs = boto3.client("logs", region_name=REGION)
        logs.create_log_group(logGroupName=LOG_GROUP)
        stop = threading.Event()
        shipper = threading.Thread(target=ship, args=(gateway["audit"], logs, stop), daemon=True)
        shipper.start()
        try:
            result = run_smoke(
                gateway["url"],
                TEAM_KEY,
                timeout_s=10,
                gateway=GatewayChecks(
                    denied_model="llama-70b",
                    limit_probe=20,
                    audit_log_group=LOG_GROUP,
                    audit_wait_s=10,
                ),
                logs_client=logs,
            )
        finally:
            stop.set()
            shipper.join(5)
    checks = {c.name: c for c in result.checks}
    assert result.ok, [(c.name, c.detail) for c in result.checks if not c.ok]
    assert checks["answers with the key"].detail == "serves qwen-7b"  # the team's models only
    assert "HTTP 403" not in checks["refuses a request without the key"].detail
    # rpm 6: the completion and the stream used 2, the probe's 5th call is refused
    assert checks["limits the team"].detail.startswith("429 after 5 calls, Retry-After ")
    assert (
        "team smoke, status 200, 7+5 tokens" in checks["records the call in the audit log"].detail
    )


def test_smoke_fails_when_the_team_may_call_the_model_it_should_not(gateway):
    # team `other` may call both models: the check that expects a refusal fails
    result = run_smoke(
        gateway["url"], OTHER_KEY, timeout_s=10, gateway=GatewayChecks(denied_model="llama-70b")
    )
    assert not result.ok
    assert (
        result.failed is not None and result.failed.name == "refuses a model the team may not call"
    )


def test_cli_runs_the_gateway_checks_and_refuses_a_negative_probe(gateway):
    from typer.testing import CliRunner

    from infra.cli import app

    runner = CliRunner()
    ok = runner.invoke(
        app, ["smoke", "--url", gateway["url"], "--api-key", OTHER_KEY, "--timeout", "10"]
    )
    assert ok.exit_code == 0, ok.output
    denied = runner.invoke(
        app,
        ["smoke", "--url", gateway["url"], "--api-key", OTHER_KEY, "--denied-model", "qwen-7b"],
    )
    assert denied.exit_code == 1 and "refuses a model the team may not call" in denied.output
    bad = runner.invoke(
        app, ["smoke", "--url", gateway["url"], "--api-key", OTHER_KEY, "--limit-probe", "-1"]
    )
    assert bad.exit_code == 2 and "--limit-probe -1" in bad.output
