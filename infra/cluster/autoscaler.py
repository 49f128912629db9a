"""The Cluster Autoscaler: how GPU nodes arrive. Sizes every managed node group whose size may
move, scales groups up from zero for Pending pods, and prefers reserved capacity.

Why the Cluster Autoscaler and not Karpenter: every GPU group here is an EKS managed node
group launched from our own launch template (EFA interfaces per network card, KMS volumes,
IMDSv2, placement groups, ODCR / Capacity Block targets). The Cluster Autoscaler only moves
the desired size of those Auto Scaling groups, so every node still comes from that template;
Karpenter launches instances itself from its own EC2NodeClass and would need all of it written
again outside the node groups. Reservations stay what they are: an ODCR or a Capacity Block
is a launch-template target, which the priority expander fills first.

What it is given:
- its own pod role (`cluster_autoscaler_statements`): writes only on Auto Scaling groups
  tagged `k8s.io/cluster-autoscaler/<this cluster>: owned`; reads on `*`, because the
  Describe calls it makes take no resource ARN (kubernetes/autoscaler
  cluster-autoscaler/cloudprovider/aws/README.md, "IAM Policy": "only the second block of
  actions should be updated to restrict the resources/add conditionals");
- auto-discovery of this cluster's groups by the two tags each node group puts on its ASG;
- the priority expander: reserved capacity (ODCR, Capacity Block), then on-demand, then spot
  (`expander_priorities`), `least-waste` between groups of equal priority;
- slow scale-down: a node must be unneeded for `SCALE_DOWN_UNNEEDED` (GPU nodes load models
  for minutes after a scale-up), and pods marked `safe-to-evict: "false"` (training) keep their
  node (kubernetes/autoscaler cluster-autoscaler/FAQ.md, "What types of pods can prevent CA
  from removing a node?").
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from infra.cluster.addons import CHARTS, HELM_TIMEOUT_S, SYSTEM_NODES
from infra.cluster.nodegroups import autoscaler_cluster_tag
from infra.config import GpuNodeGroupConfig
from infra.context import Context
from infra.contracts import KUBE_SYSTEM, SYSTEM_GROUP
from infra.security.roles import PodRole, PodRoleArgs

CHART_KEY = "cluster-autoscaler"
SERVICE_ACCOUNT = "cluster-autoscaler"
DATA_FILE = Path(__file__).resolve().parent.parent / "data" / "cluster_autoscaler.json"

# Priority expander weights (higher wins): what is paid for already, then on-demand, then spot.
PRIORITY_RESERVED, PRIORITY_ON_DEMAND, PRIORITY_SPOT = 30, 20, 10
PRIORITY_BY_CAPACITY = {
    "reservation": PRIORITY_RESERVED,
    "capacity_block": PRIORITY_RESERVED,
    "on_demand": PRIORITY_ON_DEMAND,
    "spot": PRIORITY_SPOT,
}
# A node unneeded this long goes (default 10m): a vLLM replica may take 20 minutes to load a
# 70B model onto a fresh node, and the next request wave should find it.
SCALE_DOWN_UNNEEDED = "30m"
SCALE_DOWN_DELAY_AFTER_ADD = "30m"
# p5 nodes with 32 EFA interfaces take longer than the default 15m to join and turn Ready.
MAX_NODE_PROVISION_TIME = "25m"


@cache
def image_tags() -> dict[str, str]:
    """Autoscaler image tag per Kubernetes minor (`1.33` -> `v1.33.6`), from the data file."""
    return dict(json.loads(DATA_FILE.read_text())["images"])


def image_tag(kubernetes_version: str) -> str:
    """The autoscaler release for the cluster's minor: its scheduler simulation is the
    scheduler of that minor."""
    minor = ".".join(kubernetes_version.split(".")[:2])
    tags = image_tags()
    if minor not in tags:
        raise ValueError(
            f"no Cluster Autoscaler release recorded for Kubernetes {minor} in {DATA_FILE.name}: "
            + ", ".join(sorted(tags))
        )
    return tags[minor]


def asg_name_pattern(node_group_name: str) -> str:
    """A regex of the ASG EKS creates for a managed node group (`eks-<name>-<uuid>`); on AWS
    the autoscaler's node group ids, which priority patterns match, are ASG names."""
    return f"^eks-{re.escape(node_group_name)}-[0-9a-f]{{8}}(-[0-9a-f]{{4}}){{3}}-[0-9a-f]{{12}}$"


def expander_priorities(groups: Sequence[GpuNodeGroupConfig]) -> dict[int, list[str]]:
    """The priority expander's table: ASG name patterns by weight. The system group (name
    prefix `system-`, so EKS appends a suffix before the uuid) is on-demand."""
    table: dict[int, list[str]] = {PRIORITY_ON_DEMAND: [f"^eks-{SYSTEM_GROUP}-.*"]}
    for group in groups:
        weight = PRIORITY_BY_CAPACITY[group.capacity.type]
        table.setdefault(weight, []).append(asg_name_pattern(group.name))
    return {w: sorted(p) for w, p in sorted(table.items(), reverse=True)}


