"""ECS task definition rules: no privileged containers, no host network mode.

`containerDefinitions` is the JSON document of the RegisterTaskDefinition API (a list of
container definitions with `privileged`); `networkMode` is `awsvpc`, `bridge`, `host` or
`none` (Fargate supports only `awsvpc`).
"""

from __future__ import annotations

import json
from typing import Any

from policies.rules.base import (
    PolicySettings,
    Reporter,
    RuleInfo,
    RuleResourcePolicy,
    fsbp,
    is_unknown,
    truthy,
)

TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"

NO_PRIVILEGED = RuleInfo(
    id="ecs-no-privileged",
    title="ECS containers are not privileged",
    description="No container of an ECS task definition runs privileged (root on the host, "
    "every device).",
    severity="high",
    remediation="Remove privileged (or set it to false); grant the one Linux capability the "
    "container needs with linuxParameters.capabilities.add instead.",
    controls=(fsbp("ECS.4"),),
)
NO_HOST_NETWORK = RuleInfo(
    id="ecs-no-host-network",
    title="ECS tasks do not share the host's network",
    description="No ECS task definition uses network mode host (the task sees every host "
    "interface and can bind the host's ports and reach its metadata endpoint).",
    severity="high",
    remediation="Use network_mode='awsvpc' (each task gets its own ENI and security groups).",
    controls=(fsbp("ECS.1"),),
)


def _containers(props: dict[str, Any]) -> list[dict[str, Any]]:
    value = props.get("containerDefinitions")
    if is_unknown(value) or value is None:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return []
    return [c for c in value if isinstance(c, dict)] if isinstance(value, list) else []


def check_privileged(args: Any, props: dict[str, Any], report: Reporter, s: PolicySettings) -> None:
    for container in _containers(props):
        value = container.get("privileged")
        if value is not None and not is_unknown(value) and truthy(value):
            report(
                f"task definition {args.name!r}: container {container.get('name')!r} runs "
                "privileged"
            )


def check_host_network(
    args: Any, props: dict[str, Any], report: Reporter, s: PolicySettings
) -> None:
    if props.get("networkMode") == "host":
        report(f"task definition {args.name!r} uses network mode host")


def policies(settings: PolicySettings) -> list[Any]:
    return [
        RuleResourcePolicy(NO_PRIVILEGED, settings, check_privileged, [TASK_DEFINITION]),
        RuleResourcePolicy(NO_HOST_NETWORK, settings, check_host_network, [TASK_DEFINITION]),
    ]
