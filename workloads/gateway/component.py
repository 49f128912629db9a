"""`Gateway`: the stack's model gateway as a component, in front of every vLLM endpoint.

What it declares (README "Model access: the gateway"):
- per team of `gateway.teams`: a generated key (pulumi-random, rotated by `key_version`), kept
  in its own Secrets Manager secret encrypted with the stack's secrets key; only its SHA-256
  reaches the cluster, so revoking a team deletes that team's secret and one line of the
  gateway's config and touches no other team;
- the gateway program (workloads/gateway/server.py, standard library only) in a ConfigMap,
  run by the pinned Python image, with its config (teams, limits, routes by served model) in
  another ConfigMap the pods re-read in place, and each endpoint's vLLM key (its
  `<name>-api-key`) in a Secret of the gateway's namespace: the second factor;
- the access audit: one JSON line per call, shipped by a Fluent Bit sidecar to a CloudWatch
  Logs group encrypted with the logs key, retention from the config; the sidecar's pod role
  may only write there;
- TLS: a Service of type LoadBalancer for the AWS Load Balancer Controller, an NLB whose only
  listener is TLS on 443 with the ACM certificate (given, or requested for `domain`);
- NetworkPolicies: the gateway pods admit the NLB (the VPC's or the configured CIDRs) on their
  port and reach only DNS, the endpoints' port and HTTPS (CloudWatch, STS); each endpoint's
  pods admit the gateway pods (the hop inside the cluster is plain HTTP, confined by them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra import pins
from infra.config.schema import GatewayConfig, ServingConfig
from infra.context import Context
from infra.contracts import (
    NAMESPACE_NAME_LABEL,
    PART_OF,
    PART_OF_LABEL,
    RUN_AS_UID,
)
from infra.security.roles import PodRole
from infra.storage.lake import BucketRef
from workloads import pods
from workloads.facts import ClusterFacts
from workloads.gateway import config as gwconfig
from workloads.gateway.config import GATEWAY_PORT, GatewayRoute
from workloads.gateway.server import key_digest
from workloads.serving.service import PORT, VllmService, served_model_name
from workloads.serving.service import labels as serving_labels

PROGRAM = Path(__file__).resolve().parent / "server.py"
APP = "llmcloud-gateway"
SERVICE_ACCOUNT = "gateway"
TLS_PORT = 443
# TLS 1.3 and 1.2 only (ELB security policies, docs.aws.amazon.com/elasticloadbalancing/latest/
# network/describe-ssl-policies.html)
SSL_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
# the annotations of the AWS Load Balancer Controller's Service (NLB) integration:
# kubernetes-sigs/aws-load-balancer-controller docs/guide/service/annotations.md
LB_ANNOTATION = "service.beta.kubernetes.io/aws-load-balancer-"
TEAMS_ANNOTATION = "llmcloud.io/teams"
PROGRAM_ANNOTATION = "llmcloud.io/program-sha256"
SECRET_RECOVERY_DAYS = 7
GATEWAY_CPU = "1"
GATEWAY_MEMORY = "512Mi"
SHIPPER_CPU = "250m"
SHIPPER_MEMORY = "256Mi"
AUDIT_VOLUME_LIMIT = "1Gi"


@dataclass(frozen=True)
class GatewayEndpoint:
    """A serving endpoint the gateway routes to, as the serving component declares it."""

    route: GatewayRoute
    pod_labels: dict[str, str]  # selects the endpoint's vLLM pods
    api_key: pulumi.Input[str] | None  # its vLLM key (None: the endpoint requires none)


@dataclass(frozen=True)
class GatewayArgs:
    config: GatewayConfig
    endpoints: Sequence[GatewayEndpoint]
    cluster: ClusterFacts  # pod identity, the cluster's name
    vpc_cidr: str
    secrets_key_arn: pulumi.Input[str]  # encrypts the team keys in Secrets Manager
    logs_key_arn: pulumi.Input[str]  # encrypts the audit log group
    # the stack's logs bucket: the audit's second copy (None: CloudWatch Logs only)
    logs_bucket: BucketRef | None = None
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)


class Gateway(pulumi.ComponentResource):
    """The model gateway of one stack (see the module docstring)."""

    team_secrets: dict[str, aws.secretsmanager.Secret]
    audit_log_group: aws.cloudwatch.LogGroup
    service: k8s.core.v1.Service
    url: pulumi.Output[str]
    load_balancer_hostname: pulumi.Output[str]
    certificate: aws.acm.Certificate | None = None  # requested for `domain` when no ARN given

    def __init__(
        self,
        name: str,
        args: GatewayArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("llmcloud:workloads:Gateway", name, None, opts)
        cfg = args.config
        self._name, self._args, self._ctx = name, args, ctx
        aws_child = pulumi.ResourceOptions(parent=self)
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        ns = cfg.namespace
        self._labels = {"app.kubernetes.io/name": APP, "app.kubernetes.io/instance": name}
        self._meta = {
            "namespace": ns,
            "labels": {
                **self._labels,
                "app.kubernetes.io/component": "gateway",
                PART_OF_LABEL: PART_OF,
                "llmcloud.io/environment": args.cluster.environment,
            },
        }

        # ---- team keys: generated, kept in Secrets Manager; the cluster sees digests only
        self.team_secrets = {}
        digests: dict[str, pulumi.Output[str]] = {}
        for team in cfg.teams:
            key = random.RandomPassword(
                f"{name}-key-{team.name}",
                length=48,
                special=False,
                keepers={"key_version": str(team.key_version)},
                opts=aws_child,
            )
            secret = aws.secretsmanager.Secret(
                f"{name}-key-{team.name}",
                name=f"{ctx.prefix}/gateway/teams/{team.name}",
                description=f"{ctx.prefix} model gateway: API key of team {team.name} "
                f"(rotate: bump gateway.teams[].key_version)",
                kms_key_id=args.secrets_key_arn,
                recovery_window_in_days=SECRET_RECOVERY_DAYS,
                tags={"llmcloud:gateway-team": team.name},
                opts=aws_child,
            )
            aws.secretsmanager.SecretVersion(
                f"{name}-key-{team.name}-version",
                secret_id=secret.id,
                secret_string=key.result,
                opts=aws_child,
            )
            self.team_secrets[team.name] = secret
            # a SHA-256 of 48 random characters reveals nothing of the key
            digests[team.name] = pulumi.Output.unsecret(key.result.apply(key_digest))

        # ---- the access audit log group and the pod role that may write to it
        self.audit_log_group = aws.cloudwatch.LogGroup(
            f"{name}-audit",
            name=f"/llmcloud/{ctx.prefix}/gateway/access",
            kms_key_id=args.logs_key_arn,
            retention_in_days=cfg.audit_retention_days,
            opts=aws_child,
        )
        # the README's usage query, one click away in the console
        aws.cloudwatch.QueryDefinition(
            f"{name}-usage-query",
            name=f"llmcloud/{ctx.prefix}/gateway/usage-per-team-per-day",
            log_group_names=[self.audit_log_group.name],
            query_string=gwconfig.USAGE_QUERY,
            opts=aws_child,
        )
        self.role = PodRole(
            f"{name}-pod-role",
            args.cluster.pod_role_args(
                namespace=ns,
                service_account=SERVICE_ACCOUNT,
                statements=[
                    *self._bucket_statements(),
                    {
                        "Sid": "WriteAuditRecords",
                        "Effect": "Allow",
                        "Action": [
                            "logs:CreateLogStream",
                            "logs:DescribeLogStreams",
                            "logs:PutLogEvents",
                        ],
                        "Resource": [
                            self.audit_log_group.arn,
                            self.audit_log_group.arn.apply(lambda a: f"{a}:log-stream:*"),
                        ],
                    },
                ],
                description=f"model gateway: write its access audit to {ctx.prefix}'s log group",
            ),
            ctx,
            aws_child,
        )
        self.service_account = self.role.kubernetes_service_account(
            f"{name}-sa", {**self._meta, "name": SERVICE_ACCOUNT}, child
        )

        # ---- config, program, upstream keys
        routes = [e.route for e in args.endpoints]
        rendered = pulumi.Output.all(**digests).apply(
            lambda d: gwconfig.render(
                cfg.teams, d, routes, replicas=cfg.replicas, log_prompts=cfg.log_prompts
            )
        )
        self.config_map = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata={
                **self._meta,
                "name": "gateway-config",
                "annotations": {TEAMS_ANNOTATION: json.dumps(gwconfig.team_policy(cfg.teams))},
            },
            data={"config.json": rendered},
            opts=child,
        )
        shipper_config = self._shipper_config()
        self._program_digest = shipper_config.apply(
            lambda conf: hashlib.sha256((PROGRAM.read_text() + conf).encode()).hexdigest()
        )
        self.program = k8s.core.v1.ConfigMap(
            f"{name}-program",
            metadata={**self._meta, "name": "gateway-program"},
            data={
                "server.py": PROGRAM.read_text(),
                "fluent-bit.conf": shipper_config,
            },
            opts=child,
        )
        upstream_keys = {
            e.route.api_key_env: pulumi.Output.secret(e.api_key)
            for e in args.endpoints
            if e.api_key is not None
        }
        self.upstream_keys = k8s.core.v1.Secret(
            f"{name}-upstream-keys",
            metadata={**self._meta, "name": "gateway-upstream-keys"},
            type="Opaque",
            string_data=upstream_keys,
            opts=child,
        )

        # ---- pods, Service (TLS NLB), disruption budget, NetworkPolicies
        self.deployment = self._deployment(sorted(upstream_keys), child)
        self.certificate_arn = self._certificate(aws_child)
        self.service = self._service(child)
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata={**self._meta, "name": "gateway"},
            spec={"maxUnavailable": 1, "selector": {"matchLabels": self._labels}},
            opts=child,
        )
        self._network_policies(child)

        # the NLB's own name: the domain's DNS record (a CNAME or alias) points there
        self.load_balancer_hostname = self.service.status.apply(_nlb_hostname)
        host = cfg.domain or self.load_balancer_hostname
        self.url = pulumi.Output.concat("https://", host, "/v1")
        self.register_outputs(
            {
                "url": self.url,
                "audit_log_group": self.audit_log_group.name,
                "team_key_secrets": {t: s.arn for t, s in self.team_secrets.items()},
            }
        )

    # ------------------------------------------------------------------ audit

    def _bucket_statements(self) -> list[dict[str, Any]]:
        bucket = self._args.logs_bucket
        if bucket is None:
            return []
        objects = pulumi.Output.concat(bucket.arn, f"/{gwconfig.AUDIT_S3_PREFIX}/*")
        return [
            {
                "Sid": "CopyAuditToLogsBucket",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": [objects],
            }
        ]

    def _shipper_config(self) -> pulumi.Output[str]:
        ctx, bucket = self._ctx, self._args.logs_bucket
        log_group = f"/llmcloud/{ctx.prefix}/gateway/access"
        name = pulumi.Output.from_input(bucket.name if bucket is not None else "")
        return name.apply(
            lambda n: gwconfig.fluent_bit_config(
                log_group=log_group, region=ctx.region, logs_bucket=n or None
            )
        )

    # ------------------------------------------------------------------ pods

    def _deployment(
        self, key_envs: list[str], opts: pulumi.ResourceOptions
    ) -> k8s.apps.v1.Deployment:
        cfg, meta = self._args.config, self._meta
        # read-only root file system: no bytecode cache to write
        env = [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ] + [
            {
                "name": var,
                "valueFrom": {"secretKeyRef": {"name": "gateway-upstream-keys", "key": var}},
            }
            for var in key_envs
        ]
        probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10}
        audit_mount = {"name": "audit", "mountPath": gwconfig.AUDIT_DIR}
        shipper_probe = {
            "httpGet": {"path": gwconfig.SHIPPER_HEALTH_PATH, "port": "shipper-health"},
            "periodSeconds": 30,
        }
        gateway = {
            "name": "gateway",
            "image": pins.image("gateway_python"),
            "command": ["python", f"{gwconfig.PROGRAM_DIR}/server.py"],
            "args": ["--config", gwconfig.CONFIG_FILE, "--port", str(GATEWAY_PORT)],
            "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
            "env": env,
            "readinessProbe": probe,
            "livenessProbe": {**probe, "failureThreshold": 3},
            "resources": {
                "requests": {"cpu": GATEWAY_CPU, "memory": GATEWAY_MEMORY},
                "limits": {"cpu": GATEWAY_CPU, "memory": GATEWAY_MEMORY},
            },
            "securityContext": pods.restricted_container(),
            "volumeMounts": [
                {"name": "program", "mountPath": gwconfig.PROGRAM_DIR, "readOnly": True},
                {"name": "config", "mountPath": gwconfig.CONFIG_DIR, "readOnly": True},
                audit_mount,
            ],
        }
        # Fluent Bit's core cloudwatch_logs output takes EKS Pod Identity credentials
        # (fluent/fluent-bit#10115, in the 4.x that aws-for-fluent-bit 3.x ships) and IRSA.
        shipper = {
            "name": "audit-shipper",
            "image": pins.image("fluent_bit"),
            "command": ["/fluent-bit/bin/fluent-bit"],
            "args": ["-c", f"{gwconfig.FLUENT_BIT_CONFIG_DIR}/fluent-bit.conf"],
            "resources": {
                "requests": {"cpu": SHIPPER_CPU, "memory": SHIPPER_MEMORY},
                "limits": {"cpu": SHIPPER_CPU, "memory": SHIPPER_MEMORY},
            },
            "ports": [
                {
                    "name": "shipper-health",
                    "containerPort": gwconfig.SHIPPER_HEALTH_PORT,
                    "protocol": "TCP",
                }
            ],
            "readinessProbe": shipper_probe,
            "livenessProbe": {**shipper_probe, "failureThreshold": 3},
            "securityContext": pods.restricted_container(),
            "volumeMounts": [
                {
                    "name": "program",
                    "mountPath": gwconfig.FLUENT_BIT_CONFIG_DIR,
                    "readOnly": True,
                },
                audit_mount,
            ],
        }
        spec = {
            "serviceAccountName": SERVICE_ACCOUNT,
            "automountServiceAccountToken": False,
            "securityContext": pods.pod_security_context(uid=RUN_AS_UID),
            # the shipper drains what the gateway wrote before the pod goes
            "terminationGracePeriodSeconds": 60,
            "containers": [gateway, shipper],
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": self._labels},
                }
            ],
            "volumes": [
                {"name": "program", "configMap": {"name": "gateway-program"}},
                {"name": "config", "configMap": {"name": "gateway-config"}},
                {"name": "audit", "emptyDir": {"sizeLimit": AUDIT_VOLUME_LIMIT}},
            ],
        }
        deps = [self.service_account, self.config_map, self.program, self.upstream_keys]
        return k8s.apps.v1.Deployment(
            f"{self._name}-deployment",
            metadata={**meta, "name": "gateway"},
            spec={
                "replicas": cfg.replicas,
                "selector": {"matchLabels": self._labels},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
                },
                "template": {
                    "metadata": {
                        "labels": meta["labels"],
                        # neither Python nor Fluent Bit re-reads its program: a new one rolls
                        "annotations": {PROGRAM_ANNOTATION: self._program_digest},
                    },
                    "spec": spec,
                },
            },
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=deps)),
        )

    # ------------------------------------------------------------------ TLS address

    def _certificate(self, opts: pulumi.ResourceOptions) -> pulumi.Input[str]:
        cfg = self._args.config
        if cfg.certificate_arn is not None:
            return cfg.certificate_arn
        # validated by a DNS record the zone's owner creates (the stack output lists it)
        self.certificate = aws.acm.Certificate(
            f"{self._name}-certificate",
            domain_name=cfg.domain,
            validation_method="DNS",
            opts=opts,
        )
        return self.certificate.arn

    def _service(self, opts: pulumi.ResourceOptions) -> k8s.core.v1.Service:
        cfg = self._args.config
        sources = [str(c) for c in cfg.allowed_cidrs] or [self._args.vpc_cidr]
        annotations: dict[str, pulumi.Input[str]] = {
            f"{LB_ANNOTATION}scheme": cfg.scheme,
            f"{LB_ANNOTATION}nlb-target-type": "ip",
            f"{LB_ANNOTATION}ssl-cert": self.certificate_arn,
            f"{LB_ANNOTATION}ssl-ports": str(TLS_PORT),
            f"{LB_ANNOTATION}ssl-negotiation-policy": SSL_POLICY,
            f"{LB_ANNOTATION}backend-protocol": "tcp",
            f"{LB_ANNOTATION}healthcheck-protocol": "http",
            f"{LB_ANNOTATION}healthcheck-path": "/healthz",
            f"{LB_ANNOTATION}attributes": "load_balancing.cross_zone.enabled=true",
        }
        return k8s.core.v1.Service(
            f"{self._name}-service",
            metadata={**self._meta, "name": "gateway", "annotations": annotations},
            spec={
                "type": "LoadBalancer",
                "loadBalancerClass": "service.k8s.aws/nlb",
                "selector": self._labels,
                # one port: the NLB's one listener, TLS (ssl-ports); no plain HTTP listener
                "ports": [
                    {"name": "https", "port": TLS_PORT, "targetPort": "http", "protocol": "TCP"}
                ],
                "loadBalancerSourceRanges": sources,
            },
            opts=opts,
        )

    # ------------------------------------------------------------------ network

    def _network_policies(self, opts: pulumi.ResourceOptions) -> None:
        cfg, args = self._args.config, self._args
        gateway_peer = {
            "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: cfg.namespace}},
            "podSelector": {"matchLabels": self._labels},
        }
        endpoint_ports: dict[int, None] = {e.route.port: None for e in args.endpoints}
        egress: list[dict[str, Any]] = pods.baseline_egress()
        if args.endpoints:
            egress.append(
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {NAMESPACE_NAME_LABEL: e.route.namespace}
                            },
                            "podSelector": {"matchLabels": e.pod_labels},
                        }
                        for e in args.endpoints
                    ],
                    "ports": [{"protocol": "TCP", "port": p} for p in endpoint_ports],
                }
            )
        k8s.networking.v1.NetworkPolicy(
            f"{self._name}-netpol",
            metadata={**self._meta, "name": "gateway"},
            spec={
                "podSelector": {"matchLabels": self._labels},
                "policyTypes": ["Ingress", "Egress"],
                # A TLS listener terminates at the NLB, which opens its own connections (and
                # health checks) to the pod IPs from its addresses in the VPC: the clients'
                # ranges are enforced by the NLB (loadBalancerSourceRanges), this admits it.
                "ingress": [
                    {
                        "from": [{"ipBlock": {"cidr": args.vpc_cidr}}],
                        "ports": [{"protocol": "TCP", "port": GATEWAY_PORT}],
                    }
                ],
                "egress": egress,
            },
            opts=opts,
        )
        for e in args.endpoints:
            k8s.networking.v1.NetworkPolicy(
                f"{self._name}-admit-{e.route.service}",
                metadata={
                    **self._meta,
                    "name": f"{e.route.service}-from-gateway",
                    "namespace": e.route.namespace,
                },
                spec={
                    "podSelector": {"matchLabels": e.pod_labels},
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        {
                            "from": [gateway_peer],
                            "ports": [{"protocol": "TCP", "port": e.route.port}],
                        }
                    ],
                },
                opts=opts,
            )


def endpoint_of(svc: ServingConfig, service: VllmService) -> GatewayEndpoint:
    """What the gateway needs of one serving endpoint: its served name, Service DNS and port,
    pod labels and vLLM key (the one in its `<name>-api-key` Secret)."""
    return GatewayEndpoint(
        route=GatewayRoute(
            model=served_model_name(svc), service=svc.name, namespace=svc.namespace, port=PORT
        ),
        pod_labels=serving_labels(svc),
        api_key=service.api_key,
    )


def _nlb_hostname(status: Any) -> str:
    """The NLB's DNS name, once the controller reported it (empty before)."""
    lb = getattr(status, "load_balancer", None)
    ingress = getattr(lb, "ingress", None) or []
    return (getattr(ingress[0], "hostname", None) or "") if ingress else ""
