"""The EKS cluster: control plane, its logs and OIDC provider, the EKS managed add-ons with
their pod roles, the system node group, and the Kubernetes provider everything on the
cluster is declared with.

Hardened by default: secrets envelope-encrypted with our cluster key, control-plane logs
in a KMS-encrypted log group created before the cluster (EKS would otherwise create it
unencrypted and keep it forever), the API endpoint private unless the stack config opens it
to a CIDR allowlist, authentication through access entries only (no aws-auth ConfigMap, no
implicit admin for whoever created the cluster: `ClusterAccess` grants access), EKS's self-managed
bootstrap add-ons replaced by managed add-ons whose AWS permissions sit on pod roles, not
on the node role.

Order matters on a real deploy, and is expressed with `depends_on`: the VPC CNI, kube-proxy
and the Pod Identity agent must exist before nodes can become Ready; CoreDNS and the CSI
controllers are Deployments and only turn ACTIVE once the system nodes run them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.cluster.nodegroups import NodeGroupCluster, SystemNodeGroup, SystemNodeGroupArgs
from infra.config import ClusterConfig
from infra.context import Context
from infra.contracts import KUBE_SYSTEM, STS_AUDIENCE
from infra.security.roles import PodRole, PodRoleArgs
from infra.security.statements import ebs_csi_kms_statements

OIDC_AUDIENCE = STS_AUDIENCE

# VPC CNI: prefix delegation hands each ENI slot a /28 so GPU nodes are not limited by
# per-ENI secondary IPs; one warm prefix keeps pod start-up fast without hoarding addresses.
# `enableNetworkPolicy` starts the CNI's network policy agent (an eBPF node agent in the
# aws-node DaemonSet plus a controller EKS runs in the control plane): without it, or another
# engine, NetworkPolicies are stored and never enforced. EKS user guide, "Limit Pod traffic
# with Kubernetes network policies": add-on configuration `{"enableNetworkPolicy": "true"}`,
# VPC CNI v1.14.0 or later, clusters 1.25 or later.
VPC_CNI_CONFIGURATION: dict[str, Any] = {
    "env": {"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "1"},
    "enableNetworkPolicy": "true",
}


def control_plane_log_group_name(cluster_name: str) -> str:
    """The name EKS writes control-plane logs to; we create it first so it is encrypted."""
    return f"/aws/eks/{cluster_name}/cluster"


@dataclass(frozen=True)
class ManagedAddon:
    """An EKS managed add-on and, where it calls AWS, the service account its pod role trusts."""

    name: str
    before_nodes: bool  # DaemonSets nodes need to become Ready
    service_account: str | None = None
    managed_policies: tuple[str, ...] = ()
    configuration: dict[str, Any] | None = None


MANAGED_ADDONS: tuple[ManagedAddon, ...] = (
    ManagedAddon("eks-pod-identity-agent", before_nodes=True),
    ManagedAddon(
        "vpc-cni",
        before_nodes=True,
        service_account="aws-node",
        managed_policies=("AmazonEKS_CNI_Policy",),
        configuration=VPC_CNI_CONFIGURATION,
    ),
    ManagedAddon("kube-proxy", before_nodes=True),
    ManagedAddon("coredns", before_nodes=False),
    ManagedAddon(
        "aws-ebs-csi-driver",
        before_nodes=False,
        service_account="ebs-csi-controller-sa",
        managed_policies=("service-role/AmazonEBSCSIDriverPolicy",),
    ),
    ManagedAddon("aws-fsx-csi-driver", before_nodes=False, service_account="fsx-csi-controller-sa"),
)


def fsx_csi_statements() -> list[dict[str, Any]]:
    """The FSx CSI controller only resolves the file systems of statically provisioned
    volumes (the platform creates FSx with Pulumi, never through the driver), so it gets
    DescribeFileSystems and nothing that creates, changes or deletes a file system.
    Describe* has no resource-level permissions in IAM, hence `*`."""
    return [
        {
            "Sid": "FsxCsiDescribesFileSystems",
            "Effect": "Allow",
            "Action": ["fsx:DescribeFileSystems"],
            "Resource": "*",
        }
    ]


@dataclass(frozen=True)
class ClusterArgs:
    name: str
    config: ClusterConfig
    environment: str
    pod_identity: Literal["pod_identity", "irsa"]
    vpc_id: pulumi.Input[str]
    subnet_by_zone: Mapping[str, pulumi.Input[str]]
    cluster_role_arn: pulumi.Input[str]
    node_role_arn: pulumi.Input[str]
    cluster_key_arn: pulumi.Input[str]
    ebs_key_arn: pulumi.Input[str]
    logs_key_arn: pulumi.Input[str]
    instance_tags: Mapping[str, str] = field(default_factory=dict)
    # resources the control plane needs first (the cluster role's policies)
    depends_on: Sequence[pulumi.Resource] = ()


class Cluster(pulumi.ComponentResource):
    """An EKS cluster ready for GPU node groups and workloads."""

    name: pulumi.Output[str]
    arn: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    certificate_authority_data: pulumi.Output[str]
    version: str
    oidc_issuer: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    node_security_group_id: pulumi.Output[str]
    k8s_provider: k8s.Provider
    system_nodes: SystemNodeGroup
    managed_addons: dict[str, aws.eks.Addon]
    addon_roles: dict[str, PodRole]
    node_group_cluster: NodeGroupCluster
    ready: list[pulumi.Resource]

    def __init__(
        self,
        name: str,
        args: ClusterArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("llmcloud:cluster:Cluster", name, None, opts)
        cfg = args.config
        child = pulumi.ResourceOptions(parent=self)
        self.version = cfg.version
        self._ctx = ctx

        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-control-plane-logs",
            name=control_plane_log_group_name(args.name),
            retention_in_days=cfg.log_retention_days,
            kms_key_id=args.logs_key_arn,
            opts=child,
        )
        public = cfg.endpoint_public_access
        deletion_protection = (
            cfg.deletion_protection
            if cfg.deletion_protection is not None
            else args.environment == "prod"
        )
        self.eks = aws.eks.Cluster(
            f"{name}-eks",
            name=args.name,
            version=cfg.version,
            role_arn=args.cluster_role_arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=list(args.subnet_by_zone.values()),
                endpoint_private_access=True,
                endpoint_public_access=public,
                public_access_cidrs=[str(c) for c in cfg.public_access_cidrs] if public else None,
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=args.cluster_key_arn),
                resources=["secrets"],
            ),
            enabled_cluster_log_types=list(cfg.log_types),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode="API",
                bootstrap_cluster_creator_admin_permissions=False,
            ),
            # the managed add-ons below replace EKS's unmanaged defaults
            bootstrap_self_managed_addons=False,
            kubernetes_network_config=aws.eks.ClusterKubernetesNetworkConfigArgs(ip_family="ipv4"),
            # standard support unless the stack opts in: extended support bills 6x per cluster-hour
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(
                support_type="EXTENDED" if cfg.extended_support else "STANDARD"
            ),
            deletion_protection=deletion_protection,
            tags={"Name": args.name},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.log_group, *args.depends_on]),
        )
        self.name = self.eks.name
        self.arn = self.eks.arn
        self.endpoint = self.eks.endpoint
        self.certificate_authority_data = self.eks.certificate_authority.apply(lambda ca: ca.data)
        self.oidc_issuer = self.eks.identities.apply(lambda ids: ids[0].oidcs[0].issuer)
        self.node_security_group_id = self.eks.vpc_config.apply(
            lambda vpc: vpc.cluster_security_group_id
        )
        self.oidc_provider = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc-provider",
            url=self.oidc_issuer,
            client_id_lists=[OIDC_AUDIENCE],
            tags={"Name": f"{args.name}-irsa"},
            opts=child,
        )
        self.oidc_provider_arn = self.oidc_provider.arn

        self.addon_roles = {
            addon.name: self._pod_role(name, addon, args)
            for addon in MANAGED_ADDONS
            if addon.service_account
        }
        self.managed_addons: dict[str, aws.eks.Addon] = {}
        for addon in MANAGED_ADDONS:
            if addon.before_nodes:
                self.managed_addons[addon.name] = self._addon(name, addon, args, ())

        self.node_group_cluster = NodeGroupCluster(
            cluster_name=self.eks.name,
            kubernetes_version=cfg.version,
            node_role_arn=args.node_role_arn,
            node_security_group_id=self.node_security_group_id,
            ebs_key_arn=args.ebs_key_arn,
            vpc_id=args.vpc_id,
            subnet_by_zone=dict(args.subnet_by_zone),
            instance_tags=dict(args.instance_tags),
            depends_on=list(self.managed_addons.values()),
            # every stack runs the Cluster Autoscaler (infra/cluster/autoscaler.py)
            autoscaler_cluster=args.name,
        )
        self.system_nodes = SystemNodeGroup(
            f"{name}-system",
            SystemNodeGroupArgs(cluster=self.node_group_cluster, config=cfg.system_nodes),
            ctx,
            child,
        )
        for addon in MANAGED_ADDONS:
            if not addon.before_nodes:
                self.managed_addons[addon.name] = self._addon(
                    name, addon, args, (self.system_nodes,)
                )

        self.k8s_provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=kubeconfig(
                self.eks.name, self.endpoint, self.certificate_authority_data, ctx.region
            ),
            opts=child,
        )
        # Kubernetes objects that need running nodes and cluster DNS wait for these.
        self.ready = [self.system_nodes, self.managed_addons["coredns"]]
        self.register_outputs(
            {
                "name": self.name,
                "arn": self.arn,
                "endpoint": self.endpoint,
                "oidc_provider_arn": self.oidc_provider_arn,
                "node_security_group_id": self.node_security_group_id,
            }
        )

    def _pod_role(self, name: str, addon: ManagedAddon, args: ClusterArgs) -> PodRole:
        statements: list[dict[str, Any]] = []
        if addon.name == "aws-ebs-csi-driver":
            statements = ebs_csi_kms_statements(args.ebs_key_arn)
        elif addon.name == "aws-fsx-csi-driver":
            statements = fsx_csi_statements()
        return PodRole(
            f"{name}-{addon.name}",
            PodRoleArgs(
                cluster_name=self.eks.name,
                namespace=KUBE_SYSTEM,
                service_account=addon.service_account or "",
                statements=statements,
                managed_policies=addon.managed_policies,
                mode=args.pod_identity,
                oidc_provider_arn=self.oidc_provider.arn,
                oidc_issuer=self.oidc_issuer,
                description=f"EKS add-on {addon.name} of {args.name}",
            ),
            self._ctx,
            pulumi.ResourceOptions(parent=self),
        )

    def _addon(
        self,
        name: str,
        addon: ManagedAddon,
        args: ClusterArgs,
        after: Sequence[pulumi.Resource],
    ) -> aws.eks.Addon:
        # The default version EKS pairs with the cluster's Kubernetes version: upgrading the
        # cluster in config moves the add-ons with it.
        version = aws.eks.get_addon_version_output(
            addon_name=addon.name,
            kubernetes_version=args.config.version,
            most_recent=False,
            opts=pulumi.InvokeOutputOptions(provider=self._ctx.aws_provider),
        )
        role = self.addon_roles.get(addon.name)
        depends: list[pulumi.Resource] = [*after]
        if role is not None:
            depends.append(role)  # pods start with their credentials already associated
        return aws.eks.Addon(
            f"{name}-{addon.name}",
            cluster_name=self.eks.name,
            addon_name=addon.name,
            addon_version=version.version,
            configuration_values=(
                json.dumps(addon.configuration, sort_keys=True) if addon.configuration else None
            ),
            service_account_role_arn=(
                role.role_arn if role is not None and args.pod_identity == "irsa" else None
            ),
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends),
        )


def kubeconfig(
    cluster_name: pulumi.Input[str],
    endpoint: pulumi.Input[str],
    ca_data: pulumi.Input[str],
    region: str,
) -> pulumi.Output[str]:
    """A kubeconfig that authenticates with `aws eks get-token` (the caller's AWS identity,
    which the cluster's access entries authorize); it holds no credentials itself."""

    def build(values: list[str]) -> str:
        name, server, ca = values
        user = {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "command": "aws",
                "args": [
                    "eks",
                    "get-token",
                    "--cluster-name",
                    name,
                    "--region",
                    region,
                    "--output",
                    "json",
                ],
                "interactiveMode": "Never",
            }
        }
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": name, "cluster": {"server": server, "certificate-authority-data": ca}}
                ],
                "users": [{"name": name, "user": user}],
                "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
                "current-context": name,
            },
            sort_keys=True,
        )

    return pulumi.Output.all(cluster_name, endpoint, ca_data).apply(build)
