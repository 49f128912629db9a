"""Model gateway rules: endpoints reachable only through the gateway, its listener TLS only,
every team key limited.

The gateway is the stack's one audited, per-team door to the models (workloads/gateway). An
endpoint that a NetworkPolicy also opens to other namespaces or address ranges, or that has
its own load balancer, can be called around it: without a team's identity, limits or an
audit record. Ingress from the endpoint's own namespace (its peers, e.g. the pods of a
multi-node replica) and from the monitoring namespace (the metrics scraper) is allowed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from infra.contracts import MONITORING_NAMESPACE, NAMESPACE_NAME_LABEL
from policies.rules.base import (
    PolicySettings,
    Reporter,
    RuleInfo,
    RuleStackPolicy,
    StackView,
    as_list,
    get,
    is_unknown,
)

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
LWS = "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet"
SERVICE = "kubernetes:core/v1:Service"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
APP_LABEL = "app.kubernetes.io/name"
VLLM_APP = "vllm"
GATEWAY_APP = "llmcloud-gateway"  # workloads/gateway/component.py APP
TEAMS_ANNOTATION = "llmcloud.io/teams"
LB_ANNOTATION = "service.beta.kubernetes.io/aws-load-balancer-"
TEAM_LIMITS = ("rpm", "tpm", "tokens_per_day")

THROUGH_GATEWAY = RuleInfo(
    id="serving-through-gateway",
    title="Serving endpoints are reachable only through the model gateway",
    description="A stack with vLLM endpoints has the model gateway, and no endpoint is "
    "reachable around it: no NetworkPolicy admits other namespaces or address ranges to its "
    "pods, and its Service has no load balancer of its own.",
    severity="high",
    remediation="Set llmcloud:gateway (README 'Model access: the gateway'); clear "
    "serving[].allowed_namespaces / allowed_cidrs, set load_balancer: none, and let the "
    "serving namespace's allow_from_namespaces name only the gateway's namespace.",
    kind="stack",
)
LISTENER_TLS = RuleInfo(
    id="gateway-listener-tls",
    title="The gateway listens on TLS only",
    description="The gateway's load balancer has a certificate and every listener port is a "
    "TLS port: no plain HTTP listener.",
    severity="high",
    remediation="Set gateway.certificate_arn or gateway.domain; the Service exposes only "
    "the TLS port (aws-load-balancer-ssl-ports).",
    kind="stack",
)
TEAM_LIMITED = RuleInfo(
    id="gateway-team-limits",
    title="Every gateway team key has limits",
    description="Each team of the gateway has requests per minute, tokens per minute and "
    "tokens per day set. Mandatory in prod, advisory elsewhere.",
    severity="medium",
    remediation="Set rpm, tpm and tokens_per_day on each llmcloud:gateway.teams entry.",
    kind="stack",
)


def _labels(view: StackView, r: Any, *path: str) -> dict[str, Any]:
    value = get(view.props[r.urn], *path)
    return value if isinstance(value, dict) else {}


def _selects(selector: Any, labels: dict[str, Any]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects `labels`."""
    if not isinstance(selector, dict):
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in as_list(selector.get("matchExpressions")):
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _namespaces_named(selector: Any) -> set[str] | None:
    """The namespaces a namespaceSelector names by `kubernetes.io/metadata.name`; None when it
    selects by anything else (which may be any namespace)."""
    if not isinstance(selector, dict):
        return None
    names: set[str] | None = None
    value = (selector.get("matchLabels") or {}).get(NAMESPACE_NAME_LABEL)
    if value is not None:
        names = {value}
    for expr in as_list(selector.get("matchExpressions")):
        if expr.get("key") == NAMESPACE_NAME_LABEL and expr.get("operator") == "In":
            values = set(expr.get("values") or [])
            names = values if names is None else names & values
    return names


def _vllm_pods(view: StackView) -> Iterator[tuple[Any, str, dict[str, Any]]]:
    """(resource, namespace, pod labels) of every vLLM workload."""
    for r in view.of_type(DEPLOYMENT, LWS):
        props = view.props[r.urn]
        template = get(props, "spec", "template") or get(
            props, "spec", "leaderWorkerTemplate", "workerTemplate"
        )
        labels = get(template, "metadata", "labels") or {}
        if isinstance(labels, dict) and labels.get(APP_LABEL) == VLLM_APP:
            yield r, get(props, "metadata", "namespace") or "default", labels


def _gateways(view: StackView) -> list[tuple[Any, str]]:
    out = []
    for r in view.of_type(DEPLOYMENT):
        labels = _labels(view, r, "spec", "template", "metadata", "labels")
        if labels.get(APP_LABEL) == GATEWAY_APP:
            out.append((r, get(view.props[r.urn], "metadata", "namespace") or "default"))
    return out


def _openings(rule: dict[str, Any], gateway_ns: set[str], own_ns: str) -> list[str]:
    """What an ingress rule admits besides the gateway, the monitoring namespace and the
    endpoint's own namespace."""
    peers = as_list(rule.get("from"))
    if not peers:
        return ["every source (an ingress rule without `from`)"]
    found = []
    for peer in peers:
        if not isinstance(peer, dict):
            continue
        if peer.get("ipBlock"):
            found.append(f"address range {get(peer, 'ipBlock', 'cidr')}")
            continue
        if "namespaceSelector" not in peer:
            continue  # pods of the policy's own namespace
        names = _namespaces_named(peer["namespaceSelector"])
        if names is None:
            found.append("namespaces selected by labels other than their name")
            continue
        other = sorted(names - gateway_ns - {MONITORING_NAMESPACE, own_ns})
        if other:
            found.append(f"namespace(s) {', '.join(other)}")
    return found


