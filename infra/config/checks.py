"""Checks across the sections of one stack config: the region and its zones, node groups
against the catalog's offerings, workloads against their node groups and namespaces, FSx,
admission (`infra/config/capacity.py`), prod's hardening and the deploy path.

`StackConfig` runs `check_stack` after each section validated itself; a check raises the
schema's `_fail` error, which names the key path, the value and what is allowed. To add a
check across sections, add a function here and call it from `check_stack`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from infra.catalog import Region, load_catalog
from infra.config.schema import _fail

if TYPE_CHECKING:
    from infra.config.schema import GpuNodeGroupConfig, StackConfig

PROD_MIN_ZONES = 3


def check_stack(config: StackConfig) -> None:
    """Every cross-section check, in the order a user would fix them."""
    region = check_region(config)
    check_fsx_namespace(config)
    check_node_groups(config, region)
    check_workloads(config)
    check_admission(config)
    check_fsx_zone(config)
    check_prod(config)
    check_deploy_path(config)


def check_region(config: StackConfig) -> Region:
    catalog = load_catalog()
    if config.region not in catalog.regions:
        raise _fail(
            "region", config.region, "regions in the catalog: " + ", ".join(catalog.regions)
        )
    region = catalog.regions[config.region]
    for i, zone in enumerate(config.network.availability_zones):
        if zone not in region.zones:
            raise _fail(
                f"network.availability_zones[{i}]",
                zone,
                f"{config.region} has zones " + ", ".join(region.zones),
            )
    return region


def check_fsx_namespace(config: StackConfig) -> None:
    if config.storage.fsx is not None and config.fsx_namespace is None:
        raise _fail(
            "storage.fsx",
            config.storage.fsx.model_dump(mode="json"),
            "needs a namespace with purpose: training in security.namespaces "
            "(its PersistentVolumeClaim lives there)",
        )


def check_node_groups(config: StackConfig, region: Region) -> None:
    zones = config.network.availability_zones
    for i, group in enumerate(config.cluster.gpu_node_groups):
        key = f"cluster.gpu_node_groups[{i}]"
        itype = group.resolved_instance_type
        if group.reserved:
            zone = group.capacity.availability_zone
            if zone not in zones:
                raise _fail(
                    f"{key}.capacity.availability_zone",
                    zone,
                    "must be one of network.availability_zones: " + ", ".join(zones),
                )
        for j, zone in enumerate(group.availability_zones or []):
            if zone not in region.zones:
                raise _fail(
                    f"{key}.availability_zones[{j}]",
                    zone,
                    f"{config.region} has zones " + ", ".join(region.zones),
                )
            if zone not in zones:
                raise _fail(
                    f"{key}.availability_zones[{j}]",
                    zone,
                    "must be one of network.availability_zones: " + ", ".join(zones),
                )
        group_zones = group.zones(config.network, config.region)
        if not group_zones:
            raise _fail(
                f"{key}.gpu",
                group.gpu,
                f"{itype} is offered in none of this VPC's zones (" + ", ".join(zones) + ")",
            )
        if group.efa_enabled and not group.reserved and len(group_zones) != 1:
            raise _fail(
                f"{key}.availability_zones",
                group.availability_zones,
                "an EFA group runs in one zone (its cluster placement group); name exactly one",
            )
        for zone in group_zones:
            if not region.offers(itype, zone):
                offered = [z for z in region.offerings.get(itype, ()) if z in zones]
                raise _fail(
                    f"{key}.availability_zones"
                    if not group.reserved
                    else f"{key}.capacity.availability_zone",
                    zone,
                    f"{itype} ({group.gpu}) is not offered in {zone}; in this VPC's zones it is "
                    f"offered in: {', '.join(offered) or 'none'}",
                )


def workload_group(config: StackConfig, key: str, name: str) -> GpuNodeGroupConfig:
    """The GPU node group a workload names, or the error listing the groups there are."""
    group = config.cluster.node_group(name)
    if group is None:
        groups = ", ".join(g.name for g in config.cluster.gpu_node_groups)
        raise _fail(
            f"{key}.node_group",
            name,
            f"must name a GPU node group: {groups}"
            if groups
            else "the cluster has no gpu_node_groups",
        )
    return group


def _check_namespace(key: str, namespace: str, namespaces: dict[str, Any]) -> None:
    if namespace not in namespaces:
        raise _fail(f"{key}.namespace", namespace, "must be one of " + ", ".join(namespaces))


def check_workloads(config: StackConfig) -> None:
    namespaces = {ns.name: ns for ns in config.security.namespaces}
    for i, job in enumerate(config.training):
        key = f"training[{i}]"
        group = workload_group(config, key, job.node_group)
        _check_namespace(key, job.namespace, namespaces)
        problem = job.node_group_problem(group)
        if problem is not None:
            raise _fail(f"{key}.{problem[0]}", problem[1], problem[2])
        if job.nodes > group.max_size:
            raise _fail(
                f"{key}.nodes",
                job.nodes,
                f"node group {group.name} scales to at most {group.max_size}",
            )
        if job.use_fsx and config.storage.fsx is None:
            raise _fail(f"{key}.use_fsx", True, "needs storage.fsx, or set use_fsx: false")
        if job.use_fsx and job.namespace != config.fsx_namespace:
            raise _fail(
                f"{key}.namespace",
                job.namespace,
                f"jobs that mount FSx run in {config.fsx_namespace!r}, where its one "
                "PersistentVolumeClaim is (or set use_fsx: false)",
            )
    for i, svc in enumerate(config.serving):
        key = f"serving[{i}]"
        group = workload_group(config, key, svc.node_group)
        _check_namespace(key, svc.namespace, namespaces)
        if config.environment != "dev" and not svc.api_key_required:
            raise _fail(
                f"{key}.api_key_required",
                False,
                f"an API key is required in {config.environment}",
            )
        # lazy: the serving package imports the config
        from workloads.serving.fit import FitError, check_fit

        try:
            check_fit(svc, group)
        except FitError as e:
            raise _fail(f"{key}.{e.field}", e.value, e.message) from None


def check_admission(config: StackConfig) -> None:
    """Workloads at max scale against their namespaces' quotas and node groups' GPUs (the
    admission checks of `infra/config/capacity.py`)."""
    # lazy: capacity reads the workloads' pod sizes, whose modules import the config
    from infra.config.capacity import admission_problem

    problem = admission_problem(config)
    if problem is not None:
        raise _fail(*problem)


def check_fsx_zone(config: StackConfig) -> None:
    if config.storage.fsx and config.storage.fsx.availability_zone is not None:
        zone = config.storage.fsx.availability_zone
        if zone not in config.network.availability_zones:
            raise _fail(
                "storage.fsx.availability_zone",
                zone,
                "must be one of network.availability_zones: "
                + ", ".join(config.network.availability_zones),
            )


def check_prod(config: StackConfig) -> None:
    """Prod's hardening: a private API endpoint and three zones."""
    if config.environment != "prod":
        return
    if config.cluster.endpoint_public_access:
        raise _fail(
            "cluster.endpoint_public_access", True, "prod clusters have a private endpoint only"
        )
    if len(config.network.availability_zones) < PROD_MIN_ZONES:
        raise _fail(
            "network.availability_zones",
            config.network.availability_zones,
            f"prod spans {PROD_MIN_ZONES} zones",
        )


def check_deploy_path(config: StackConfig) -> None:
    if config.deploy.kubernetes_from == "public_endpoint" and not (
        config.cluster.endpoint_public_access
    ):
        raise _fail(
            "deploy.kubernetes_from",
            "public_endpoint",
            "the cluster's endpoint is private (cluster.endpoint_public_access: false); "
            "deploy from codebuild_runner or connected_network",
        )
    people = (*config.security.cluster_admin_arns, *config.security.cluster_readonly_arns)
    for i, arn in enumerate(config.deploy.reader_arns):
        if arn in people:
            raise _fail(
                f"deploy.reader_arns[{i}]",
                arn,
                "also in security.cluster_admin_arns/cluster_readonly_arns; a principal has one "
                "access entry per cluster",
            )
