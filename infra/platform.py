"""The composition root: builds every component of one environment from its stack config, layer by layer.

Each layer is one method and hands the next typed attributes (no dict lookups by string):
1. foundation: service-linked roles, KMS keys, the VPC, the cluster's IAM roles, the S3 lake;
2. control plane: the EKS cluster (from here on `ctx` carries its Kubernetes provider);
3. CI and deploy path: GitHub OIDC roles and the in-VPC runner, which get access entries;
4. cluster services: access entries and namespaces, GPU node groups, the autoscaler, add-ons;
5. data on the cluster: the data stager role, the CloudTrail trail, FSx for Lustre;
6. workloads: training jobs and vLLM endpoints, handed one `ClusterFacts`.
The stack outputs are computed in one place, `outputs()`, from those attributes.
"""

from __future__ import annotations

from typing import Any

import pulumi

from infra.cluster.addons import Addons, AddonsArgs
from infra.cluster.autoscaler import ClusterAutoscaler, ClusterAutoscalerArgs
from infra.cluster.eks import Cluster, ClusterArgs
from infra.cluster.nodegroups import GpuNodeGroup, GpuNodeGroupArgs
from infra.config import FsxConfig, StackConfig
from infra.config.capacity import quotas as namespace_quotas
from infra.context import Context, make_context
from infra.network.vpc import Network, NetworkArgs
from infra.registry.trainer_image import TrainerRepository, TrainerRepositoryArgs
from infra.security.access import ClusterAccess, ClusterAccessArgs, principal_slug
from infra.security.audit_trail import AuditTrail, AuditTrailArgs
from infra.security.deploy_runner import (
    DeployRunner,
    DeployRunnerArgs,
    connected_network_ingress,
)
from infra.security.github_oidc import GithubOidc, GithubOidcArgs
from infra.security.keys import Keys, KeysArgs
from infra.security.roles import ClusterRoles, ClusterRolesArgs, DataStagerRole, DataStagerRoleArgs
from infra.security.service_roles import (
    ServiceLinkedRoles,
    ServiceLinkedRolesArgs,
    needed_services,
)
from infra.security.statements import staging_statements
from infra.storage.lake import BucketRef, DataLake, DataLakeArgs
from infra.storage.lustre import Lustre, LustreArgs, training_zone
from workloads.facts import ClusterFacts
from workloads.gateway.component import Gateway, GatewayArgs, endpoint_of
from workloads.gateway.config import check as check_gateway
from workloads.serving.service import VllmService, VllmServiceArgs
from workloads.training.job import TrainingJob, TrainingJobArgs


