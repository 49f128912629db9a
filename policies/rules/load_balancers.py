"""Load balancer listener rules: traffic reaches an application or classic load balancer
over TLS, or is redirected to it; HTTPS listeners use a TLS 1.2+ security policy.

Listener protocols per the ELBv2 API (HTTP, HTTPS for ALB; TCP, TLS, UDP, TCP_UDP for NLB;
GENEVE for GWLB): only HTTP carries application traffic in clear text on an ALB; an NLB's
TCP listener passes through whatever the targets speak (TLS terminated there is fine) and is
not flagged. An HTTP listener whose default action redirects to HTTPS is the usual way to
upgrade clients, and passes.
"""

from __future__ import annotations

from typing import Any

from policies.rules.base import (
    PolicySettings,
    Reporter,
    RuleInfo,
    RuleResourcePolicy,
    as_list,
    fsbp,
    get,
    is_unknown,
)

LISTENERS = ("aws:lb/listener:Listener", "aws:alb/listener:Listener")
CLASSIC = "aws:elb/loadBalancer:LoadBalancer"

# ELB predefined security policies that still allow TLS 1.0 or 1.1
# (https://docs.aws.amazon.com/elasticloadbalancing/latest/application/describe-ssl-policies.html).
LEGACY_TLS_POLICIES = frozenset(
    {
        "ELBSecurityPolicy-2016-08",
        "ELBSecurityPolicy-TLS-1-0-2015-04",
        "ELBSecurityPolicy-TLS-1-1-2017-01",
        "ELBSecurityPolicy-2015-05",
        "ELBSecurityPolicy-FS-2018-06",
        "ELBSecurityPolicy-FS-1-1-2019-08",
        "ELBSecurityPolicy-TLS13-1-0-2021-06",
        "ELBSecurityPolicy-TLS13-1-1-2021-06",
    }
)

LISTENER_TLS = RuleInfo(
    id="lb-listener-tls",
    title="Load balancer listeners use TLS",
    description="Every application and classic load balancer listener is HTTPS/SSL (with a "
    "TLS 1.2+ security policy) or redirects HTTP to HTTPS.",
    severity="high",
    remediation="Listen on HTTPS with a certificate (certificate_arn) and ssl_policy "
    "'ELBSecurityPolicy-TLS13-1-2-2021-06'; keep port 80 only as a redirect "
    "(default_actions=[{type: 'redirect', redirect: {protocol: 'HTTPS', port: '443', "
    "status_code: 'HTTP_301'}}]).",
    controls=(fsbp("ELB.1"),),
)


def _redirects_to_https(props: dict[str, Any]) -> bool:
    for action in as_list(props.get("defaultActions")):
        if not isinstance(action, dict) or action.get("type") != "redirect":
            continue
        protocol = get(action, "redirect", "protocol")
        if is_unknown(protocol) or str(protocol).upper() == "HTTPS":
            return True
    return False


def check_listener(args: Any, props: dict[str, Any], report: Reporter, s: PolicySettings) -> None:
    if args.resource_type == CLASSIC:
        for listener in as_list(props.get("listeners")):
            if not isinstance(listener, dict):
                continue
            protocol = str(listener.get("lbProtocol") or "").upper()
            if protocol == "HTTP":
                report(
                    f"classic load balancer {args.name!r} listens on HTTP port "
                    f"{listener.get('lbPort')}: traffic and credentials cross the network in "
                    "clear text"
                )
        return
    protocol = props.get("protocol")
    if is_unknown(protocol):
        return
    protocol = str(protocol or "").upper()
    if protocol == "HTTP" and not _redirects_to_https(props):
        report(
            f"listener {args.name!r} serves HTTP on port {props.get('port')} without "
            "redirecting to HTTPS: traffic and credentials cross the network in clear text"
        )
    elif protocol in ("HTTPS", "TLS"):
        policy = props.get("sslPolicy")
        if policy in LEGACY_TLS_POLICIES:
            report(f"listener {args.name!r} uses {policy}, which still allows TLS 1.0/1.1")


def policies(settings: PolicySettings) -> list[Any]:
    return [RuleResourcePolicy(LISTENER_TLS, settings, check_listener, [*LISTENERS, CLASSIC])]
