"""What the gateway pods read: the gateway program's config (teams, routes) and the audit
shipper's (Fluent Bit) config, rendered from the stack config; and the checks that tie the
`gateway` section to the serving endpoints and namespaces.

Limits are per gateway process (its counters live in memory): each of `replicas` pods gets
`ceil(limit / replicas)`, so the whole gateway admits at most about the configured limit when
the NLB spreads the calls evenly. A team that needs an exact cap runs one replica.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infra.config.schema import ConfigError, GatewayTeamConfig, StackConfig

GATEWAY_PORT = 8080
AUDIT_DIR = "/var/log/gateway"
AUDIT_FILE = f"{AUDIT_DIR}/audit.jsonl"
CONFIG_DIR = "/etc/gateway"
CONFIG_FILE = f"{CONFIG_DIR}/config.json"
PROGRAM_DIR = "/opt/gateway"
FLUENT_BIT_CONFIG_DIR = "/fluent-bit/etc/gateway"
# audit records reach CloudWatch within this many seconds
AUDIT_FLUSH_S = 5
# the audit's copy in the logs bucket: one object per pod and upload, by UTC day
AUDIT_S3_PREFIX = "gateway-audit"
AUDIT_S3_UPLOAD_TIMEOUT = "10m"
AUDIT_S3_FILE_SIZE = "50M"
# CloudWatch Logs Insights: usage per team, model and UTC day (saved with the log group;
# the README shows the same text)
USAGE_QUERY = """fields team, model, status, prompt_tokens, completion_tokens
| filter ispresent(team)
| stats count(*) as calls, sum(prompt_tokens) as prompt, sum(completion_tokens) as completion
    by team, model, bin(1d)"""
SHIPPER_HEALTH_PORT = 2020  # Fluent Bit's built-in HTTP server
SHIPPER_HEALTH_PATH = "/api/v1/health"


@dataclass(frozen=True)
class GatewayRoute:
    """One served model and where it lives (from a serving entry)."""

    model: str  # the name clients send as `model`
    service: str  # the serving entry's name (its Service, its `<name>-api-key` Secret)
    namespace: str
    port: int

    @property
    def base_url(self) -> str:
        # plain HTTP inside the cluster: the NetworkPolicies confine this hop to gateway pods
        return f"http://{self.service}.{self.namespace}.svc.cluster.local:{self.port}"

    @property
    def api_key_env(self) -> str:
        return upstream_key_env(self.service)


def upstream_key_env(service: str) -> str:
    """The gateway container's variable that holds one endpoint's vLLM key."""
    return "UPSTREAM_KEY_" + re.sub(r"[^A-Z0-9]", "_", service.upper())


def share(limit: int | None, replicas: int) -> int | None:
    """One gateway pod's share of a limit."""
    return None if limit is None else max(1, math.ceil(limit / replicas))


def team_policy(teams: Sequence[GatewayTeamConfig]) -> list[dict[str, Any]]:
    """The teams without their keys: what the plan (and the gateway-team-limits rule) reads,
    as the `llmcloud.io/teams` annotation of the gateway's config."""
    return [
        {
            "name": t.name,
            "models": list(t.models),
            "rpm": t.rpm,
            "tpm": t.tpm,
            "tokens_per_day": t.tokens_per_day,
        }
        for t in teams
    ]


def render(
    teams: Sequence[GatewayTeamConfig],
    key_sha256: Mapping[str, str],
    routes: Sequence[GatewayRoute],
    *,
    replicas: int,
    log_prompts: bool,
) -> str:
    """The gateway program's config file (`workloads.gateway.server.GatewayConfig.parse`):
    each team's key digest, models and its per-pod share of every limit."""
    data = {
        "teams": [
            {
                "name": t.name,
                "key_sha256": key_sha256[t.name],
                "models": list(t.models),
                "rpm": share(t.rpm, replicas),
                "tpm": share(t.tpm, replicas),
                "tokens_per_day": share(t.tokens_per_day, replicas),
            }
            for t in teams
        ],
        "routes": [
            {"model": r.model, "base_url": r.base_url, "api_key_env": r.api_key_env} for r in routes
        ],
        "audit_file": AUDIT_FILE,
        "log_prompts": log_prompts,
    }
    return json.dumps(data, indent=1, sort_keys=True)


