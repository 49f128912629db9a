"""FSx for Lustre in the training zone, linked to the data lake, mounted by training pods.

PERSISTENT_2 (SSD, durable, per-unit throughput) encrypted with the data key. Two data
repository associations link it to S3: `/datasets` imports new, changed and deleted objects
of the datasets prefix automatically (and its metadata once at creation), `/checkpoints`
exports what jobs write back to the checkpoints prefix. Pods mount it through the FSx CSI
driver as a static PersistentVolume bound to one PersistentVolumeClaim.

The file system sits in one private subnet: Lustre is a single-zone service, and cross-zone
traffic would cost money and latency on every read. That zone is the training zone (where
the EFA node group runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.config import FsxConfig, StackConfig
from infra.context import Context
from infra.storage.lake import BucketRef

# Lustre: 988 for LNet, 1018-1023 for the servers' (and clients') reserved ports.
LUSTRE_PORT_RANGES = ((988, 988), (1018, 1023))
LUSTRE_VERSION = "2.15"
CSI_DRIVER = "fsx.csi.aws.com"
DATASETS_PATH = "/datasets"
CHECKPOINTS_PATH = "/checkpoints"
ALL_EVENTS = ["NEW", "CHANGED", "DELETED"]
# Objects are striped across servers in chunks of this size on import (FSx's default).
IMPORTED_FILE_CHUNK_MIB = 1024
# S3 calls FSx makes on the file system's behalf, under its service-linked role.
_S3_KMS_OPERATIONS = [
    "Encrypt",
    "Decrypt",
    "ReEncryptFrom",
    "ReEncryptTo",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
]
_FSX_S3_ROLE = (
    "role/aws-service-role/s3.data-source.lustre.fsx.amazonaws.com/AWSServiceRoleForFSxS3Access_"
)


def training_zone(config: StackConfig) -> str:
    """Where the file system lives: `storage.fsx.availability_zone`, else the zone of the
    first EFA (training) GPU node group, else the first VPC zone."""
    fsx = config.storage.fsx
    if fsx is not None and fsx.availability_zone:
        return fsx.availability_zone
    for group in config.cluster.gpu_node_groups:
        if group.efa_enabled:
            zones = group.zones(config.network, config.region)
            if zones:
                return zones[0]
    return config.network.availability_zones[0]


@dataclass(frozen=True)
class LustreArgs:
    config: FsxConfig
    vpc_id: pulumi.Input[str]
    subnet_id: pulumi.Input[str]
    # The security group of the nodes that mount the file system (the EKS node SG).
    client_security_group_id: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    # the buckets the file system imports datasets from and exports checkpoints to
    datasets: BucketRef
    checkpoints: BucketRef
    namespace: str = "training"
    # Resources the Kubernetes objects wait for (the namespace, the CSI driver add-on).
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)
    # Add the matching rules to the client group (Lustre servers call clients back on the
    # same ports). Off when the client group's rules are managed inline elsewhere.
    manage_client_rules: bool = True


class Lustre(pulumi.ComponentResource):
    """An FSx for Lustre file system linked to S3, with its security group and, on the
    cluster, a static PersistentVolume + PersistentVolumeClaim (pass the Kubernetes provider
    in `opts.providers`)."""

    file_system: aws.fsx.LustreFileSystem
    security_group: aws.ec2.SecurityGroup
    datasets_association: aws.fsx.DataRepositoryAssociation
    checkpoints_association: aws.fsx.DataRepositoryAssociation
    persistent_volume: k8s.core.v1.PersistentVolume
    claim: k8s.core.v1.PersistentVolumeClaim
    pv_name: str
    pvc_name: str
    namespace: str

    def __init__(
        self,
        name: str,
        args: LustreArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("llmcloud:storage:Lustre", name, None, opts)
        cfg = args.config
        child = pulumi.ResourceOptions(parent=self)
        prefix = self._prefix = ctx.prefix

        self.security_group = self._security_group(args, prefix, child)

        backups = cfg.backup_retention_days > 0
        self.file_system = aws.fsx.LustreFileSystem(
            "lustre",
            deployment_type="PERSISTENT_2",
            storage_type="SSD",
            storage_capacity=cfg.storage_capacity_gib,
            per_unit_storage_throughput=cfg.throughput_mbps_per_tib,
            file_system_type_version=LUSTRE_VERSION,
            data_compression_type=cfg.compression,
            kms_key_id=args.kms_key_arn,
            # One subnet: a Lustre file system lives in one zone (the provider takes a string).
            subnet_ids=args.subnet_id,
            security_group_ids=[self.security_group.id],
            automatic_backup_retention_days=cfg.backup_retention_days,
            # A backup window only means something when automatic backups are on.
            daily_automatic_backup_start_time=cfg.daily_backup_start_utc if backups else None,
            copy_tags_to_backups=True,
            # A final backup on delete when backups are kept at all; none in throwaway stacks.
            skip_final_backup=not backups,
            weekly_maintenance_start_time=cfg.weekly_maintenance_start_utc,
            tags={"Name": f"{prefix}-lustre"},
            opts=child,
        )
        fs = self.file_system

        s3 = aws.fsx.DataRepositoryAssociationS3Args
        # datasets: S3 -> Lustre (metadata imported at creation, then every S3 change)
        self.datasets_association = self._association(
            "datasets",
            DATASETS_PATH,
            pulumi.Output.concat("s3://", args.datasets.name, "/", cfg.datasets_prefix),
            s3(
                auto_import_policy=aws.fsx.DataRepositoryAssociationS3AutoImportPolicyArgs(
                    events=ALL_EVENTS
                )
            ),
            import_on_create=True,
        )
        # checkpoints: Lustre -> S3 (every checkpoint written lands in the bucket)
        self.checkpoints_association = self._association(
            "checkpoints",
            CHECKPOINTS_PATH,
            pulumi.Output.concat("s3://", args.checkpoints.name, "/", cfg.checkpoints_prefix),
            s3(
                auto_export_policy=aws.fsx.DataRepositoryAssociationS3AutoExportPolicyArgs(
                    events=ALL_EVENTS
                )
            ),
            import_on_create=False,
        )
        self._s3_key_grants(args, ctx)

        self.namespace = args.namespace
        self.pv_name = f"{prefix}-lustre"
        self.pvc_name = "fsx-lustre"
        self._volume(args, cfg)

        self.register_outputs(
            {
                "file_system_id": fs.id,
                "dns_name": fs.dns_name,
                "mount_name": fs.mount_name,
                "security_group_id": self.security_group.id,
                "pvc_name": self.pvc_name,
            }
        )

    def _association(
        self,
        purpose: str,
        path: str,
        repository: pulumi.Input[str],
        s3: aws.fsx.DataRepositoryAssociationS3Args,
        *,
        import_on_create: bool,
    ) -> aws.fsx.DataRepositoryAssociation:
        """A data repository association of `path` on the file system with an S3 prefix;
        deleting it never deletes the files it brought in."""
        return aws.fsx.DataRepositoryAssociation(
            f"{purpose}-dra",
            file_system_id=self.file_system.id,
            file_system_path=path,
            data_repository_path=repository,
            batch_import_meta_data_on_create=import_on_create,
            imported_file_chunk_size=IMPORTED_FILE_CHUNK_MIB,
            delete_data_in_filesystem=False,
            s3=s3,
            tags={"Name": f"{self._prefix}-lustre-{purpose}"},
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _security_group(
        self, args: LustreArgs, prefix: str, child: pulumi.ResourceOptions
    ) -> aws.ec2.SecurityGroup:
        """Only Lustre's ports, only between the file servers and the cluster nodes."""
        sg = aws.ec2.SecurityGroup(
            "lustre-sg",
            vpc_id=args.vpc_id,
            description="FSx for Lustre: LNet ports from the file servers and the cluster nodes",
            tags={"Name": f"{prefix}-lustre"},
            opts=child,
        )
        peers = {"self": sg.id, "nodes": args.client_security_group_id}
        for low, high in LUSTRE_PORT_RANGES:
            ports = str(low) if low == high else f"{low}-{high}"
            for peer, peer_id in peers.items():
                aws.vpc.SecurityGroupIngressRule(
                    f"lustre-{ports}-from-{peer}",
                    security_group_id=sg.id,
                    referenced_security_group_id=peer_id,
                    ip_protocol="tcp",
                    from_port=low,
                    to_port=high,
                    description=f"Lustre {ports} from {peer}",
                    opts=child,
                )
                aws.vpc.SecurityGroupEgressRule(
                    f"lustre-{ports}-to-{peer}",
                    security_group_id=sg.id,
                    referenced_security_group_id=peer_id,
                    ip_protocol="tcp",
                    from_port=low,
                    to_port=high,
                    description=f"Lustre {ports} to {peer}",
                    opts=child,
                )
            if args.manage_client_rules:
                aws.vpc.SecurityGroupIngressRule(
                    f"nodes-lustre-{ports}-from-fsx",
                    security_group_id=args.client_security_group_id,
                    referenced_security_group_id=sg.id,
                    ip_protocol="tcp",
                    from_port=low,
                    to_port=high,
                    description=f"Lustre {ports} from the FSx file servers",
                    opts=child,
                )
        return sg

    def _s3_key_grants(self, args: LustreArgs, ctx: Context) -> None:
        """FSx reads and writes the linked buckets through a service-linked role named after
        the file system; the buckets are SSE-KMS with the data key, so that role needs the
        key. A grant per bucket, limited by the S3 encryption context to that bucket (S3
        Bucket Keys are on, so the context is the bucket ARN). The role exists once the first
        association does."""
        role_arn = self.file_system.id.apply(
            lambda fs_id: f"arn:{ctx.partition}:iam::{ctx.account_id}:{_FSX_S3_ROLE}{fs_id}"
        )
        associations = [self.datasets_association, self.checkpoints_association]
        for purpose, bucket_arn in (
            ("datasets", args.datasets.arn),
            ("checkpoints", args.checkpoints.arn),
        ):
            aws.kms.Grant(
                f"{purpose}-fsx-s3-key-grant",
                name=f"{ctx.prefix}-lustre-{purpose}",
                key_id=args.kms_key_arn,
                grantee_principal=role_arn,
                operations=_S3_KMS_OPERATIONS,
                constraints=[
                    aws.kms.GrantConstraintArgs(
                        encryption_context_subset={"aws:s3:arn": bucket_arn}
                    )
                ],
                opts=pulumi.ResourceOptions(parent=self, depends_on=associations),
            )

    def _volume(self, args: LustreArgs, cfg: FsxConfig) -> None:
        """A static PV (the file system already exists; nothing to provision) reserved for
        one claim, and that claim. `storageClassName: ""` keeps a default StorageClass from
        provisioning an EBS volume for the claim instead."""
        fs = self.file_system
        size = f"{cfg.storage_capacity_gib}Gi"
        k8s_opts = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        self.persistent_volume = k8s.core.v1.PersistentVolume(
            "lustre-pv",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=self.pv_name, labels={"llmcloud.io/storage": "fsx-lustre"}
            ),
            spec=k8s.core.v1.PersistentVolumeSpecArgs(
                capacity={"storage": size},
                volume_mode="Filesystem",
                access_modes=["ReadWriteMany"],
                persistent_volume_reclaim_policy="Retain",
                storage_class_name="",
                mount_options=["flock"],
                claim_ref=k8s.core.v1.ObjectReferenceArgs(
                    namespace=args.namespace, name=self.pvc_name
                ),
                csi=k8s.core.v1.CSIPersistentVolumeSourceArgs(
                    driver=CSI_DRIVER,
                    volume_handle=fs.id,
                    volume_attributes={"dnsname": fs.dns_name, "mountname": fs.mount_name},
                ),
            ),
            opts=k8s_opts,
        )
        self.claim = k8s.core.v1.PersistentVolumeClaim(
            "lustre-pvc",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=self.pvc_name,
                namespace=args.namespace,
                labels={"llmcloud.io/storage": "fsx-lustre"},
            ),
            spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteMany"],
                storage_class_name="",
                volume_name=self.pv_name,
                resources=k8s.core.v1.VolumeResourceRequirementsArgs(requests={"storage": size}),
            ),
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*args.depends_on, self.persistent_volume]
            ),
        )