def check_through_gateway(args: Any, report: Reporter, settings: PolicySettings) -> None:
    view = StackView.of(args)
    endpoints = list(_vllm_pods(view))
    if not endpoints:
        return
    gateways = _gateways(view)
    if not gateways:
        for r, ns, _ in endpoints:
            report(
                f"serving endpoint {r.name!r} ({ns}) has no model gateway in front of it: "
                "callers are not identified per team, limited or audited",
                r.urn,
            )
        return
    gateway_ns = {ns for _, ns in gateways}
    policies = list(view.of_type(NETWORK_POLICY))
    services = list(view.of_type(SERVICE))
    for r, ns, labels in endpoints:
        for p in policies:
            props = view.props[p.urn]
            if (get(props, "metadata", "namespace") or "default") != ns:
                continue
            if not _selects(get(props, "spec", "podSelector") or {}, labels):
                continue
            for rule in as_list(get(props, "spec", "ingress")):
                for opening in _openings(rule, gateway_ns, ns) if isinstance(rule, dict) else []:
                    report(
                        f"serving endpoint {r.name!r} ({ns}) is reachable around the gateway: "
                        f"NetworkPolicy {get(props, 'metadata', 'name')!r} admits {opening}",
                        p.urn,
                    )
        for s in services:
            props = view.props[s.urn]
            if (get(props, "metadata", "namespace") or "default") != ns:
                continue
            selector = get(props, "spec", "selector") or {}
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                continue
            kind = get(props, "spec", "type") or "ClusterIP"
            if kind in ("LoadBalancer", "NodePort"):
                report(
                    f"serving endpoint {r.name!r} ({ns}) has its own {kind} Service "
                    f"{get(props, 'metadata', 'name')!r}: reachable around the gateway",
                    s.urn,
                )


def _ports(value: Any) -> set[str] | None:
    if not isinstance(value, str) or is_unknown(value):
        return None
    return {p.strip() for p in value.split(",") if p.strip()}


def check_listener_tls(args: Any, report: Reporter, settings: PolicySettings) -> None:
    view = StackView.of(args)
    for s in view.of_type(SERVICE):
        props = view.props[s.urn]
        if _labels(view, s, "metadata", "labels").get(APP_LABEL) != GATEWAY_APP:
            continue
        name = get(props, "metadata", "name")
        if get(props, "spec", "type") != "LoadBalancer":
            report(f"gateway Service {name!r} is not a load balancer with a TLS listener", s.urn)
            continue
        annotations = _labels(view, s, "metadata", "annotations")
        if not annotations.get(f"{LB_ANNOTATION}ssl-cert"):
            report(f"gateway Service {name!r} has no certificate (ssl-cert annotation)", s.urn)
        tls = _ports(annotations.get(f"{LB_ANNOTATION}ssl-ports"))
        if tls is None:
            report(f"gateway Service {name!r} names no TLS port (ssl-ports annotation)", s.urn)
            continue
        for port in as_list(get(props, "spec", "ports")):
            number, port_name = str(port.get("port")), str(port.get("name"))
            if "*" not in tls and number not in tls and port_name not in tls:
                report(
                    f"gateway Service {name!r} listens on port {number} without TLS "
                    f"(ssl-ports: {', '.join(sorted(tls))})",
                    s.urn,
                )


def check_team_limits(args: Any, report: Reporter, settings: PolicySettings) -> None:
    view = StackView.of(args)
    for c in view.of_type(CONFIG_MAP):
        raw = _labels(view, c, "metadata", "annotations").get(TEAMS_ANNOTATION)
        if _labels(view, c, "metadata", "labels").get(APP_LABEL) != GATEWAY_APP or raw is None:
            continue
        try:
            teams = json.loads(raw)
        except (TypeError, ValueError):
            report(f"gateway config {c.name!r}: unreadable {TEAMS_ANNOTATION} annotation", c.urn)
            continue
        for team in teams:
            missing = [k for k in TEAM_LIMITS if not team.get(k)]
            if missing:
                report(
                    f"gateway team {team.get('name')!r} has no {', '.join(missing)} limit: "
                    "one key can take every GPU of the stack",
                    c.urn,
                )


def policies(settings: PolicySettings) -> list[Any]:
    if TEAM_LIMITED.id not in settings.rule_levels and not settings.rule_defaults:
        level = "mandatory" if settings.environment == "prod" else "advisory"
        settings_limits = settings.with_(
            rule_levels={**settings.rule_levels, TEAM_LIMITED.id: level}
        )
    else:
        settings_limits = settings
    return [
        RuleStackPolicy(THROUGH_GATEWAY, settings, check_through_gateway),
        RuleStackPolicy(LISTENER_TLS, settings, check_listener_tls),
        RuleStackPolicy(TEAM_LIMITED, settings_limits, check_team_limits),
    ]