def fluent_bit_config(*, log_group: str, region: str, logs_bucket: str | None = None) -> str:
    """Fluent Bit (classic format): tail the audit file, ship each line as it is (a JSON
    event Logs Insights parses) to the audit log group, one stream per pod, and (with
    `logs_bucket`) the same lines to `s3://<logs bucket>/gateway-audit/<day>/`. Offsets and
    the S3 buffer are kept in the pod's volume, so a restarted shipper resumes where it
    stopped; it retries without a limit rather than drop records. Options: docs.fluentbit.io,
    inputs/tail, outputs/cloudwatch and outputs/s3."""
    s3 = []
    if logs_bucket is not None:
        s3 = [
            "[OUTPUT]",
            "    Name              s3",
            "    Match             audit",
            f"    region            {region}",
            f"    bucket            {logs_bucket}",
            f"    s3_key_format     /{AUDIT_S3_PREFIX}/%Y/%m/%d/${{HOSTNAME}}-%H%M%S-$UUID.jsonl",
            "    log_key           log",
            f"    total_file_size   {AUDIT_S3_FILE_SIZE}",
            f"    upload_timeout    {AUDIT_S3_UPLOAD_TIMEOUT}",
            "    use_put_object    On",
            f"    store_dir         {AUDIT_DIR}/s3-buffer",
            "    Retry_Limit       no_limits",
            "",
        ]
    return "\n".join(
        [
            "[SERVICE]",
            f"    Flush             {AUDIT_FLUSH_S}",
            "    Daemon            off",
            "    Log_Level         info",
            f"    storage.path      {AUDIT_DIR}/flb-storage/",
            # /api/v1/health answers 500 once outputs keep failing: the kubelet restarts it
            "    HTTP_Server       On",
            "    HTTP_Listen       0.0.0.0",
            f"    HTTP_Port         {SHIPPER_HEALTH_PORT}",
            "    Health_Check      On",
            "    HC_Errors_Count   5",
            "    HC_Retry_Failure_Count 5",
            "    HC_Period         60",
            "",
            "[INPUT]",
            "    Name              tail",
            "    Tag               audit",
            f"    Path              {AUDIT_FILE}",
            f"    DB                {AUDIT_DIR}/flb-tail.db",
            "    Read_from_Head    true",
            "    Refresh_Interval  5",
            "    Rotate_Wait       30",
            "    storage.type      filesystem",
            "",
            "[OUTPUT]",
            "    Name              cloudwatch_logs",
            "    Match             audit",
            f"    region            {region}",
            f"    log_group_name    {log_group}",
            "    log_stream_name   ${HOSTNAME}",
            "    log_key           log",
            "    auto_create_group false",
            "    Retry_Limit       no_limits",
            "",
            *s3,
        ]
    )


def served_models(config: StackConfig) -> dict[str, Any]:
    """Served model name -> its serving entry."""
    return {svc.served_model_name or svc.model: svc for svc in config.serving}


def check(config: StackConfig) -> None:
    """The gateway section against the rest of the stack: its namespace is a
    security.namespaces entry of purpose `gateway`, and every team's models are served."""
    gw = config.gateway
    if gw is None:
        return
    namespaces = {ns.name: ns for ns in config.security.namespaces}
    ns = namespaces.get(gw.namespace)
    if ns is None or ns.purpose != "gateway":
        have = ", ".join(f"{n} ({v.purpose})" for n, v in namespaces.items()) or "none"
        raise ConfigError(
            f"llmcloud:gateway.namespace = {gw.namespace!r}: must be a security.namespaces entry with "
            f"purpose: gateway (have: {have})"
        )
    models = served_models(config)
    for i, team in enumerate(gw.teams):
        for j, model in enumerate(team.models):
            if model not in models:
                raise ConfigError(
                    f"llmcloud:gateway.teams[{i}].models[{j}] = {model!r}: not a served model "
                    f"(served: {', '.join(sorted(models)) or 'none'})"
                )
