"""EKS managed node groups: the system group that runs cluster add-ons, and one `GpuNodeGroup`
per GPU group of the stack config, each launched from a launch template we build.

Everything hardware-dependent is derived from the GPU catalog, never asked for: the EFA
interfaces (one per network card, as many as the instance type has), whether there is NVMe
instance store to stripe into RAID0, the pod density. What a group may vary (kind, capacity,
zones, sizes, volumes, IMDS reachability, extra labels) is its `GpuNodeGroupConfig`.

Why a launch template of our own for every group: it is the only place where IMDSv2, KMS
encrypted gp3 volumes, EFA interfaces, placement groups and capacity reservations (ODCR and
Capacity Blocks) can be set on a managed node group. EKS merges it with its own bootstrap, so
the template never names an AMI, an instance profile or a subnet. The node group carries the
instance type, except for a Capacity Block, whose launch template must name it (EKS user
guide, "Create a managed node group with Capacity Blocks for ML"; EKS takes the type from one
place only, so the node group then names none).

How nodes arrive: the Cluster Autoscaler (`infra/cluster/autoscaler.py`) sets the desired size
of every group whose size may move (min < max). Scaling from zero, it knows a group only by
the tags of its Auto Scaling group: EKS puts a managed node group's own tags on the group
resource, not on the ASG it creates (aws/containers-roadmap#608), so each group tags its ASG
itself (`aws.autoscaling.Tag` on `resources[0].autoscalingGroups[0].name`) with the
`k8s.io/cluster-autoscaler/node-template/...` labels, taint and resources the autoscaler reads
(kubernetes/autoscaler cluster-autoscaler/cloudprovider/aws/README.md, "Auto-Discovery Setup").
A Capacity Block group is sized by scheduled actions at the block's start and end instead.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pulumi
import pulumi_aws as aws
import yaml

from infra.catalog import InstanceType, load_catalog
from infra.cluster.node_shape import ephemeral_storage_gib, max_pods
from infra.config import GpuNodeGroupConfig, SystemNodeGroupConfig
from infra.context import Context

# Labels and taint of the cross-team contract (workloads select and tolerate them).
from infra.contracts import (
    AMI_LABEL,
    CAPACITY_LABEL,
    EFA_PRESENT_LABEL,
    EFA_RESOURCE,
    GPU_KIND_LABEL,
    GPU_PRESENT_LABEL,
    GPU_RESOURCE,
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
    INSTANCE_TYPE_LABEL,
    NODE_GROUP_LABEL,
    SYSTEM_GROUP,
)

# Tags of the contract, on node groups and (through the launch template) instances/volumes.
CAPACITY_TAG = "llmcloud:capacity"
NODE_GROUP_TAG = "llmcloud:node-group"

AMI_TYPES = {"al2023": "AL2023_x86_64_NVIDIA", "bottlerocket": "BOTTLEROCKET_x86_64_NVIDIA"}
SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"
CAPACITY_TYPES = {
    "on_demand": "ON_DEMAND",
    "spot": "SPOT",
    "reservation": "ON_DEMAND",  # a targeted ODCR is on-demand capacity set aside for us
    "capacity_block": "CAPACITY_BLOCK",
}

# Volumes. GPU nodes pull images of tens of GB. Where the instance has NVMe instance store,
# containerd and kubelet live on its RAID0 array and the EBS volume only holds the OS: gp3's
# included baseline suffices. Without instance store, images land on EBS, which then gets
# provisioned IOPS and throughput.
ROOT_DEVICE = "/dev/xvda"
BOTTLEROCKET_DATA_DEVICE = "/dev/xvdb"
BOTTLEROCKET_OS_VOLUME_GB = 8
GP3_BASELINE_IOPS = 3000
GP3_BASELINE_THROUGHPUT_MIBPS = 125
GPU_VOLUME_IOPS = 6000
GPU_VOLUME_THROUGHPUT_MIBPS = 500

IMDS_HOP_LIMIT_NODES_ONLY = 1  # pods on the pod network cannot reach IMDS
IMDS_HOP_LIMIT_WITH_PODS = 2

# Cluster Autoscaler's ASG tags (kubernetes/autoscaler cloudprovider/aws/README.md): the two
# discovery tags, and the node template it reads when a group is at zero nodes.
AUTOSCALER_ENABLED_TAG = "k8s.io/cluster-autoscaler/enabled"
NODE_TEMPLATE_PREFIX = "k8s.io/cluster-autoscaler/node-template"
# EKS user guide, Capacity Blocks: scale to zero more than 30 minutes before the block ends,
# so pods drain before EC2 reclaims the instances.
CAPACITY_BLOCK_DRAIN_MINUTES = 60


def autoscaler_cluster_tag(cluster_name: str) -> str:
    """The per-cluster discovery tag (value `owned`); the autoscaler's IAM writes need it."""
    return f"k8s.io/cluster-autoscaler/{cluster_name}"


