"""Cluster add-ons that run on Kubernetes: the NVIDIA and EFA device plugins, DCGM exporter,
the metrics stack (kube-prometheus-stack, or the CloudWatch observability EKS add-on), KEDA,
metrics-server, and the controllers the workloads need: the AWS Load Balancer Controller
(internal NLBs of serving endpoints), LeaderWorkerSet (multi-node serving replicas) and JobSet
(training jobs with `jobset: true`).

Helm charts are pinned to exact versions (a chart upgrade is a reviewed change of this
file, never a surprise of `pulumi up`) and installed with `kubernetes.helm.v3.Release`, which
the engine sees as one resource per chart. Per-node daemons go only where their hardware is:
the NVIDIA device plugin on GPU nodes of the AL2023 AMI (Bottlerocket's NVIDIA variant ships
its own), the EFA plugin on EFA nodes, DCGM on every GPU node. Controllers run on the
system nodes. Prometheus selects every ServiceMonitor and PodMonitor in every namespace, so
DCGM's and the serving endpoints' monitors are scraped without extra labels.

The workload controllers are installed only where a workload of the stack uses them
(`WorkloadControllers.for_stack`): each is a webhook and a controller on the system nodes, and
the Load Balancer Controller holds IAM power over load balancers and security groups that an
account without NLB endpoints should not hand out. metrics-server is always installed: it is
tiny, `kubectl top` and any HorizontalPodAutoscaler on CPU or memory need it, and an
unavailable `metrics.k8s.io` API blocks namespace deletion.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra import pins
from infra.config import AddonsConfig, ServingConfig, StackConfig
from infra.context import Context
from infra.contracts import (
    AMI_LABEL,
    EFA_PRESENT_LABEL,
    GPU_PRESENT_LABEL,
    KUBE_SYSTEM,
    MONITORING_NAMESPACE,
    NODE_GROUP_LABEL,
    SYSTEM_GROUP,
    gpu_toleration,
)
from infra.security.roles import PodRole, PodRoleArgs
from workloads.serving.fit import Topology

KEDA_NAMESPACE = "keda"
LWS_NAMESPACE = "lws-system"
JOBSET_NAMESPACE = "jobset-system"
CLOUDWATCH_NAMESPACE = "amazon-cloudwatch"
STORAGE_CLASS = "gp3-encrypted"
EBS_CSI_PROVISIONER = "ebs.csi.aws.com"
HELM_TIMEOUT_S = 900


# The Load Balancer Controller's service account; its pod role is bound to exactly this name.
LB_CONTROLLER_SERVICE_ACCOUNT = "aws-load-balancer-controller"
# The tag the controller puts on every load balancer, target group and security group it creates
# (value: the cluster name); its IAM policy writes only to resources that carry it.
LB_CLUSTER_TAG = "elbv2.k8s.aws/cluster"


@dataclass(frozen=True)
class Chart:
    """A Helm chart at an exact version, from its upstream repository: an HTTPS chart
    repository (`repo`), or an OCI registry, where `chart` is the full `oci://` reference and
    `repo` is None."""

    chart: str
    version: str
    repo: str | None


# Versions, sources and upgrade notes: infra/data/pins.json (a chart upgrade is a reviewed edit
# of that file, never a surprise of `pulumi up`). An upgrade changes the Release's `version`
# input; the resource and its URN stay.
CHARTS = {
    key: Chart(pin["chart"], pin["version"], pin["repo"])
    for key, pin in pins.load()["charts"].items()
}

GPU_TOLERATION = gpu_toleration()
SYSTEM_NODES = {NODE_GROUP_LABEL: SYSTEM_GROUP}


@dataclass(frozen=True)
class WorkloadControllers:
    """The controllers the stack's workloads use, derived from its serving and training entries
    (never asked for: a stack that needs one gets it, one that does not stays without)."""

    # a serving entry with `load_balancer: internal_nlb` (a Service of class service.k8s.aws/nlb)
    load_balancer: bool = False
    # a serving entry whose replica spans nodes (gpus_per_replica > the group's GPUs per node)
    leader_worker_set: bool = False
    # a training entry with `jobset: true`
    jobset: bool = False

    @classmethod
    def for_stack(cls, config: StackConfig) -> WorkloadControllers:
        def multi_node(svc: ServingConfig) -> bool:
            group = config.cluster.node_group(svc.node_group)
            if group is None:  # config validation already rejected this
                return False
            return Topology(svc.gpus_per_replica, group.instance.gpu_count).multi_node

        return cls(
            # the model gateway's TLS NLB is a Service of that class too (workloads/gateway)
            load_balancer=config.gateway is not None
            or any(s.load_balancer == "internal_nlb" for s in config.serving),
            leader_worker_set=any(multi_node(s) for s in config.serving),
            jobset=any(job.jobset for job in config.training),
        )


@dataclass(frozen=True)
class AddonsArgs:
    config: AddonsConfig
    cluster_name: pulumi.Input[str]
    ebs_key_arn: pulumi.Input[str]
    logs_key_arn: pulumi.Input[str]
    log_retention_days: int
    kubernetes_version: str
    gpu_amis: Sequence[str]  # AMI families of the GPU node groups ("al2023", "bottlerocket")
    efa: bool  # any node group with EFA interfaces
    pod_identity: Literal["pod_identity", "irsa"] = "pod_identity"
    oidc_provider_arn: pulumi.Input[str] | None = None
    oidc_issuer: pulumi.Input[str] | None = None
    # the cluster's VPC: the Load Balancer Controller creates its security groups there
    vpc_id: pulumi.Input[str] | None = None
    controllers: WorkloadControllers = WorkloadControllers()
    # the stack's tags, which the Load Balancer Controller puts on what it creates
    default_tags: Mapping[str, str] = field(default_factory=dict)
    # what must run first: the system nodes and CoreDNS (`Cluster.ready`). Given to every
    # child, since a component's own depends_on does not hold back its children.
    depends_on: Sequence[pulumi.Resource] = ()


class Addons(pulumi.ComponentResource):
    """The add-ons on the cluster. Pass the Kubernetes provider in `opts.providers`."""

    releases: dict[str, k8s.helm.v3.Release]
    storage_class_name: str
    monitoring_namespace: str
    # whether the Prometheus operator's CRDs (ServiceMonitor, PodMonitor) exist
    prometheus_operator: bool
    # the Load Balancer Controller's pod role, where the controller is installed
    load_balancer_controller_role: PodRole | None

    def __init__(
        self,
        name: str,
        args: AddonsArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("llmcloud:cluster:Addons", name, None, opts)
        self._name = name
        self._after = list(args.depends_on)
        cfg = args.config
        child = pulumi.ResourceOptions(parent=self, depends_on=self._after)
        self.releases = {}
        self.monitoring_namespace = MONITORING_NAMESPACE
        self.storage_class_name = STORAGE_CLASS
        self.prometheus_operator = cfg.metrics == "prometheus"
        self.load_balancer_controller_role = None

        self.storage_class = k8s.storage.v1.StorageClass(
            f"{name}-{STORAGE_CLASS}",
            metadata={
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            provisioner=EBS_CSI_PROVISIONER,
            parameters={"type": "gp3", "encrypted": "true", "kmsKeyId": args.ebs_key_arn},
            volume_binding_mode="WaitForFirstConsumer",
            allow_volume_expansion=True,
            reclaim_policy="Delete",
            opts=child,
        )

        gpu = bool(args.gpu_amis)
        if "al2023" in args.gpu_amis:
            self._release(
                "nvidia-device-plugin",
                KUBE_SYSTEM,
                {
                    # Bottlerocket's NVIDIA variant runs its own plugin: two would double-count
                    "nodeSelector": {GPU_PRESENT_LABEL: "true", AMI_LABEL: "al2023"},
                    "tolerations": [GPU_TOLERATION],
                    "priorityClassName": "system-node-critical",
                },
            )
        if args.efa:
            self._release(
                "efa-device-plugin",
                KUBE_SYSTEM,
                {"nodeSelector": {EFA_PRESENT_LABEL: "true"}, "tolerations": [GPU_TOLERATION]},
            )

        if cfg.metrics == "prometheus":
            monitoring = self._namespace(MONITORING_NAMESPACE, privileged=True)
            prometheus = self._release(
                "kube-prometheus-stack",
                MONITORING_NAMESPACE,
                prometheus_values(cfg),
                depends_on=[monitoring, self.storage_class],
            )
            if gpu and cfg.dcgm_exporter:
                self._release(
                    "dcgm-exporter",
                    MONITORING_NAMESPACE,
                    dcgm_values(service_monitor=True),
                    depends_on=[prometheus],  # its ServiceMonitor needs the operator's CRDs
                )
        else:
            # The CloudWatch add-on brings its own DCGM exporter for GPU nodes.
            self._cloudwatch(args, ctx)

        if cfg.keda:
            keda_ns = self._namespace(KEDA_NAMESPACE, privileged=False)
            self._release(
                "keda",
                KEDA_NAMESPACE,
                {
                    "nodeSelector": SYSTEM_NODES,
                    "prometheus": {
                        "operator": {
                            "enabled": True,
                            "podMonitor": {"enabled": self.prometheus_operator},
                        },
                        "metricServer": {
                            "enabled": True,
                            "podMonitor": {"enabled": self.prometheus_operator},
                        },
                    },
                },
                depends_on=[keda_ns]
                + ([self.releases["kube-prometheus-stack"]] if self.prometheus_operator else []),
            )

        self._release("metrics-server", KUBE_SYSTEM, metrics_server_values())
        controllers = args.controllers
        if controllers.load_balancer:
            self._load_balancer_controller(args, ctx)
        if controllers.leader_worker_set:
            lws_ns = self._namespace(LWS_NAMESPACE, privileged=False)
            self._release("lws", LWS_NAMESPACE, lws_values(), depends_on=[lws_ns])
        if controllers.jobset:
            jobset_ns = self._namespace(JOBSET_NAMESPACE, privileged=False)
            self._release("jobset", JOBSET_NAMESPACE, jobset_values(), depends_on=[jobset_ns])
        self.register_outputs(
            {
                "charts": {k: CHARTS[k].version for k in sorted(self.releases)},
                "storage_class": STORAGE_CLASS,
            }
        )

    @staticmethod
    def controllers_for(config: StackConfig) -> WorkloadControllers:
        """The workload controllers a stack needs (for `AddonsArgs.controllers`)."""
        return WorkloadControllers.for_stack(config)

    def _namespace(self, namespace: str, *, privileged: bool) -> k8s.core.v1.Namespace:
        """A namespace for add-ons. Node exporter and DCGM read host devices and namespaces,
        so `monitoring` admits privileged pods; the others stay at the baseline standard."""
        level = "privileged" if privileged else "baseline"
        return k8s.core.v1.Namespace(
            f"{self._name}-{namespace}",
            metadata={
                "name": namespace,
                "labels": {
                    "pod-security.kubernetes.io/enforce": level,
                    "app.kubernetes.io/managed-by": "pulumi",
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=self._after),
        )

    def _release(
        self,
        key: str,
        namespace: str,
        values: dict[str, Any],
        depends_on: Sequence[pulumi.Resource] = (),
    ) -> k8s.helm.v3.Release:
        chart = CHARTS[key]
        release = k8s.helm.v3.Release(
            f"{self._name}-{key}",
            name=key,
            chart=chart.chart,
            version=chart.version,
            repository_opts=(
                k8s.helm.v3.RepositoryOptsArgs(repo=chart.repo) if chart.repo is not None else None
            ),
            namespace=namespace,
            values=values,
            atomic=True,
            cleanup_on_fail=True,
            timeout=HELM_TIMEOUT_S,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self._after, *depends_on]),
        )
        self.releases[key] = release
        return release

    def _load_balancer_controller(self, args: AddonsArgs, ctx: Context) -> None:
        """The AWS Load Balancer Controller, for the internal NLBs of serving endpoints, with
        its pod role. It claims only Services that ask for it (`loadBalancerClass:
        service.k8s.aws/nlb`): the Service mutator webhook, which would hand it every
        LoadBalancer Service, is off, and so are the ALB-only integrations (WAF, Shield, the
        `alb` IngressClass) its policy does not grant."""
        if args.vpc_id is None:
            raise ValueError("Addons: the Load Balancer Controller needs AddonsArgs.vpc_id")
        role = PodRole(
            f"{self._name}-aws-load-balancer-controller",
            PodRoleArgs(
                cluster_name=args.cluster_name,
                namespace=KUBE_SYSTEM,
                service_account=LB_CONTROLLER_SERVICE_ACCOUNT,
                statements=load_balancer_controller_statements(
                    ctx, cluster_name=args.cluster_name, vpc_id=args.vpc_id
                ),
                mode=args.pod_identity,
                oidc_provider_arn=args.oidc_provider_arn,
                oidc_issuer=args.oidc_issuer,
                description="AWS Load Balancer Controller (internal NLBs of serving endpoints)",
            ),
            ctx,
            pulumi.ResourceOptions(parent=self),
        )
        self.load_balancer_controller_role = role
        self._release(
            "aws-load-balancer-controller",
            KUBE_SYSTEM,
            load_balancer_controller_values(
                cluster_name=args.cluster_name,
                region=ctx.region,
                vpc_id=args.vpc_id,
                service_account_annotations=role.service_account_annotations,
                default_tags=dict(args.default_tags),
            ),
            depends_on=[role],  # pods start with their credentials already associated
        )

    def _cloudwatch(self, args: AddonsArgs, ctx: Context) -> None:
        """Container Insights with enhanced observability, GPU metrics included. Its log
        groups are created here first, encrypted and with our retention, instead of by the
        agent (which would create them unencrypted with infinite retention)."""
        child = pulumi.ResourceOptions(parent=self)
        log_groups = [
            aws.cloudwatch.LogGroup(
                f"{self._name}-insights-{kind}",
                name=pulumi.Output.concat("/aws/containerinsights/", args.cluster_name, f"/{kind}"),
                retention_in_days=args.log_retention_days,
                kms_key_id=args.logs_key_arn,
                opts=child,
            )
            for kind in ("performance", "application", "dataplane", "host")
        ]
        role = PodRole(
            f"{self._name}-cloudwatch-agent",
            PodRoleArgs(
                cluster_name=args.cluster_name,
                namespace=CLOUDWATCH_NAMESPACE,
                service_account="cloudwatch-agent",
                managed_policies=("CloudWatchAgentServerPolicy",),
                mode=args.pod_identity,
                oidc_provider_arn=args.oidc_provider_arn,
                oidc_issuer=args.oidc_issuer,
                description="CloudWatch agent and Fluent Bit of Container Insights",
            ),
            ctx,
            child,
        )
        version = aws.eks.get_addon_version_output(
            addon_name="amazon-cloudwatch-observability",
            kubernetes_version=args.kubernetes_version,
            most_recent=False,
            opts=pulumi.InvokeOutputOptions(provider=ctx.aws_provider),
        )
        aws.eks.Addon(
            f"{self._name}-amazon-cloudwatch-observability",
            cluster_name=args.cluster_name,
            addon_name="amazon-cloudwatch-observability",
            addon_version=version.version,
            # its agents and DCGM exporter must also run on the tainted GPU nodes
            configuration_values=json.dumps({"tolerations": [GPU_TOLERATION]}),
            service_account_role_arn=role.role_arn if args.pod_identity == "irsa" else None,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self._after, role, *log_groups]),
        )


def prometheus_values(cfg: AddonsConfig) -> dict[str, Any]:
    """kube-prometheus-stack for EKS: scrape every ServiceMonitor/PodMonitor in every
    namespace (DCGM, vLLM), keep data on an encrypted gp3 volume, run controllers on the
    system nodes, skip the control-plane components EKS does not expose."""
    on_system = {"nodeSelector": SYSTEM_NODES}
    return {
        "grafana": {"enabled": False},  # dashboards: Amazon Managed Grafana or your own
        "kubeControllerManager": {"enabled": False},
        "kubeScheduler": {"enabled": False},
        "kubeEtcd": {"enabled": False},
        "kubeProxy": {"enabled": False},
        "prometheusOperator": {
            **on_system,
            "admissionWebhooks": {"patch": on_system},
        },
        "kube-state-metrics": on_system,
        "alertmanager": {"alertmanagerSpec": on_system},
        "prometheus": {
            "prometheusSpec": {
                **on_system,
                "retention": f"{cfg.prometheus_retention_days}d",
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
                "probeSelectorNilUsesHelmValues": False,
                "serviceMonitorSelector": {},
                "podMonitorSelector": {},
                "serviceMonitorNamespaceSelector": {},
                "podMonitorNamespaceSelector": {},
                "storageSpec": {
                    "volumeClaimTemplate": {
                        "spec": {
                            "storageClassName": STORAGE_CLASS,
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {
                                "requests": {"storage": f"{cfg.prometheus_storage_gb}Gi"}
                            },
                        }
                    }
                },
            }
        },
        # node exporter runs on every node, GPU nodes included
        "prometheus-node-exporter": {"tolerations": [{"operator": "Exists"}]},
    }


def dcgm_values(*, service_monitor: bool) -> dict[str, Any]:
    """DCGM exporter on every GPU node, scraped through its ServiceMonitor."""
    return {
        "nodeSelector": {GPU_PRESENT_LABEL: "true"},
        "tolerations": [GPU_TOLERATION],
        "serviceMonitor": {"enabled": service_monitor, "interval": "15s"},
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"memory": "1Gi"},
        },
    }


def metrics_server_values() -> dict[str, Any]:
    """metrics-server on the system nodes, two replicas on different nodes: while
    `metrics.k8s.io` is unavailable, HPAs on CPU stop scaling and namespaces cannot be
    deleted (the API server cannot list their metrics)."""
    return {
        "replicas": 2,
        "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
        "nodeSelector": SYSTEM_NODES,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {
                    "matchLabels": {
                        "app.kubernetes.io/name": "metrics-server",
                        "app.kubernetes.io/instance": "metrics-server",
                    }
                },
            }
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "200Mi"},
            "limits": {"memory": "400Mi"},
        },
    }


def load_balancer_controller_values(
    *,
    cluster_name: pulumi.Input[str],
    region: str,
    vpc_id: pulumi.Input[str],
    service_account_annotations: dict[str, pulumi.Output[str]],
    default_tags: dict[str, str],
) -> dict[str, Any]:
    """The controller for NLBs of Services that name its class, and nothing else. Region and
    VPC are given because pods cannot reach IMDS (hop limit 1) to discover them; the stack's
    default tags go on every load balancer and security group it creates."""
    return {
        "clusterName": cluster_name,
        "region": region,
        "vpcId": vpc_id,
        "replicaCount": 2,
        "podDisruptionBudget": {"maxUnavailable": 1},
        "serviceAccount": {
            "create": True,
            "name": LB_CONTROLLER_SERVICE_ACCOUNT,
            "annotations": dict(service_account_annotations),  # IRSA only
        },
        "nodeSelector": SYSTEM_NODES,
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"memory": "512Mi"},
        },
        # claim only Services with loadBalancerClass service.k8s.aws/nlb, not every LoadBalancer
        "enableServiceMutatorWebhook": False,
        # ALB-only integrations: not used, and not granted by the IAM policy below
        "createIngressClassResource": False,
        "enableShield": False,
        "enableWaf": False,
        "enableWafv2": False,
        "defaultTags": dict(default_tags),
    }


def lws_values() -> dict[str, Any]:
    """The LeaderWorkerSet controller and its webhooks on the system nodes (the chart's default
    request, a full core and 1 GiB, is sized for large clusters)."""
    return {
        "nodeSelector": SYSTEM_NODES,
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
    }


def jobset_values() -> dict[str, Any]:
    """The JobSet controller and its webhooks on the system nodes. Its ServiceMonitor is off:
    the metrics endpoint wants a client certificate that our Prometheus does not hold."""
    return {
        "controller": {
            "nodeSelector": SYSTEM_NODES,
            "resources": {
                "requests": {"cpu": "250m", "memory": "256Mi"},
                "limits": {"memory": "1Gi"},
            },
        },
        "prometheus": {"enable": False},
    }


def load_balancer_controller_statements(
    ctx: Context, *, cluster_name: pulumi.Input[str], vpc_id: pulumi.Input[str]
) -> list[dict[str, Any]]:
    """The AWS Load Balancer Controller's permissions, cut down from the reference policy
    (kubernetes-sigs/aws-load-balancer-controller docs/install/iam_policy.json) to what internal
    NLBs with instance targets need, with every write scoped:

    - by resource ARN to network load balancers, their listeners and target groups, and
      security groups of this account and region (the reference writes many of them on `*`);
    - load balancers, target groups and security groups further by the controller's
      `elbv2.k8s.aws/cluster` tag, matched to THIS cluster's name (the reference only asks that
      the tag exists, which lets the controller of another cluster in the account touch ours);
    - security-group rules by the cluster's VPC: the controller opens the NLB's ports on the
      nodes' security group, which it did not create and which carries no controller tag
      (the reference allows that on every security group of the account).

    Left out, because nothing here uses them: ALBs, their rules and listener certificates,
    WAF/WAFv2, Shield, Cognito, ACM and IAM server certificates (the chart's ALB
    integrations are switched off to match), load balancer capacity reservations and IPAM
    pools on load balancers, and Outposts' customer-owned IP pools (`ec2:GetCoipPoolUsage`,
    `ec2:DescribeCoipPools`: the ALB `customer-owned-ipv4-pool` annotation only).
    `tests/test_lb_controller_policy.py` checks every action of the reference policy at the
    pinned controller version (infra/data/lb_controller_iam_policy.json) is granted or listed
    here as left out.
    Registering targets needs the cluster tag too, so TargetGroupBindings to target groups
    made outside the controller are not supported."""
    nlbs = ctx.arn("elasticloadbalancing", "loadbalancer/net/*/*")
    nlb_listeners = ctx.arn("elasticloadbalancing", "listener/net/*/*/*")
    target_groups = ctx.arn("elasticloadbalancing", "targetgroup/*/*")
    security_groups = ctx.arn("ec2", "security-group/*")
    vpc = (  # a plain string stays plain: the builder is then a pure function (tests)
        ctx.arn("ec2", f"vpc/{vpc_id}")
        if isinstance(vpc_id, str)
        else pulumi.Output.concat(ctx.arn("ec2", "vpc/"), vpc_id)
    )
    created_for_us = {f"aws:RequestTag/{LB_CLUSTER_TAG}": cluster_name}
    ours = {f"aws:ResourceTag/{LB_CLUSTER_TAG}": cluster_name}
    # a retag neither sets nor removes the cluster tag (the reference checks only the first)
    keeps_cluster_tag = {
        "Null": {f"aws:RequestTag/{LB_CLUSTER_TAG}": "true"},
        "ForAllValues:StringNotEquals": {"aws:TagKeys": [LB_CLUSTER_TAG]},
    }
    return [
        {
            # first load balancer of the account: ELB's service-linked role, and no other
            "Sid": "ElbServiceLinkedRole",
            "Effect": "Allow",
            "Action": ["iam:CreateServiceLinkedRole"],
            "Resource": ctx.arn(
                "iam",
                "role/aws-service-role/elasticloadbalancing.amazonaws.com/"
                "AWSServiceRoleForElasticLoadBalancing",
                region=False,
            ),
            "Condition": {
                "StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}
            },
        },
        {
            # reads only (these APIs take no resource ARNs): the reference's list
            "Sid": "Discover",
            "Effect": "Allow",
            "Action": [
                "ec2:DescribeAccountAttributes",
                "ec2:DescribeAddresses",
                "ec2:DescribeAvailabilityZones",
                "ec2:DescribeInternetGateways",
                "ec2:DescribeVpcs",
                "ec2:DescribeVpcPeeringConnections",
                "ec2:DescribeSubnets",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeInstances",
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeTags",
                # v2.13+: the subnet resolver's fallback (reachability, IPAM) reads these
                "ec2:DescribeRouteTables",
                "ec2:DescribeIpamPools",
                "elasticloadbalancing:DescribeLoadBalancers",
                "elasticloadbalancing:DescribeLoadBalancerAttributes",
                "elasticloadbalancing:DescribeListeners",
                "elasticloadbalancing:DescribeListenerAttributes",
                "elasticloadbalancing:DescribeListenerCertificates",
                "elasticloadbalancing:DescribeSSLPolicies",
                "elasticloadbalancing:DescribeRules",
                "elasticloadbalancing:DescribeTargetGroups",
                "elasticloadbalancing:DescribeTargetGroupAttributes",
                "elasticloadbalancing:DescribeTargetHealth",
                "elasticloadbalancing:DescribeTags",
                "elasticloadbalancing:DescribeTrustStores",
                "elasticloadbalancing:DescribeCapacityReservation",
            ],
            "Resource": "*",
        },
        {
            # ELB checks the caller may use the security groups it attaches (reference: `*`);
            # the action's one resource type is the VPC (Service Authorization Reference,
            # Amazon EC2: GetSecurityGroupsForVpc, resource type vpc*)
            "Sid": "SecurityGroupsOfClusterVpc",
            "Effect": "Allow",
            "Action": ["ec2:GetSecurityGroupsForVpc"],
            "Resource": vpc,
        },
        {
            # the NLB's frontend and the shared backend security group: in our VPC only
            # (reference: CreateSecurityGroup on `*`)
            "Sid": "CreateSecurityGroupsInClusterVpc",
            "Effect": "Allow",
            "Action": ["ec2:CreateSecurityGroup"],
            "Resource": vpc,
        },
        {
            # ... and only tagged for this cluster at creation (reference: on `*`, untagged)
            "Sid": "CreateSecurityGroupsTaggedForCluster",
            "Effect": "Allow",
            "Action": ["ec2:CreateSecurityGroup"],
            "Resource": security_groups,
            "Condition": {"StringEquals": created_for_us},
        },
        {
            "Sid": "TagSecurityGroupsOnCreate",
            "Effect": "Allow",
            "Action": ["ec2:CreateTags"],
            "Resource": security_groups,
            "Condition": {
                "StringEquals": {"ec2:CreateAction": "CreateSecurityGroup", **created_for_us}
            },
        },
        {
            # retag its own groups, never moving the cluster tag
            "Sid": "RetagOwnSecurityGroups",
            "Effect": "Allow",
            "Action": ["ec2:CreateTags", "ec2:DeleteTags"],
            "Resource": security_groups,
            "Condition": {**keeps_cluster_tag, "StringEquals": ours},
        },
        {
            # rules on its own groups and on the nodes' group, which it did not create
            # (reference: on every security group, `*`)
            "Sid": "SecurityGroupRulesInClusterVpc",
            "Effect": "Allow",
            "Action": ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"],
            "Resource": security_groups,
            "Condition": {"ArnEquals": {"ec2:Vpc": vpc}},
        },
        {
            "Sid": "DeleteOwnSecurityGroups",
            "Effect": "Allow",
            "Action": ["ec2:DeleteSecurityGroup"],
            "Resource": security_groups,
            "Condition": {"StringEquals": ours},
        },
        {
            # NLBs and target groups only, tagged for this cluster (reference: `*`, any
            # cluster's tag, ALBs too)
            "Sid": "CreateNlbsTaggedForCluster",
            "Effect": "Allow",
            "Action": [
                "elasticloadbalancing:CreateLoadBalancer",
                "elasticloadbalancing:CreateTargetGroup",
            ],
            "Resource": [nlbs, target_groups],
            "Condition": {"StringEquals": created_for_us},
        },
        {
            "Sid": "TagNlbsOnCreate",
            "Effect": "Allow",
            "Action": ["elasticloadbalancing:AddTags"],
            "Resource": [nlbs, target_groups],
            "Condition": {
                "StringEquals": {
                    "elasticloadbalancing:CreateAction": [
                        "CreateLoadBalancer",
                        "CreateTargetGroup",
                    ],
                    **created_for_us,
                }
            },
        },
        {
            "Sid": "RetagOwnNlbs",
            "Effect": "Allow",
            "Action": ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"],
            "Resource": [nlbs, target_groups],
            "Condition": {**keeps_cluster_tag, "StringEquals": ours},
        },
        {
            # reference: on `*` with any cluster's tag; registering targets on any target group
            "Sid": "ManageOwnNlbs",
            "Effect": "Allow",
            "Action": [
                "elasticloadbalancing:ModifyLoadBalancerAttributes",
                "elasticloadbalancing:SetIpAddressType",
                "elasticloadbalancing:SetSecurityGroups",
                "elasticloadbalancing:SetSubnets",
                "elasticloadbalancing:DeleteLoadBalancer",
                "elasticloadbalancing:ModifyTargetGroup",
                "elasticloadbalancing:ModifyTargetGroupAttributes",
                "elasticloadbalancing:DeleteTargetGroup",
                "elasticloadbalancing:RegisterTargets",
                "elasticloadbalancing:DeregisterTargets",
            ],
            "Resource": [nlbs, target_groups],
            "Condition": {"StringEquals": ours},
        },
        {
            # listeners are added to its own NLBs only (reference: CreateListener on `*`)
            "Sid": "AddListenersToOwnNlbs",
            "Effect": "Allow",
            "Action": ["elasticloadbalancing:CreateListener"],
            "Resource": nlbs,
            "Condition": {"StringEquals": ours},
        },
        {
            # a listener's own tags are not the balancer's: NLB listeners of this account
            # and region (reference: on `*`, ALB listeners and rules too)
            "Sid": "ManageNlbListeners",
            "Effect": "Allow",
            "Action": [
                "elasticloadbalancing:DeleteListener",
                "elasticloadbalancing:ModifyListener",
                "elasticloadbalancing:ModifyListenerAttributes",
                "elasticloadbalancing:AddTags",
                "elasticloadbalancing:RemoveTags",
            ],
            "Resource": nlb_listeners,
        },
    ]