def cluster_autoscaler_statements(ctx: Context, cluster_name: str) -> list[dict[str, Any]]:
    """The autoscaler's IAM: the full-features policy of the upstream AWS README, with its
    writes scoped by tag to this cluster's groups and DescribeNodegroup to this cluster's
    node groups. The reads on `*` are the README's first block: Describe calls of Auto
    Scaling and EC2 that IAM authorizes on `*` only."""
    return [
        {
            "Sid": "DiscoverGroupsAndInstanceTypes",
            "Effect": "Allow",
            "Action": [
                "autoscaling:DescribeAutoScalingGroups",
                "autoscaling:DescribeAutoScalingInstances",
                "autoscaling:DescribeLaunchConfigurations",
                "autoscaling:DescribeScalingActivities",
                "ec2:DescribeImages",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeLaunchTemplateVersions",
                "ec2:GetInstanceTypesFromInstanceRequirements",
            ],
            "Resource": "*",
        },
        {
            # labels and taints of a managed group that has never had a node
            "Sid": "ReadThisClustersNodeGroups",
            "Effect": "Allow",
            "Action": ["eks:DescribeNodegroup"],
            "Resource": ctx.arn("eks", f"nodegroup/{cluster_name}/*/*"),
        },
        {
            # upstream: on "*"; here only groups tagged as this cluster's
            "Sid": "ScaleThisClustersGroups",
            "Effect": "Allow",
            "Action": [
                "autoscaling:SetDesiredCapacity",
                "autoscaling:TerminateInstanceInAutoScalingGroup",
            ],
            "Resource": ctx.arn("autoscaling", "autoScalingGroup:*:autoScalingGroupName/*"),
            "Condition": {
                "StringEquals": {f"aws:ResourceTag/{autoscaler_cluster_tag(cluster_name)}": "owned"}
            },
        },
    ]


def cluster_autoscaler_values(
    *,
    cluster_name: str,
    region: str,
    kubernetes_version: str,
    groups: Sequence[GpuNodeGroupConfig],
    service_account_annotations: dict[str, pulumi.Output[str]],
) -> dict[str, Any]:
    """Chart values: AWS auto-discovery of this cluster's tagged groups, the region given
    (pods cannot reach IMDS, hop limit 1), on the system nodes, priority then least-waste."""
    return {
        "cloudProvider": "aws",
        "awsRegion": region,
        "autoDiscovery": {"clusterName": cluster_name},
        "image": {"tag": image_tag(kubernetes_version)},
        "rbac": {
            "serviceAccount": {
                "create": True,
                "name": SERVICE_ACCOUNT,
                "annotations": dict(service_account_annotations),  # IRSA only
            }
        },
        "nodeSelector": SYSTEM_NODES,
        "priorityClassName": "system-cluster-critical",
        "resources": {
            "requests": {"cpu": "100m", "memory": "600Mi"},
            "limits": {"memory": "600Mi"},
        },
        "extraArgs": {
            "expander": "priority,least-waste",
            "scale-down-unneeded-time": SCALE_DOWN_UNNEEDED,
            "scale-down-delay-after-add": SCALE_DOWN_DELAY_AFTER_ADD,
            "max-node-provision-time": MAX_NODE_PROVISION_TIME,
            # GPU pods mount /dev/shm and scratch as emptyDir: not a reason to keep a node
            "skip-nodes-with-local-storage": False,
            # per-node daemons (device plugins, DCGM, CNI) do not make a node "used"
            "ignore-daemonsets-utilization": True,
            "balance-similar-node-groups": False,
        },
        "expanderPriorities": {str(w): p for w, p in expander_priorities(groups).items()},
    }


@dataclass(frozen=True)
class ClusterAutoscalerArgs:
    cluster_name: str  # the plain name: discovery tags and IAM conditions carry it
    region: str
    kubernetes_version: str
    gpu_node_groups: Sequence[GpuNodeGroupConfig]
    pod_identity: Literal["pod_identity", "irsa"] = "pod_identity"
    oidc_provider_arn: pulumi.Input[str] | None = None
    oidc_issuer: pulumi.Input[str] | None = None
    # what must exist first: the system nodes, CoreDNS and the deployer's access entries
    depends_on: Sequence[pulumi.Resource] = ()


class ClusterAutoscaler(pulumi.ComponentResource):
    """The Cluster Autoscaler's pod role and Helm release. Pass the Kubernetes provider in
    `opts.providers`."""

    role: PodRole
    release: k8s.helm.v3.Release

    def __init__(
        self,
        name: str,
        args: ClusterAutoscalerArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("llmcloud:cluster:ClusterAutoscaler", name, None, opts)
        self.role = PodRole(
            f"{name}-pod-role",
            PodRoleArgs(
                cluster_name=args.cluster_name,
                namespace=KUBE_SYSTEM,
                service_account=SERVICE_ACCOUNT,
                statements=cluster_autoscaler_statements(ctx, args.cluster_name),
                mode=args.pod_identity,
                oidc_provider_arn=args.oidc_provider_arn,
                oidc_issuer=args.oidc_issuer,
                description=f"Cluster Autoscaler of {args.cluster_name}: this cluster's groups only",
            ),
            ctx,
            pulumi.ResourceOptions(parent=self),
        )
        chart = CHARTS[CHART_KEY]
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            name=CHART_KEY,
            chart=chart.chart,
            version=chart.version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=chart.repo),
            namespace=KUBE_SYSTEM,
            values=cluster_autoscaler_values(
                cluster_name=args.cluster_name,
                region=args.region,
                kubernetes_version=args.kubernetes_version,
                groups=args.gpu_node_groups,
                service_account_annotations=self.role.service_account_annotations,
            ),
            atomic=True,
            cleanup_on_fail=True,
            timeout=HELM_TIMEOUT_S,
            # pods start with their credentials already associated
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, self.role]),
        )
        self.register_outputs({"chart": chart.version, "release": self.release.name})