def node_template_tags(
    cluster_name: str,
    labels: Mapping[str, str],
    taints: Sequence[tuple[str, str, str]],
    resources: Mapping[str, str],
) -> dict[str, str]:
    """The ASG tags the Cluster Autoscaler discovers a group by and builds its template node
    from: labels, taints (`value:Effect`) and extended resources of a node of the group."""
    tags = {AUTOSCALER_ENABLED_TAG: "true", autoscaler_cluster_tag(cluster_name): "owned"}
    tags.update({f"{NODE_TEMPLATE_PREFIX}/label/{k}": v for k, v in labels.items()})
    tags.update({f"{NODE_TEMPLATE_PREFIX}/taint/{k}": f"{v}:{e}" for k, v, e in taints})
    tags.update({f"{NODE_TEMPLATE_PREFIX}/resources/{k}": v for k, v in resources.items()})
    return tags


def _tag_slug(key: str) -> str:
    return (
        key.removeprefix(NODE_TEMPLATE_PREFIX + "/")
        .removeprefix("k8s.io/cluster-autoscaler/")
        .replace("/", "-")
    )


def asg_name(node_group: aws.eks.NodeGroup) -> pulumi.Output[str]:
    """The Auto Scaling group EKS made for a managed node group (exactly one per group)."""
    return node_group.resources.apply(lambda rs: rs[0].autoscaling_groups[0].name)


def tag_asg(
    name: str, node_group: aws.eks.NodeGroup, tags: Mapping[str, str], parent: pulumi.Resource
) -> list[aws.autoscaling.Tag]:
    """One `aws.autoscaling.Tag` per tag on the node group's ASG. Not propagated to
    instances: the autoscaler reads them from the group, kubelet sets the real labels."""
    group = asg_name(node_group)
    return [
        aws.autoscaling.Tag(
            f"{name}-asg-tag-{_tag_slug(key)}",
            autoscaling_group_name=group,
            tag=aws.autoscaling.TagTagArgs(key=key, value=value, propagate_at_launch=False),
            opts=pulumi.ResourceOptions(parent=parent, depends_on=[node_group]),
        )
        for key, value in sorted(tags.items())
    ]


def schedule_time(moment: datetime) -> str:
    """The UTC timestamp format of Auto Scaling scheduled actions (`YYYY-MM-DDThh:mm:ssZ`)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class EfaInterface:
    network_card_index: int
    device_index: int
    interface_type: str  # "efa" (EFA with ENA) or "efa-only"

    @property
    def primary(self) -> bool:
        return self.network_card_index == 0 and self.device_index == 0


def efa_interfaces(instance: InstanceType) -> list[EfaInterface]:
    """One EFA per network card, as AWS recommends for multi-card GPU instances (EC2 user guide,
    "EFA configuration for P5 instances", use case 1): the primary interface (card 0, device 0)
    is EFA with ENA and carries the node's and pods' IP traffic; every other card gets an
    EFA-only interface at device index 1, which takes no IP address. The count is the
    catalog's (p4d/p4de 4, p5/p5e 32, p5en 16), never a literal."""
    count = instance.efa_interfaces
    if count < 1:
        raise ValueError(f"{instance.name} has no EFA")
    if count > instance.network_cards:
        raise ValueError(
            f"{instance.name}: {count} EFA interfaces but {instance.network_cards} network cards"
        )
    return [EfaInterface(0, 0, "efa")] + [
        EfaInterface(card, 1, "efa-only") for card in range(1, count)
    ]


