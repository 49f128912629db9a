"""Who may use the cluster, and the namespaces workloads run in.

- EKS access entries (API authentication mode): the admin principals of config get
  AmazonEKSClusterAdminPolicy, the read-only ones AmazonEKSViewPolicy, cluster-wide.
- One namespace per team / workload kind (`security.namespaces`), each with Pod Security
  Admission labels, a ResourceQuota (GPUs, CPU, memory, pods) and a LimitRange that gives
  every container default requests and limits (a quota on requests makes them mandatory).
- NetworkPolicies: each namespace denies all ingress and egress, then allows exactly what
  the workloads need:
    * DNS to kube-dns in kube-system (UDP/TCP 53);
    * everything between pods of the same namespace (torchrun rendezvous, NCCL's sockets on
      ephemeral ports; EFA traffic bypasses the kernel and is not subject to policies);
    * HTTPS (TCP 443) to any address: AWS APIs, STS and S3. S3 through the VPC's gateway
      endpoint is still addressed by S3's public IP ranges (a prefix list a NetworkPolicy
      cannot name), so the destination cannot be narrowed to the VPC; the port can. Where
      traffic goes from there is decided by the VPC (NAT, endpoints, security groups);
    * the EKS Pod Identity agent on the node (169.254.170.23, TCP 80), where pods get
      their pod role's credentials (not with IRSA, which calls STS on 443);
    * FSx for Lustre (TCP 988 and 1018-1023) inside the VPC CIDR, for pods that reach the
      file system themselves (CSI volume mounts are the node's traffic, not the pod's);
    * ingress from the namespaces in `allow_from_namespaces`, and from `monitoring` on the
      namespace's metrics ports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.config import NamespaceConfig
from infra.context import Context
from infra.contracts import (
    DNS_PORT,
    EFA_RESOURCE,
    GPU_RESOURCE,
    KUBE_DNS_SELECTOR,
    KUBE_SYSTEM,
    MONITORING_NAMESPACE,
    NAMESPACE_NAME_LABEL,
    POD_IDENTITY_AGENT_CIDR,
    POD_IDENTITY_AGENT_PORT,
)

ADMIN_POLICY = "AmazonEKSClusterAdminPolicy"
VIEW_POLICY = "AmazonEKSViewPolicy"
# View including Secrets (EKS user guide, "Review access policy permissions"): what a refreshing
# `pulumi preview` of the Kubernetes layer reads.
ADMIN_VIEW_POLICY = "AmazonEKSAdminViewPolicy"
LUSTRE_PORT = 988
LUSTRE_CLIENT_PORTS = (1018, 1023)

# Defaults for containers that do not say: enough for sidecars and tools; workloads set
# their own (GPU pods always do).
CONTAINER_DEFAULT_REQUEST = {"cpu": "250m", "memory": "512Mi"}
CONTAINER_DEFAULT_LIMIT = {"cpu": "2", "memory": "2Gi"}


@dataclass(frozen=True)
class ClusterAccessArgs:
    cluster_name: pulumi.Input[str]
    admin_arns: Sequence[str]
    readonly_arns: Sequence[str]
    namespaces: Sequence[NamespaceConfig]
    vpc_cidr: str
    kubernetes_version: str
    pod_identity: bool = True  # allow the Pod Identity agent (False with IRSA)
    # Deploying identities created by the stack (the CI roles): logical slug -> (ARN, "admin" or
    # "readonly"). Their ARNs are Outputs, so they are keyed by a stable name, not the ARN.
    deployers: Mapping[str, tuple[pulumi.Input[str], str]] = field(default_factory=dict)
    # namespace -> its ResourceQuota's `spec.hard` (`infra.config.capacity.quotas`: what the
    # stack sets, the rest derived from the node groups its workloads use); a namespace not
    # listed gets the values of its NamespaceConfig
    quotas: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def access_policy_arn(ctx: Context, policy: str) -> str:
    return f"arn:{ctx.partition}:eks::aws:cluster-access-policy/{policy}"


def principal_slug(arn: str) -> str:
    """A stable logical-name part for a principal: `444455556666-role-platform-admin`."""
    account, resource = arn.split(":", 5)[4:6]
    return re.sub(r"[^a-z0-9-]+", "-", f"{account}-{resource}".lower()).strip("-")


class ClusterAccess(pulumi.ComponentResource):
    """Access entries for people, and the namespaces (with quotas, limits and network
    policies) for workloads. Needs the AWS provider and the cluster's Kubernetes provider
    in `opts.providers`."""

    namespaces: dict[str, k8s.core.v1.Namespace]
    access_entries: dict[str, aws.eks.AccessEntry]
    # The admins' policy associations: with authentication mode API and no bootstrap admin,
    # whoever runs `pulumi up` reaches the Kubernetes API only once these exist.
    ready: list[pulumi.Resource]

    def __init__(
        self,
        name: str,
        args: ClusterAccessArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("llmcloud:security:ClusterAccess", name, None, opts)
        self._args = args
        self._child = pulumi.ResourceOptions(parent=self)
        self.access_entries = {}
        self.ready = [
            self._access_entry("admin", arn, ADMIN_POLICY, ctx) for arn in args.admin_arns
        ]
        for arn in args.readonly_arns:
            self._access_entry("readonly", arn, VIEW_POLICY, ctx)
        for slug, (arn, kind) in args.deployers.items():
            # CI readers refresh the stack, Secrets included: admin view, not view
            policy = ADMIN_POLICY if kind == "admin" else ADMIN_VIEW_POLICY
            association = self._access_entry(kind, arn, policy, ctx, slug=slug)
            if kind == "admin":
                self.ready.append(association)
        self.namespaces = {ns.name: self._namespace(ns) for ns in args.namespaces}
        self.register_outputs(
            {
                "namespaces": sorted(self.namespaces),
                "access_entries": sorted(self.access_entries),
            }
        )

    # ------------------------------------------------------------------ access entries

    def _access_entry(
        self, kind: str, arn: pulumi.Input[str], policy: str, ctx: Context, slug: str | None = None
    ) -> aws.eks.AccessPolicyAssociation:
        logical = f"{kind}-{slug or principal_slug(arn)}"  # type: ignore[arg-type]
        entry = aws.eks.AccessEntry(
            logical,
            cluster_name=self._args.cluster_name,
            principal_arn=arn,
            type="STANDARD",
            opts=self._child,
        )
        association = aws.eks.AccessPolicyAssociation(
            f"{logical}-{policy}",
            cluster_name=self._args.cluster_name,
            principal_arn=entry.principal_arn,
            policy_arn=access_policy_arn(ctx, policy),
            access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
            opts=self._child,
        )
        self.access_entries[arn if slug is None else slug] = entry  # type: ignore[index]
        return association

    # ------------------------------------------------------------------ namespaces

    def _namespace(self, ns: NamespaceConfig) -> k8s.core.v1.Namespace:
        version = f"v{self._args.kubernetes_version}"
        level = ns.pod_security_level
        namespace = k8s.core.v1.Namespace(
            ns.name,
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=ns.name,
                labels={
                    "llmcloud.io/purpose": ns.purpose,
                    "pod-security.kubernetes.io/enforce": level,
                    "pod-security.kubernetes.io/enforce-version": version,
                    # Baseline namespaces still report what restricted would refuse.
                    "pod-security.kubernetes.io/audit": "restricted",
                    "pod-security.kubernetes.io/audit-version": version,
                    "pod-security.kubernetes.io/warn": "restricted",
                    "pod-security.kubernetes.io/warn-version": version,
                },
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=self.ready),
        )
        opts = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        k8s.core.v1.ResourceQuota(
            f"{ns.name}-quota",
            metadata=self._meta("workload-quota", ns),
            spec=k8s.core.v1.ResourceQuotaSpecArgs(
                hard=dict(self._args.quotas.get(ns.name) or {})
                or {
                    f"requests.{GPU_RESOURCE}": str(ns.gpu_quota),
                    "requests.cpu": ns.cpu_quota,
                    "requests.memory": ns.memory_quota,
                    f"requests.{EFA_RESOURCE}": str(ns.efa_quota),
                    "pods": str(ns.pod_quota),
                }
            ),
            opts=opts,
        )
        k8s.core.v1.LimitRange(
            f"{ns.name}-limits",
            metadata=self._meta("container-defaults", ns),
            spec=k8s.core.v1.LimitRangeSpecArgs(
                limits=[
                    k8s.core.v1.LimitRangeItemArgs(
                        type="Container",
                        default_request=dict(CONTAINER_DEFAULT_REQUEST),
                        default=dict(CONTAINER_DEFAULT_LIMIT),
                    )
                ]
            ),
            opts=opts,
        )
        for policy_name, spec in self._network_policies(ns):
            k8s.networking.v1.NetworkPolicy(
                f"{ns.name}-{policy_name}",
                metadata=self._meta(policy_name, ns),
                spec=spec,
                opts=opts,
            )
        return namespace

    @staticmethod
    def _meta(name: str, ns: NamespaceConfig) -> k8s.meta.v1.ObjectMetaArgs:
        return k8s.meta.v1.ObjectMetaArgs(
            name=name,
            namespace=ns.name,
            labels={"app.kubernetes.io/managed-by": "llmcloud"},
        )

    # ------------------------------------------------------------------ network policies

    def _network_policies(
        self, ns: NamespaceConfig
    ) -> list[tuple[str, k8s.networking.v1.NetworkPolicySpecArgs]]:
        all_pods = k8s.meta.v1.LabelSelectorArgs()
        netpol = k8s.networking.v1

        def spec(
            types: list[str],
            ingress: list[netpol.NetworkPolicyIngressRuleArgs] | None = None,
            egress: list[netpol.NetworkPolicyEgressRuleArgs] | None = None,
        ) -> netpol.NetworkPolicySpecArgs:
            return netpol.NetworkPolicySpecArgs(
                pod_selector=all_pods, policy_types=types, ingress=ingress, egress=egress
            )

        def namespace_peer(name: str, pods: dict[str, str] | None = None):
            return netpol.NetworkPolicyPeerArgs(
                namespace_selector=k8s.meta.v1.LabelSelectorArgs(
                    match_labels={NAMESPACE_NAME_LABEL: name}
                ),
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=pods) if pods else None,
            )

        def tcp(port: int, end_port: int | None = None):
            return netpol.NetworkPolicyPortArgs(protocol="TCP", port=port, end_port=end_port)

        def egress_to(cidr: str, ports: list[netpol.NetworkPolicyPortArgs]):
            """Egress to an address range on the given ports only."""
            return netpol.NetworkPolicyEgressRuleArgs(
                to=[netpol.NetworkPolicyPeerArgs(ip_block=netpol.IPBlockArgs(cidr=cidr))],
                ports=ports,
            )

        policies: list[tuple[str, netpol.NetworkPolicySpecArgs]] = [
            ("default-deny", spec(["Ingress", "Egress"])),
            (
                "allow-dns",
                spec(
                    ["Egress"],
                    egress=[
                        netpol.NetworkPolicyEgressRuleArgs(
                            to=[namespace_peer(KUBE_SYSTEM, dict(KUBE_DNS_SELECTOR))],
                            ports=[
                                netpol.NetworkPolicyPortArgs(protocol="UDP", port=DNS_PORT),
                                tcp(DNS_PORT),
                            ],
                        )
                    ],
                ),
            ),
            (
                "allow-same-namespace",
                spec(
                    ["Ingress", "Egress"],
                    ingress=[
                        netpol.NetworkPolicyIngressRuleArgs(
                            from_=[netpol.NetworkPolicyPeerArgs(pod_selector=all_pods)]
                        )
                    ],
                    egress=[
                        netpol.NetworkPolicyEgressRuleArgs(
                            to=[netpol.NetworkPolicyPeerArgs(pod_selector=all_pods)]
                        )
                    ],
                ),
            ),
            (
                "allow-https-egress",
                spec(
                    ["Egress"],
                    egress=[egress_to("0.0.0.0/0", [tcp(443)])],
                ),
            ),
            (
                "allow-fsx-lustre",
                spec(
                    ["Egress"],
                    egress=[
                        egress_to(
                            self._args.vpc_cidr, [tcp(LUSTRE_PORT), tcp(*LUSTRE_CLIENT_PORTS)]
                        )
                    ],
                ),
            ),
        ]
        if self._args.pod_identity:
            policies.append(
                (
                    "allow-pod-identity-agent",
                    spec(
                        ["Egress"],
                        egress=[egress_to(POD_IDENTITY_AGENT_CIDR, [tcp(POD_IDENTITY_AGENT_PORT)])],
                    ),
                )
            )
        others = sorted(set(ns.allow_from_namespaces) - {ns.name})
        if others:
            policies.append(
                (
                    "allow-from-namespaces",
                    spec(
                        ["Ingress"],
                        ingress=[
                            netpol.NetworkPolicyIngressRuleArgs(
                                from_=[namespace_peer(other) for other in others]
                            )
                        ],
                    ),
                )
            )
        if ns.metrics_ports:
            policies.append(
                (
                    "allow-metrics-scrape",
                    spec(
                        ["Ingress"],
                        ingress=[
                            netpol.NetworkPolicyIngressRuleArgs(
                                from_=[namespace_peer(MONITORING_NAMESPACE)],
                                ports=[tcp(port) for port in sorted(set(ns.metrics_ports))],
                            )
                        ],
                    ),
                )
            )
        return policies
