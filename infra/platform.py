"""The composition root: builds every component of one environment from its stack config.

Order follows the dependencies: keys first (everything is encrypted with them), then the
network, IAM, the cluster and its node groups, the data stores, the workloads.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pulumi

from infra.cluster.addons import Addons, AddonsArgs
from infra.cluster.autoscaler import ClusterAutoscaler, ClusterAutoscalerArgs
from infra.cluster.eks import Cluster, ClusterArgs
from infra.cluster.nodegroups import GpuNodeGroup, GpuNodeGroupArgs
from infra.config import FsxConfig, StackConfig
from infra.context import Context, make_context
from infra.network.vpc import Network, NetworkArgs
from infra.security.access import ClusterAccess, ClusterAccessArgs
from infra.security.audit_trail import AuditTrail, AuditTrailArgs
from infra.security.github_oidc import GithubOidc, GithubOidcArgs
from infra.security.keys import Keys, KeysArgs
from infra.security.roles import ClusterRoles, ClusterRolesArgs, DataStagerRole, DataStagerRoleArgs
from infra.security.statements import staging_statements
from infra.storage.lake import DataLake, DataLakeArgs
from infra.storage.lustre import Lustre, LustreArgs, training_zone
from workloads.facts import BucketRef, ClusterFacts
from workloads.serving.service import VllmService, VllmServiceArgs
from workloads.training.job import TrainingJob, TrainingJobArgs


class Platform:
    """All components of one stack. Not a resource itself: components sit directly under
    the stack, so URNs stay short and stable."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.ctx: Context = make_context(config)
        ctx = self.ctx
        self.cluster_name = f"{ctx.prefix}-eks"
        self._outputs: dict[str, Any] = {
            "region": config.region,
            "environment": config.environment,
            "cluster_name": self.cluster_name,
        }

        # --- keys and network (foundation) ---------------------------------------------
        self.keys = Keys(
            "keys",
            KeysArgs(
                deletion_window_days=config.security.kms_deletion_window_days,
                key_admin_arns=list(config.security.key_admin_arns),
            ),
            ctx,
            ctx.opts(),
        )
        self.network = Network(
            "network",
            NetworkArgs(
                config=config.network,
                cluster_name=self.cluster_name,
                flow_logs_key_arn=self.keys.logs.arn,
            ),
            ctx,
            ctx.opts(),
        )
        self._outputs.update(
            vpc_id=self.network.vpc_id,
            private_subnet_ids=self.network.private_subnet_ids,
            kms_key_arns=self.keys.arns(),
        )

        # --- security: IAM roles (issue 3) ---------------------------------------------
        self.roles = ClusterRoles(
            "cluster-roles",
            ClusterRolesArgs(cluster_name=self.cluster_name, cluster_key_arn=self.keys.cluster.arn),
            ctx,
            ctx.opts(),
        )

        # --- storage: S3 data lake (issue 5) -------------------------------------------
        self.storage = DataLake(
            "storage",
            DataLakeArgs(
                config=config.storage,
                data_key_arn=self.keys.data.arn,
                cloudtrail=config.security.cloudtrail,
            ),
            ctx,
            ctx.opts(),
        )
        self._outputs.update(bucket_names=self.storage.bucket_names)

        # --- cluster and node groups (issue 4) -----------------------------------------
        self.cluster = Cluster(
            "cluster",
            ClusterArgs(
                name=self.cluster_name,
                config=config.cluster,
                environment=config.environment,
                pod_identity=config.security.pod_identity,
                vpc_id=self.network.vpc_id,
                subnet_by_zone=self.network.private_subnet_by_zone,
                cluster_role_arn=self.roles.cluster_role.arn,
                node_role_arn=self.roles.node_role.arn,
                cluster_key_arn=self.keys.cluster.arn,
                ebs_key_arn=self.keys.ebs.arn,
                logs_key_arn=self.keys.logs.arn,
                instance_tags=config.default_tags,
                depends_on=[self.roles],
            ),
            ctx,
            ctx.opts(),
        )
        # From here on, ctx.opts() also carries the cluster's Kubernetes provider.
        self.ctx = ctx = dataclasses.replace(
            ctx, providers={**ctx.providers, "kubernetes": self.cluster.k8s_provider}
        )
        # People's access entries and the workload namespaces come first: with API
        # authentication and no bootstrap admin, nothing reaches the Kubernetes API (Helm
        # included) before the deployer's access entry exists.
        security = config.security
        # Access entries for people, and the workload namespaces (Pod Security, quotas,
        # limits, default-deny NetworkPolicies). Objects in those namespaces depend on
        # `self.access.namespaces[name]`.
        self.access = ClusterAccess(
            "cluster-access",
            ClusterAccessArgs(
                cluster_name=self.cluster.name,
                admin_arns=list(security.cluster_admin_arns),
                readonly_arns=list(security.cluster_readonly_arns),
                namespaces=list(security.namespaces),
                vpc_cidr=str(config.network.vpc_cidr),
                kubernetes_version=config.cluster.version,
                pod_identity=security.pod_identity == "pod_identity",
            ),
            ctx,
            ctx.opts(),
        )
        self._outputs.update(namespaces=sorted(self.access.namespaces))
        self.node_groups = {
            group.name: GpuNodeGroup(
                f"gpu-{group.name}",
                GpuNodeGroupArgs(
                    cluster=self.cluster.node_group_cluster,
                    config=group,
                    zones=group.zones(config.network, config.region),
                ),
                ctx,
                ctx.opts(),
            )
            for group in config.cluster.gpu_node_groups
        }
        # How GPU nodes arrive: the autoscaler sizes every group whose size may move.
        self.autoscaler = ClusterAutoscaler(
            "cluster-autoscaler",
            ClusterAutoscalerArgs(
                cluster_name=self.cluster_name,
                region=config.region,
                kubernetes_version=config.cluster.version,
                gpu_node_groups=list(config.cluster.gpu_node_groups),
                pod_identity=config.security.pod_identity,
                oidc_provider_arn=self.cluster.oidc_provider_arn,
                oidc_issuer=self.cluster.oidc_issuer,
                depends_on=[*self.cluster.ready, *self.access.ready],
            ),
            ctx,
            ctx.opts(),
        )
        self.addons = Addons(
            "addons",
            AddonsArgs(
                config=config.cluster.addons,
                cluster_name=self.cluster.name,
                ebs_key_arn=self.keys.ebs.arn,
                logs_key_arn=self.keys.logs.arn,
                log_retention_days=config.cluster.log_retention_days,
                kubernetes_version=config.cluster.version,
                gpu_amis=sorted({g.ami for g in config.cluster.gpu_node_groups}),
                efa=any(g.efa_enabled for g in config.cluster.gpu_node_groups),
                pod_identity=config.security.pod_identity,
                oidc_provider_arn=self.cluster.oidc_provider_arn,
                oidc_issuer=self.cluster.oidc_issuer,
                vpc_id=self.network.vpc_id,
                controllers=Addons.controllers_for(config),
                # add-on pods that find no room get a node from the autoscaler
                depends_on=[*self.cluster.ready, *self.access.ready, self.autoscaler],
            ),
            ctx,
            ctx.opts(),
        )
        self._outputs.update(
            cluster_arn=self.cluster.arn,
            cluster_endpoint=self.cluster.endpoint,
            cluster_version=self.cluster.version,
            oidc_provider_arn=self.cluster.oidc_provider_arn,
            node_security_group_id=self.cluster.node_security_group_id,
            gpu_node_groups={
                name: {
                    "gpu": g.gpu_kind,
                    "instance_type": g.instance_type,
                    "gpus_per_node": g.gpus_per_node,
                    "efa_interfaces": g.efa_interfaces,
                    "capacity": g.capacity,
                    "zones": g.zones,
                    "node_group_name": g.node_group.node_group_name,
                }
                for name, g in self.node_groups.items()
            },
        )

        # --- security on the cluster: access entries, namespaces, audit (issue 3) -------
        if security.data_stager_arns:
            # `llmcloud stage` writes where FSx imports from: the datasets prefix.
            datasets_prefix = (config.storage.fsx or FsxConfig()).datasets_prefix
            self.data_stager = DataStagerRole(
                "data-stager",
                DataStagerRoleArgs(
                    principal_arns=list(security.data_stager_arns),
                    statements=staging_statements(
                        self.storage.bucket_arns["datasets"],
                        datasets_prefix,
                        self.keys.data.arn,
                        region=ctx.region,
                    ),
                ),
                ctx,
                ctx.opts(),
            )
            self._outputs.update(
                data_stager_role_arn=self.data_stager.role_arn,
                datasets_stage_uri=pulumi.Output.concat(
                    "s3://", self.storage.bucket_names["datasets"], "/", datasets_prefix
                ),
            )
        if security.cloudtrail:
            self.audit = AuditTrail(
                "audit-trail",
                AuditTrailArgs(
                    log_bucket_name=self.storage.logs.bucket,
                    log_bucket_policy=self.storage.logs_bucket_policy,
                    data_bucket_arns=[
                        self.storage.bucket_arns[p] for p in ("datasets", "checkpoints", "models")
                    ],
                    logs_key_arn=self.keys.logs.arn,
                    cloudwatch_retention_days=security.audit_log_retention_days,
                ),
                ctx,
                ctx.opts(),
            )
            self._outputs.update(audit_trail_arn=self.audit.trail.arn)

        # --- storage on the cluster: FSx for Lustre, PV/PVC (issue 5) ------------------
        self.fsx: Lustre | None = None
        if config.storage.fsx is not None:
            fsx_zone = training_zone(config)
            # One static PV binds one claim: it lives in the (first) training namespace.
            fsx_namespace = config.fsx_namespace
            self.fsx = Lustre(
                "lustre",
                LustreArgs(
                    config=config.storage.fsx,
                    vpc_id=self.network.vpc_id,
                    subnet_id=self.network.private_subnet_by_zone[fsx_zone],
                    client_security_group_id=self.cluster.node_security_group_id,
                    kms_key_arn=self.keys.data.arn,
                    datasets_bucket=self.storage.bucket_names["datasets"],
                    datasets_bucket_arn=self.storage.bucket_arns["datasets"],
                    checkpoints_bucket=self.storage.bucket_names["checkpoints"],
                    checkpoints_bucket_arn=self.storage.bucket_arns["checkpoints"],
                    namespace=fsx_namespace,
                    depends_on=[
                        self.cluster.managed_addons["aws-fsx-csi-driver"],
                        self.access.namespaces[fsx_namespace],
                    ],
                ),
                ctx,
                ctx.opts(),
            )
            self._outputs.update(
                fsx_file_system_id=self.fsx.file_system.id,
                fsx_dns_name=self.fsx.file_system.dns_name,
                fsx_mount_name=self.fsx.file_system.mount_name,
                fsx_availability_zone=fsx_zone,
                fsx_pvc=f"{fsx_namespace}/{self.fsx.pvc_name}",
            )

        # --- workloads: training (issue 6) ---------------------------------------------
        prefixes = config.storage.fsx or FsxConfig()
        self.facts = ClusterFacts(
            cluster_name=self.cluster.name,
            environment=config.environment,
            datasets=BucketRef.of(self.storage.datasets),
            checkpoints=BucketRef.of(self.storage.checkpoints),
            models=BucketRef.of(self.storage.models),
            data_key_arn=self.keys.data.arn,
            datasets_prefix=prefixes.datasets_prefix,
            checkpoints_prefix=prefixes.checkpoints_prefix,
            fsx_pvc_name=self.fsx.pvc_name if self.fsx is not None else None,
            pod_identity=config.security.pod_identity,
            oidc_provider_arn=self.cluster.oidc_provider_arn,
            oidc_issuer=self.cluster.oidc_issuer,
        )
        self.training = {
            job.name: TrainingJob(
                f"training-{job.name}",
                TrainingJobArgs(
                    job=job,
                    node_group=config.cluster.node_group(job.node_group),
                    cluster=self.facts,
                    depends_on=[
                        self.access.namespaces[job.namespace],
                        self.addons,
                        *([self.fsx] if self.fsx is not None and job.use_fsx else []),
                    ],
                ),
                ctx,
                ctx.opts(),
            )
            for job in config.training
        }
        if self.training:
            self._outputs.update(
                training_checkpoints={n: t.checkpoint_uri for n, t in self.training.items()}
            )

        # --- workloads: serving (issue 7) ----------------------------------------------
        api_key = (
            pulumi.Output.secret(config.serving_api_key.get_secret_value())
            if config.serving_api_key is not None
            else None
        )
        self.serving = {
            svc.name: VllmService(
                f"serving-{svc.name}",
                VllmServiceArgs(
                    serving=svc,
                    node_group=config.cluster.node_group(svc.node_group),
                    cluster=self.facts,
                    api_key=api_key,
                    keda=config.cluster.addons.keda,
                    metrics=config.cluster.addons.metrics,
                    monitoring_namespace=self.addons.monitoring_namespace,
                    depends_on=[self.addons, self.access.namespaces[svc.namespace]],
                ),
                ctx,
                ctx.opts(),
            )
            for svc in config.serving
        }
        if self.serving:
            self._outputs.update(
                serving_endpoints={name: s.endpoint for name, s in self.serving.items()}
            )

        # --- CI/CD bootstrap: GitHub OIDC roles (issue 9) ------------------------------
        if config.ci is not None:
            self.github = GithubOidc(
                "github-oidc", GithubOidcArgs(config=config.ci, stack=config.stack), ctx, ctx.opts()
            )
            self._outputs.update(
                ci_preview_role_arn=self.github.preview_role.arn,
                ci_deploy_role_arn=self.github.deploy_role.arn,
            )

    def outputs(self) -> dict[str, Any]:
        """Stack outputs: what operators and the next tools need."""
        return dict(self._outputs)


def export_all(platform: Platform) -> None:
    for key, value in platform.outputs().items():
        pulumi.export(key, value)