def node_user_data(ami: str, *, pods: int, local_storage: bool) -> str:
    """User data EKS merges with its own bootstrap: kubelet's pod limit and, where the instance
    has NVMe instance store, a RAID0 array of it for containerd, kubelet and pod logs.
    AL2023 takes a nodeadm NodeConfig in a MIME multipart document; Bottlerocket takes TOML."""
    if ami == "bottlerocket":
        lines = ["[settings.kubernetes]", f"max-pods = {pods}"]
        if local_storage:
            lines += [
                "",
                "[settings.bootstrap-commands.k8s-ephemeral-storage]",
                'commands = [["apiclient", "ephemeral-storage", "init"], '
                '["apiclient", "ephemeral-storage", "bind", "--dirs", '
                '"/var/lib/containerd", "/var/lib/kubelet", "/var/log/pods"]]',
                'mode = "always"',
                "essential = true",
            ]
        return base64.b64encode(("\n".join(lines) + "\n").encode()).decode()
    spec: dict = {"kubelet": {"config": {"maxPods": pods}}}
    if local_storage:
        spec["instance"] = {"localStorage": {"strategy": "RAID0"}}
    node_config = yaml.safe_dump(
        {"apiVersion": "node.eks.aws/v1alpha1", "kind": "NodeConfig", "spec": spec},
        sort_keys=False,
    )
    boundary = "==LLMCLOUD=="
    document = (
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n'
        f"--{boundary}\n"
        "Content-Type: application/node.eks.aws\n\n"
        f"---\n{node_config}\n"
        f"--{boundary}--\n"
    )
    return base64.b64encode(document.encode()).decode()


@dataclass(frozen=True)
class NodeGroupCluster:
    """What every node group takes from the cluster it joins."""

    cluster_name: pulumi.Input[str]
    kubernetes_version: str
    node_role_arn: pulumi.Input[str]
    node_security_group_id: pulumi.Input[str]
    ebs_key_arn: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    subnet_by_zone: Mapping[str, pulumi.Input[str]]
    # tags for instances, volumes and interfaces (provider default tags do not reach them)
    instance_tags: Mapping[str, str] = field(default_factory=dict)
    # what must exist before nodes join (the VPC CNI and kube-proxy add-ons)
    depends_on: Sequence[pulumi.Resource] = ()
    # the cluster's name as a plain string, for the autoscaler's discovery tags; None: the
    # cluster runs no autoscaler and no group's size moves by itself
    autoscaler_cluster: str | None = None


def _volume(
    device: str, size_gb: int, key_arn: pulumi.Input[str], *, iops: int, throughput: int
) -> aws.ec2.LaunchTemplateBlockDeviceMappingArgs:
    return aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
        device_name=device,
        ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
            volume_size=size_gb,
            volume_type="gp3",
            iops=iops,
            throughput=throughput,
            encrypted="true",
            kms_key_id=key_arn,
            delete_on_termination="true",
        ),
    )


def _metadata(hop_limit: int) -> aws.ec2.LaunchTemplateMetadataOptionsArgs:
    return aws.ec2.LaunchTemplateMetadataOptionsArgs(
        http_endpoint="enabled",
        http_tokens="required",
        http_put_response_hop_limit=hop_limit,
        instance_metadata_tags="disabled",
    )


def _tag_specifications(tags: Mapping[str, str]) -> list:
    return [
        aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind, tags=dict(tags))
        for kind in ("instance", "volume", "network-interface")
    ]


@dataclass(frozen=True)
class SystemNodeGroupArgs:
    cluster: NodeGroupCluster
    config: SystemNodeGroupConfig


def autoscaled(cluster: NodeGroupCluster, min_size: int, max_size: int) -> bool:
    """Whether the autoscaler owns a group's current size: it runs, and the size may move."""
    return cluster.autoscaler_cluster is not None and min_size < max_size


