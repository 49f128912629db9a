"""Cluster add-ons that run on Kubernetes: the NVIDIA and EFA device plugins, DCGM exporter,
the metrics stack (kube-prometheus-stack, or the CloudWatch observability EKS add-on), KEDA.

Helm charts are pinned to exact versions (a chart upgrade is a reviewed change of this
file, never a surprise of `pulumi up`) and installed with `kubernetes.helm.v3.Release`, which
the engine sees as one resource per chart. Per-node daemons go only where their hardware is:
the NVIDIA device plugin on GPU nodes of the AL2023 AMI (Bottlerocket's NVIDIA variant ships
its own), the EFA plugin on EFA nodes, DCGM on every GPU node. Controllers run on the
system nodes. Prometheus selects every ServiceMonitor and PodMonitor in every namespace, so
DCGM's and the serving endpoints' monitors are scraped without extra labels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.config import AddonsConfig
from infra.context import Context
from infra.iam import PodRole, PodRoleArgs
from infra.nodegroups import (
    AMI_LABEL,
    EFA_PRESENT_LABEL,
    GPU_PRESENT_LABEL,
    GPU_TAINT_KEY,
    NODE_GROUP_LABEL,
    SYSTEM_GROUP,
)

MONITORING_NAMESPACE = "monitoring"
KEDA_NAMESPACE = "keda"
KUBE_SYSTEM = "kube-system"
CLOUDWATCH_NAMESPACE = "amazon-cloudwatch"
STORAGE_CLASS = "gp3-encrypted"
EBS_CSI_PROVISIONER = "ebs.csi.aws.com"
HELM_TIMEOUT_S = 900


@dataclass(frozen=True)
class Chart:
    """A Helm chart at an exact version, from its upstream repository."""

    chart: str
    version: str
    repo: str


CHARTS = {
    "nvidia-device-plugin": Chart(
        "nvidia-device-plugin", "0.18.2", "https://nvidia.github.io/k8s-device-plugin"
    ),
    "efa-device-plugin": Chart(
        "aws-efa-k8s-device-plugin", "v0.5.20", "https://aws.github.io/eks-charts"
    ),
    "dcgm-exporter": Chart(
        "dcgm-exporter", "4.1.1", "https://nvidia.github.io/dcgm-exporter/helm-charts"
    ),
    "kube-prometheus-stack": Chart(
        "kube-prometheus-stack", "79.8.2", "https://prometheus-community.github.io/helm-charts"
    ),
    "keda": Chart("keda", "2.17.2", "https://kedacore.github.io/charts"),
}

GPU_TOLERATION = {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
SYSTEM_NODES = {NODE_GROUP_LABEL: SYSTEM_GROUP}


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
        self.register_outputs(
            {
                "charts": {k: CHARTS[k].version for k in sorted(self.releases)},
                "storage_class": STORAGE_CLASS,
            }
        )

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
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=chart.repo),
            namespace=namespace,
            values=values,
            atomic=True,
            cleanup_on_fail=True,
            timeout=HELM_TIMEOUT_S,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self._after, *depends_on]),
        )
        self.releases[key] = release
        return release

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