class Platform:
    """All components of one stack. Not a resource itself: components sit directly under
    the stack, so URNs stay short and stable."""

    # optional components: None when the stack does not configure them
    service_linked_roles: ServiceLinkedRoles | None = None
    github: GithubOidc | None = None
    deploy_runner: DeployRunner | None = None
    data_stager: DataStagerRole | None = None
    audit: AuditTrail | None = None
    fsx: Lustre | None = None
    gateway: Gateway | None = None

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.ctx: Context = make_context(config)
        self.cluster_name = f"{self.ctx.prefix}-eks"
        # where `llmcloud stage` writes and FSx imports from, and the checkpoints root
        self.prefixes = config.storage.fsx or FsxConfig()
        self._foundation()
        self._control_plane()
        self._ci()
        self._cluster_services()
        self._data()
        self._workloads()

    # ------------------------------------------------------------------ 1. foundation

    def _foundation(self) -> None:
        config, ctx = self.config, self.ctx
        # Service-linked roles first: the EBS key policy names Auto Scaling's.
        if config.security.create_service_linked_roles:
            self.service_linked_roles = ServiceLinkedRoles(
                "service-linked-roles",
                ServiceLinkedRolesArgs(services=needed_services(config)),
                ctx,
                ctx.opts(),
            )
        self.keys = Keys(
            "keys",
            KeysArgs(
                deletion_window_days=config.security.kms_deletion_window_days,
                key_admin_arns=list(config.security.key_admin_arns),
                service_linked_roles=[self.service_linked_roles]
                if self.service_linked_roles is not None
                else [],
                cloudtrail=config.security.cloudtrail,
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
        self.roles = ClusterRoles(
            "cluster-roles",
            ClusterRolesArgs(cluster_name=self.cluster_name, cluster_key_arn=self.keys.cluster.arn),
            ctx,
            ctx.opts(),
        )
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
        # the trainer image's ECR repository, encrypted like the data (infra/registry)
        self.trainer_repository = TrainerRepository(
            "trainer-image", TrainerRepositoryArgs(kms_key_arn=self.keys.data.arn), ctx, ctx.opts()
        )

    # ------------------------------------------------------------------ 2. control plane

    def _control_plane(self) -> None:
        config, ctx = self.config, self.ctx
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
        self.ctx = ctx.with_provider("kubernetes", self.cluster.k8s_provider)

    # ------------------------------------------------------------------ 3. CI and deploy path

    def _ci(self) -> None:
        """The CI roles and where the Kubernetes layer is deployed from
        (infra/security/deploy_runner.py, README "Deploy path"). The deploying identities get
        their access entries in the next layer, with the people's."""
        config, ctx = self.config, self.ctx
        # logical slug -> (ARN, "admin" or "readonly")
        self.deployers: dict[str, tuple[Any, str]] = {}
        if config.ci is not None:
            self.github = GithubOidc(
                "github-oidc", GithubOidcArgs(config=config.ci, stack=config.stack), ctx, ctx.opts()
            )
            self.deployers = {
                "ci-deploy-role": (self.github.deploy_role.arn, "admin"),
                "ci-preview-role": (self.github.preview_role.arn, "readonly"),
            }
        self.deployer_arns: list[Any] = [
            arn for arn, kind in self.deployers.values() if kind == "admin"
        ]
        for arn in config.deploy.deployer_arns:
            self.deployer_arns.append(arn)
            if arn not in config.security.cluster_admin_arns:
                self.deployers[principal_slug(arn)] = (arn, "admin")
        for arn in config.deploy.reader_arns:  # refreshing previews and drift (view + Secrets)
            self.deployers[principal_slug(arn)] = (arn, "readonly")
        if config.deploy.runner is not None:
            self.deploy_runner = DeployRunner(
                "deploy-runner",
                DeployRunnerArgs(
                    config=config.deploy.runner,
                    cluster_name=self.cluster.name,
                    vpc_id=self.network.vpc_id,
                    subnet_ids=self.network.private_subnet_ids,
                    cluster_security_group_id=self.cluster.node_security_group_id,
                    logs_key_arn=self.keys.logs.arn,
                    log_retention_days=config.cluster.log_retention_days,
                    deployer_arns=self.deployer_arns,
                ),
                ctx,
                ctx.opts(),
            )
        if config.deploy.kubernetes_from == "connected_network":
            connected_network_ingress(
                "deploy-network",
                cidrs=[str(c) for c in config.deploy.connected_cidrs],
                cluster_name=self.cluster.name,
                cluster_security_group_id=self.cluster.node_security_group_id,
                deployer_arns=self.deployer_arns,
                opts=ctx.opts(),
            )

    # ------------------------------------------------------------------ 4. cluster services

    def _cluster_services(self) -> None:
        config, ctx = self.config, self.ctx
        security = config.security
        # Access entries and the workload namespaces (Pod Security, quotas, limits,
        # default-deny NetworkPolicies) come first: with API authentication and no bootstrap
        # admin, nothing reaches the Kubernetes API (Helm included) before the deployer's
        # access entry exists. Objects in a namespace depend on `self.access.namespaces[name]`.
        self.access = ClusterAccess(
            "cluster-access",
            ClusterAccessArgs(
                cluster_name=self.cluster.name,
                admin_arns=list(security.cluster_admin_arns),
                readonly_arns=list(security.cluster_readonly_arns),
                deployers=self.deployers,
                namespaces=list(security.namespaces),
                vpc_cidr=str(config.network.vpc_cidr),
                kubernetes_version=config.cluster.version,
                pod_identity=security.pod_identity == "pod_identity",
                quotas={name: q.hard() for name, q in namespace_quotas(config).items()},
            ),
            ctx,
            ctx.opts(),
        )
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
                default_tags=config.default_tags,
                # add-on pods that find no room get a node from the autoscaler
                depends_on=[*self.cluster.ready, *self.access.ready, self.autoscaler],
            ),
            ctx,
            ctx.opts(),
        )

    # ------------------------------------------------------------------ 5. data on the cluster

    def _data(self) -> None:
        config, ctx = self.config, self.ctx
        security, lake = config.security, self.storage
        if security.data_stager_arns:
            # `llmcloud stage` writes where FSx imports from: the datasets prefix.
            self.data_stager = DataStagerRole(
                "data-stager",
                DataStagerRoleArgs(
                    principal_arns=list(security.data_stager_arns),
                    statements=staging_statements(
                        lake.datasets.arn,
                        self.prefixes.datasets_prefix,
                        self.keys.data.arn,
                        region=ctx.region,
                    ),
                ),
                ctx,
                ctx.opts(),
            )
        if security.cloudtrail:
            self.audit = AuditTrail(
                "audit-trail",
                AuditTrailArgs(
                    log_bucket_name=lake.logs.bucket,
                    log_bucket_policy=lake.logs_bucket_policy,
                    data_bucket_arns=[
                        b.arn for b in (lake.datasets, lake.checkpoints, lake.models)
                    ],
                    logs_key_arn=self.keys.logs.arn,
                    cloudwatch_retention_days=security.audit_log_retention_days,
                ),
                ctx,
                ctx.opts(),
            )
        if config.storage.fsx is not None:
            # One static PV binds one claim: it lives in the (first) training namespace.
            fsx_namespace = config.fsx_namespace
            self.fsx = Lustre(
                "lustre",
                LustreArgs(
                    config=config.storage.fsx,
                    vpc_id=self.network.vpc_id,
                    subnet_id=self.network.private_subnet_by_zone[training_zone(config)],
                    client_security_group_id=self.cluster.node_security_group_id,
                    kms_key_arn=self.keys.data.arn,
                    datasets=BucketRef.of(lake.datasets),
                    checkpoints=BucketRef.of(lake.checkpoints),
                    namespace=fsx_namespace,
                    depends_on=[
                        self.cluster.managed_addons["aws-fsx-csi-driver"],
                        self.access.namespaces[fsx_namespace],
                    ],
                ),
                ctx,
                ctx.opts(),
            )

    # ------------------------------------------------------------------ 6. workloads

    def _workloads(self) -> None:
        config, ctx = self.config, self.ctx
        self.facts = ClusterFacts(
            cluster_name=self.cluster.name,
            environment=config.environment,
            datasets=BucketRef.of(self.storage.datasets),
            checkpoints=BucketRef.of(self.storage.checkpoints),
            models=BucketRef.of(self.storage.models),
            data_key_arn=self.keys.data.arn,
            datasets_prefix=self.prefixes.datasets_prefix,
            checkpoints_prefix=self.prefixes.checkpoints_prefix,
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
                    checkpoint_write_mb_per_s=config.storage.fsx.throughput_mb_per_s
                    if config.storage.fsx is not None and job.use_fsx
                    else None,
                ),
                ctx,
                ctx.opts(),
            )
            for job in config.training
        }
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
        if config.gateway is not None:
            # one HTTPS address in front of every endpoint (workloads/gateway)
            gw = config.gateway
            check_gateway(config)  # its namespace and the teams' models, against the stack
            self.gateway = Gateway(
                "gateway",
                GatewayArgs(
                    config=gw,
                    endpoints=[endpoint_of(s, self.serving[s.name]) for s in config.serving],
                    cluster=self.facts,
                    vpc_cidr=str(config.network.vpc_cidr),
                    secrets_key_arn=self.keys.cluster.arn,
                    logs_key_arn=self.keys.logs.arn,
                    logs_bucket=BucketRef.of(self.storage.logs),
                    depends_on=[
                        self.addons,
                        self.access.namespaces[gw.namespace],
                        *self.serving.values(),
                    ],
                ),
                ctx,
                ctx.opts(),
            )

    # ------------------------------------------------------------------ outputs

    def outputs(self) -> dict[str, Any]:
        """Stack outputs: what operators and the next tools need."""
        config = self.config
        out: dict[str, Any] = {
            "region": config.region,
            "environment": config.environment,
            "cluster_name": self.cluster_name,
            "vpc_id": self.network.vpc_id,
            "private_subnet_ids": self.network.private_subnet_ids,
            "kms_key_arns": self.keys.arns(),
            "bucket_names": self.storage.bucket_names,
            "trainer_repository_url": self.trainer_repository.repository_url,
        }
        if self.github is not None:
            out.update(
                ci_preview_role_arn=self.github.preview_role.arn,
                ci_deploy_role_arn=self.github.deploy_role.arn,
            )
        out.update(
            kubernetes_layer=kubernetes_layer(
                config, self.deploy_runner, self.deployer_arns, self.cluster.k8s_provider.urn
            ),
            namespaces=sorted(self.access.namespaces),
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
        if self.data_stager is not None:
            out.update(
                data_stager_role_arn=self.data_stager.role_arn,
                datasets_stage_uri=pulumi.Output.concat(
                    "s3://", self.storage.datasets.bucket, "/", self.prefixes.datasets_prefix
                ),
            )
        if self.audit is not None:
            out.update(audit_trail_arn=self.audit.trail.arn)
        if self.fsx is not None:
            out.update(
                fsx_file_system_id=self.fsx.file_system.id,
                fsx_dns_name=self.fsx.file_system.dns_name,
                fsx_mount_name=self.fsx.file_system.mount_name,
                fsx_availability_zone=training_zone(config),
                fsx_pvc=f"{self.fsx.namespace}/{self.fsx.pvc_name}",
            )
        if self.training:
            out.update(training_checkpoints={n: t.checkpoint_uri for n, t in self.training.items()})
        if self.serving:
            out.update(serving_endpoints={n: s.endpoint for n, s in self.serving.items()})
        if self.gateway is not None:
            out.update(
                gateway_url=self.gateway.url,
                gateway_audit_log_group=self.gateway.audit_log_group.name,
                gateway_team_key_secrets={t: s.arn for t, s in self.gateway.team_secrets.items()},
                gateway_load_balancer=self.gateway.load_balancer_hostname,
            )
            if self.gateway.certificate is not None:  # the DNS records that validate it
                out.update(
                    gateway_certificate_validation=self.gateway.certificate.domain_validation_options
                )
        return out


def kubernetes_layer(
    config: StackConfig,
    runner: DeployRunner | None,
    deployer_arns: list[Any],
    kubernetes_provider_urn: Any,
) -> dict[str, Any]:
    """Where the Kubernetes layer is deployed from, and by whom (the plan's output).
    `bootstrap_exclude`: the first `pulumi up` of a new stack, from outside the VPC, runs with
    `--exclude <it> --exclude-dependents` (README, "Deploy path")."""
    where = config.deploy.kubernetes_from
    out: dict[str, Any] = {
        "deployed_from": where or "undeclared",
        "endpoint": "public" if config.cluster.endpoint_public_access else "private",
        "deployers": [*deployer_arns, *config.security.cluster_admin_arns],
        "bootstrap_exclude": kubernetes_provider_urn,
    }
    if runner is not None:
        out.update(runner_project=runner.project.name, runs_on=runner.runs_on)
    if where == "connected_network":
        out.update(connected_cidrs=[str(c) for c in config.deploy.connected_cidrs])
    return out


def export_all(platform: Platform) -> None:
    for key, value in platform.outputs().items():
        pulumi.export(key, value)