class SystemNodeGroup(pulumi.ComponentResource):
    """Small on-demand nodes for cluster add-ons (CoreDNS, CSI controllers, Prometheus, KEDA,
    the Cluster Autoscaler), spread across every zone of the VPC. Untainted; GPU workloads
    never land here because they select their own node group."""

    node_group: aws.eks.NodeGroup
    launch_template: aws.ec2.LaunchTemplate
    labels: dict[str, str]
    autoscaled: bool
    asg_tags: list[aws.autoscaling.Tag]

    def __init__(
        self,
        name: str,
        args: SystemNodeGroupArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("llmcloud:cluster:SystemNodeGroup", name, None, opts)
        self._name = name  # children carry it: a URN holds the parent's type, not its name
        cluster, config = args.cluster, args.config
        child = pulumi.ResourceOptions(parent=self)
        smallest = min(
            (load_catalog().instance(t) for t in config.instance_types), key=lambda i: i.vcpus
        )
        tags = {
            **cluster.instance_tags,
            NODE_GROUP_TAG: SYSTEM_GROUP,
            CAPACITY_TAG: "on_demand",
            "Name": SYSTEM_GROUP,
        }
        self.labels = {NODE_GROUP_LABEL: SYSTEM_GROUP}
        self.autoscaled = autoscaled(cluster, config.min_size, config.max_size)
        self.launch_template = aws.ec2.LaunchTemplate(
            f"{self._name}-launch-template",
            description="llmcloud system nodes: IMDSv2, encrypted gp3 root",
            update_default_version=True,
            ebs_optimized="true",
            vpc_security_group_ids=[cluster.node_security_group_id],
            metadata_options=_metadata(IMDS_HOP_LIMIT_NODES_ONLY),
            block_device_mappings=[
                _volume(
                    ROOT_DEVICE,
                    config.disk_gb,
                    cluster.ebs_key_arn,
                    iops=GP3_BASELINE_IOPS,
                    throughput=GP3_BASELINE_THROUGHPUT_MIBPS,
                )
            ],
            user_data=node_user_data("al2023", pods=max_pods(smallest), local_storage=False),
            tag_specifications=_tag_specifications(tags),
            tags={NODE_GROUP_TAG: SYSTEM_GROUP},
            opts=child,
        )
        self.node_group = aws.eks.NodeGroup(
            f"{self._name}-node-group",
            cluster_name=cluster.cluster_name,
            node_group_name_prefix=f"{SYSTEM_GROUP}-",
            version=cluster.kubernetes_version,
            node_role_arn=cluster.node_role_arn,
            subnet_ids=list(cluster.subnet_by_zone.values()),
            ami_type=SYSTEM_AMI_TYPE,
            capacity_type="ON_DEMAND",
            instance_types=list(config.instance_types),
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=config.min_size, desired_size=config.desired, max_size=config.max_size
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            node_repair_config=aws.eks.NodeGroupNodeRepairConfigArgs(enabled=True),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=self.launch_template.id,
                version=self.launch_template.latest_version.apply(str),
            ),
            labels=self.labels,
            tags={NODE_GROUP_TAG: SYSTEM_GROUP, CAPACITY_TAG: "on_demand"},
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(cluster.depends_on),
                # the Cluster Autoscaler owns the current size where it may move
                ignore_changes=["scalingConfig.desiredSize"] if self.autoscaled else None,
            ),
        )
        self.asg_tags = (
            tag_asg(
                self._name,
                self.node_group,
                node_template_tags(
                    cluster.autoscaler_cluster or "",
                    self.labels,
                    (),
                    {"ephemeral-storage": f"{config.disk_gb}Gi"},
                ),
                self,
            )
            if self.autoscaled
            else []
        )
        self.register_outputs({"node_group_name": self.node_group.node_group_name})


@dataclass(frozen=True)
class GpuNodeGroupArgs:
    cluster: NodeGroupCluster
    config: GpuNodeGroupConfig
    zones: Sequence[str]  # GpuNodeGroupConfig.zones(...) of the stack: one zone when reserved


class GpuNodeGroup(pulumi.ComponentResource):
    """One GPU node group: launch template (IMDSv2, KMS gp3 volumes, NVMe RAID0, EFA
    interfaces, capacity reservation or Capacity Block), the EFA security group, a cluster
    placement group when EFA is on and capacity is not reserved, the managed node group, the
    autoscaler's tags on its ASG, and a Capacity Block's scheduled start and end."""

    name: str
    gpu_kind: str
    instance_type: str
    gpus_per_node: int
    efa_interfaces: int
    capacity: str
    zones: list[str]
    labels: dict[str, str]
    taints: list[tuple[str, str, str]]
    autoscaled: bool
    node_group: aws.eks.NodeGroup
    launch_template: aws.ec2.LaunchTemplate
    efa_security_group: aws.ec2.SecurityGroup | None
    placement_group: aws.ec2.PlacementGroup | None
    asg_tags: list[aws.autoscaling.Tag]
    schedules: list[aws.autoscaling.Schedule]

    def __init__(
        self,
        name: str,
        args: GpuNodeGroupArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("llmcloud:cluster:GpuNodeGroup", name, None, opts)
        self._name = name  # children carry it: a URN holds the parent's type, not its name
        child = pulumi.ResourceOptions(parent=self)
        cfg, cluster = args.config, args.cluster
        instance = cfg.instance
        self.name = cfg.name
        self.gpu_kind = cfg.gpu
        self.instance_type = instance.name
        self.gpus_per_node = instance.gpu_count
        self.efa_interfaces = instance.efa_interfaces if cfg.efa_enabled else 0
        self.capacity = cfg.capacity.type
        self.zones = list(args.zones)
        missing = [z for z in self.zones if z not in cluster.subnet_by_zone]
        if not self.zones or missing:
            raise ValueError(f"node group {cfg.name}: no private subnet in zones {missing}")
        if cfg.reserved and len(self.zones) != 1:
            raise ValueError(f"node group {cfg.name}: a reserved group runs in exactly one zone")

        self.labels = {
            **cfg.labels,
            NODE_GROUP_LABEL: cfg.name,
            GPU_KIND_LABEL: cfg.gpu,
            INSTANCE_TYPE_LABEL: instance.name,
            CAPACITY_LABEL: cfg.capacity.type,
            AMI_LABEL: cfg.ami,
            GPU_PRESENT_LABEL: "true",
        }
        if cfg.efa_enabled:
            self.labels[EFA_PRESENT_LABEL] = "true"
        self.taints = [(GPU_TAINT_KEY, GPU_TAINT_VALUE, GPU_TAINT_EFFECT)]
        group_tags = {NODE_GROUP_TAG: cfg.name, CAPACITY_TAG: cfg.capacity.type}
        block = cfg.capacity.type == "capacity_block"
        windowed = block and cfg.capacity.start_utc is not None
        self.autoscaled = autoscaled(cluster, cfg.min_size, cfg.max_size)

        self.efa_security_group = (
            self._efa_security_group(cfg, cluster) if cfg.efa_enabled else None
        )
        self.placement_group = (
            aws.ec2.PlacementGroup(
                f"{self._name}-placement-group",
                strategy="cluster",
                tags={**group_tags, "Name": f"{cfg.name}-efa"},
                opts=child,
            )
            if cfg.placement_group
            else None
        )
        self.launch_template = self._launch_template(cfg, cluster, instance, group_tags, child)
        # who moves the size besides Pulumi: the autoscaler (desired), a Capacity Block's
        # scheduled actions (desired and min)
        moved = (["scalingConfig.desiredSize"] if self.autoscaled or windowed else []) + (
            ["scalingConfig.minSize"] if windowed else []
        )
        self.node_group = aws.eks.NodeGroup(
            f"{self._name}-node-group",
            cluster_name=cluster.cluster_name,
            node_group_name=cfg.name,
            version=cluster.kubernetes_version,
            node_role_arn=cluster.node_role_arn,
            subnet_ids=[cluster.subnet_by_zone[z] for z in self.zones],
            ami_type=AMI_TYPES[cfg.ami],
            capacity_type=CAPACITY_TYPES[cfg.capacity.type],
            # a Capacity Block's launch template names the type; EKS takes it from one place
            instance_types=None if block else [instance.name],
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=cfg.min_size, desired_size=cfg.desired, max_size=cfg.max_size
            ),
            # Reserved capacity has no room to surge: replace nodes in place.
            update_config=aws.eks.NodeGroupUpdateConfigArgs(
                max_unavailable=1, update_strategy="MINIMAL" if cfg.reserved else "DEFAULT"
            ),
            node_repair_config=aws.eks.NodeGroupNodeRepairConfigArgs(enabled=True),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=self.launch_template.id,
                version=self.launch_template.latest_version.apply(str),
            ),
            labels=self.labels,
            taints=[
                aws.eks.NodeGroupTaintArgs(
                    key=GPU_TAINT_KEY, value=GPU_TAINT_VALUE, effect="NO_SCHEDULE"
                )
            ],
            tags=group_tags,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(cluster.depends_on),
                ignore_changes=moved or None,
                # the node group's name is its identity; a replacement goes away first
                delete_before_replace=True,
            ),
        )
        resources = {
            GPU_RESOURCE: str(instance.gpu_count),
            "ephemeral-storage": f"{ephemeral_storage_gib(instance, cfg.root_volume_gb)}Gi",
        }
        if self.efa_interfaces:
            resources[EFA_RESOURCE] = str(self.efa_interfaces)
        self.asg_tags = (
            tag_asg(
                self._name,
                self.node_group,
                node_template_tags(
                    cluster.autoscaler_cluster or "", self.labels, self.taints, resources
                ),
                self,
            )
            if self.autoscaled
            else []
        )
        self.schedules = self._block_window(cfg) if windowed else []
        self.register_outputs(
            {
                "node_group_name": self.node_group.node_group_name,
                "instance_type": instance.name,
                "gpus_min": instance.gpu_count * cfg.min_size,
                "gpus_max": instance.gpu_count * cfg.max_size,
                "efa_interfaces": self.efa_interfaces,
            }
        )

    def _block_window(self, cfg: GpuNodeGroupConfig) -> list[aws.autoscaling.Schedule]:
        """The Capacity Block's window as two scheduled actions on the group's ASG: every
        node of the block at its start (min = desired = max, so nothing scales it in while
        paid for), none from an hour before its end (pods drain before EC2 reclaims it)."""
        start, end = cfg.capacity.start_utc, cfg.capacity.end_utc
        assert start is not None and end is not None  # the config validates both or neither
        group = asg_name(self.node_group)
        child = pulumi.ResourceOptions(parent=self, depends_on=[self.node_group])
        drain = end - timedelta(minutes=CAPACITY_BLOCK_DRAIN_MINUTES)
        return [
            aws.autoscaling.Schedule(
                f"{self._name}-block-start",
                scheduled_action_name=f"{cfg.name}-capacity-block-start",
                autoscaling_group_name=group,
                start_time=schedule_time(start),
                min_size=cfg.max_size,
                max_size=cfg.max_size,
                desired_capacity=cfg.max_size,
                opts=child,
            ),
            aws.autoscaling.Schedule(
                f"{self._name}-block-end",
                scheduled_action_name=f"{cfg.name}-capacity-block-end",
                autoscaling_group_name=group,
                start_time=schedule_time(max(drain, start)),
                min_size=0,
                max_size=cfg.max_size,
                desired_capacity=0,
                opts=child,
            ),
        ]

    def _efa_security_group(
        self, cfg: GpuNodeGroupConfig, cluster: NodeGroupCluster
    ) -> aws.ec2.SecurityGroup:
        """EFA needs all traffic to and from members of one security group (its SRD transport
        is not TCP/UDP and cannot be narrowed to ports)."""
        child = pulumi.ResourceOptions(parent=self)
        sg = aws.ec2.SecurityGroup(
            f"{self._name}-efa-sg",
            vpc_id=cluster.vpc_id,
            description=f"EFA traffic between {cfg.name} nodes (all protocols, members only)",
            tags={"Name": f"{cfg.name}-efa", NODE_GROUP_TAG: cfg.name},
            opts=child,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{self._name}-efa-in-from-self",
            security_group_id=sg.id,
            referenced_security_group_id=sg.id,
            ip_protocol="-1",
            description="EFA: all traffic from members",
            opts=child,
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{self._name}-efa-out-to-self",
            security_group_id=sg.id,
            referenced_security_group_id=sg.id,
            ip_protocol="-1",
            description="EFA: all traffic to members",
            opts=child,
        )
        return sg

    def _launch_template(
        self,
        cfg: GpuNodeGroupConfig,
        cluster: NodeGroupCluster,
        instance: InstanceType,
        group_tags: dict[str, str],
        child: pulumi.ResourceOptions,
    ) -> aws.ec2.LaunchTemplate:
        iops, throughput = (
            (GP3_BASELINE_IOPS, GP3_BASELINE_THROUGHPUT_MIBPS)
            if instance.has_instance_store
            else (GPU_VOLUME_IOPS, GPU_VOLUME_THROUGHPUT_MIBPS)
        )
        if cfg.ami == "bottlerocket":
            volumes = [
                _volume(
                    ROOT_DEVICE,
                    BOTTLEROCKET_OS_VOLUME_GB,
                    cluster.ebs_key_arn,
                    iops=GP3_BASELINE_IOPS,
                    throughput=GP3_BASELINE_THROUGHPUT_MIBPS,
                ),
                _volume(
                    BOTTLEROCKET_DATA_DEVICE,
                    cfg.root_volume_gb,
                    cluster.ebs_key_arn,
                    iops=iops,
                    throughput=throughput,
                ),
            ]
        else:
            volumes = [
                _volume(
                    ROOT_DEVICE,
                    cfg.root_volume_gb,
                    cluster.ebs_key_arn,
                    iops=iops,
                    throughput=throughput,
                )
            ]
        network: dict = {}
        if self.efa_security_group is not None:
            # With interfaces in the template, security groups go on each interface; only
            # the primary (IP traffic) also gets the cluster's group.
            network["network_interfaces"] = [
                aws.ec2.LaunchTemplateNetworkInterfaceArgs(
                    network_card_index=nic.network_card_index,
                    device_index=nic.device_index,
                    interface_type=nic.interface_type,
                    delete_on_termination="true",
                    security_groups=(
                        [cluster.node_security_group_id, self.efa_security_group.id]
                        if nic.primary
                        else [self.efa_security_group.id]
                    ),
                    description=f"{cfg.name} EFA card {nic.network_card_index}",
                )
                for nic in efa_interfaces(instance)
            ]
        else:
            network["vpc_security_group_ids"] = [cluster.node_security_group_id]
        capacity: dict = {}
        if cfg.reserved:
            capacity["capacity_reservation_specification"] = (
                aws.ec2.LaunchTemplateCapacityReservationSpecificationArgs(
                    capacity_reservation_target=aws.ec2.LaunchTemplateCapacityReservationSpecificationCapacityReservationTargetArgs(
                        capacity_reservation_id=cfg.capacity.reservation_id
                    )
                )
            )
        if cfg.capacity.type == "capacity_block":
            capacity["instance_market_options"] = aws.ec2.LaunchTemplateInstanceMarketOptionsArgs(
                market_type="capacity-block"
            )
        if self.placement_group is not None:
            capacity["placement"] = aws.ec2.LaunchTemplatePlacementArgs(
                group_name=self.placement_group.name
            )
        if cfg.capacity.type == "capacity_block":
            # EKS user guide, Capacity Blocks with managed node groups: the template names it
            capacity["instance_type"] = instance.name
        return aws.ec2.LaunchTemplate(
            f"{self._name}-launch-template",
            description=f"llmcloud {cfg.name}: {cfg.gpu} on {instance.name}",
            update_default_version=True,
            ebs_optimized="true",
            metadata_options=_metadata(
                IMDS_HOP_LIMIT_WITH_PODS if cfg.pods_need_imds else IMDS_HOP_LIMIT_NODES_ONLY
            ),
            block_device_mappings=volumes,
            user_data=node_user_data(
                cfg.ami, pods=max_pods(instance), local_storage=instance.has_instance_store
            ),
            tag_specifications=_tag_specifications(
                {**cluster.instance_tags, **group_tags, "Name": f"{cfg.name}"}
            ),
            tags=group_tags,
            **network,
            **capacity,
            opts=child,
        )
