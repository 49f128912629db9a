"""The typed stack config: everything an environment may vary, read from the `llmcloud:`
namespace of `stacks/Pulumi.<stack>.yaml` (plus `aws:region`).

Defaults are the hardened ones; a stack file loosens them on purpose (dev opens the API
endpoint to a CIDR allowlist, runs one NAT gateway). Bad config raises `ConfigError`, whose
message names the key path, the value and what is allowed, before any resource is declared.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from infra import pins
from infra.catalog import load_catalog
from infra.config.eks_versions import load_eks_calendar, plan_day
from infra.contracts import KUBE_SYSTEM, MONITORING_NAMESPACE, RESERVED_NAMESPACES

NAMESPACE = "llmcloud"
ENVIRONMENTS = ("dev", "staging", "prod")
CLOUDWATCH_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)
FSX_THROUGHPUT_MBPS_PER_TIB = (125, 250, 500, 1000)
CONTROL_PLANE_LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")
REQUIRED_CONTROL_PLANE_LOGS = ("api", "audit", "authenticator")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_IAM_PRINCIPAL_ARN = re.compile(
    r"^arn:aws[a-z-]*:(iam|sts)::\d{12}:(root|user/.+|role/.+|assumed-role/.+|group/.+)$"
)
_RESERVATION_ID = re.compile(r"^cr-[0-9a-f]{8}([0-9a-f]{9})?$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
# Label domains whose keys node groups set themselves (or Kubernetes/EKS do).
_RESERVED_LABEL_DOMAINS = (
    "llmcloud.io",
    "nvidia.com",
    "vpc.amazonaws.com",
    "eks.amazonaws.com",
    "kubernetes.io",
    "k8s.io",
)


def _reserved_label(key: str) -> bool:
    """Whether a label key lies in a domain (or subdomain) the platform or Kubernetes sets."""
    if "/" not in key:
        return False
    domain = key.split("/", 1)[0]
    return any(domain == d or domain.endswith("." + d) for d in _RESERVED_LABEL_DOMAINS)


_GITHUB_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")

# What a `Field(pattern=...)` means, for the error text (the pattern itself follows it).
PATTERN_MEANINGS: dict[str, str] = {
    _DNS_LABEL.pattern: "a lowercase DNS label (a-z, 0-9, '-', starting and ending with a letter "
    "or digit, at most 63 characters)",
    _IAM_PRINCIPAL_ARN.pattern: "an IAM principal ARN, like arn:aws:iam::111122223333:role/admin",
    _GITHUB_REPOSITORY.pattern: "a GitHub repository as owner/name",
}

_IMAGE_PINNED = re.compile(r"^[^\s:@]+(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$")


class ConfigError(Exception):
    """A stack config that cannot be used; the message is meant for the user as is."""


def _fail(field: str, value: Any, allowed: str) -> PydanticCustomError:
    """An error for `field` (relative to the model raising it) that the formatter prints as
    `<path>.<field> = <value>: <allowed>`."""
    return PydanticCustomError(
        "llmcloud", "{allowed}", {"field": field, "value": value, "allowed": allowed}
    )


class Model(BaseModel):
    """Base for config sections: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


DnsLabel = Annotated[str, Field(pattern=_DNS_LABEL.pattern, max_length=40)]
PrincipalArn = Annotated[str, Field(pattern=_IAM_PRINCIPAL_ARN.pattern)]
RetentionDays = Literal[CLOUDWATCH_RETENTION_DAYS]  # type: ignore[valid-type]


# --------------------------------------------------------------------------- network


class NetworkConfig(Model):
    """VPC layout. Private subnets are large because EKS pods take VPC IPs."""

    vpc_cidr: ipaddress.IPv4Network = Field(
        default=ipaddress.IPv4Network("10.0.0.0/16"),
        description="The VPC's IPv4 range: a private (RFC 1918) /16 to /20",
    )
    availability_zones: list[str] = Field(
        description="2 or 3 zones of the region (prod: 3); one private and one public subnet each",
        min_length=2,
        max_length=3,
    )
    private_subnet_cidrs: list[ipaddress.IPv4Network] | None = Field(
        default=None,
        description="One CIDR per zone for nodes and pods (/22 or larger: every pod takes a "
        "VPC IP). Unset: the first quarters of the VPC, a /18 each in a /16",
    )
    public_subnet_cidrs: list[ipaddress.IPv4Network] | None = Field(
        default=None,
        description="One CIDR per zone for NAT gateways and public load balancers. Unset: a "
        "/24 per zone from the VPC's last quarter",
    )
    nat_gateways: Literal["single", "per_az"] = Field(
        default="per_az",
        description="`per_az`: one NAT gateway per zone (a zone outage keeps egress "
        "elsewhere); `single`: one for the VPC (cheaper, dev)",
    )
    interface_endpoints: bool = Field(
        default=True,
        description="VPC interface endpoints for ECR (api, dkr), STS, EC2, CloudWatch Logs "
        "and EKS Auth, so nodes pull and authenticate without NAT",
    )
    flow_logs_retention_days: RetentionDays = Field(
        default=365,
        description="Days CloudWatch keeps the VPC flow logs (KMS-encrypted with the logs key)",
    )

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc_size(cls, v: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if not 16 <= v.prefixlen <= 20:
            raise _fail("", str(v), "the VPC prefix must be between /16 and /20")
        if not v.is_private:
            raise _fail("", str(v), "the VPC CIDR must be a private (RFC 1918) range")
        return v

    @model_validator(mode="after")
    def _subnets(self) -> NetworkConfig:
        if len(set(self.availability_zones)) != len(self.availability_zones):
            raise _fail("availability_zones", self.availability_zones, "zones must be distinct")
        n = len(self.availability_zones)
        named: list[tuple[str, ipaddress.IPv4Network]] = []
        for key in ("private_subnet_cidrs", "public_subnet_cidrs"):
            cidrs = getattr(self, key)
            if cidrs is None:
                continue
            if len(cidrs) != n:
                raise _fail(key, [str(c) for c in cidrs], f"give one CIDR per zone ({n})")
            for i, cidr in enumerate(cidrs):
                if not cidr.subnet_of(self.vpc_cidr):
                    raise _fail(
                        f"{key}[{i}]", str(cidr), f"must lie inside vpc_cidr {self.vpc_cidr}"
                    )
                named.append((f"{key}[{i}]", cidr))
        cidrs_all = named or [
            *((f"private[{i}]", c) for i, c in enumerate(self.private_subnets)),
            *((f"public[{i}]", c) for i, c in enumerate(self.public_subnets)),
        ]
        for i, (key_a, a) in enumerate(cidrs_all):
            for key_b, b in cidrs_all[i + 1 :]:
                if a.overlaps(b):
                    raise _fail(key_a, str(a), f"overlaps {key_b} ({b}); subnets must not overlap")
        if self.private_subnet_cidrs is not None and self.private_subnet_cidrs[0].prefixlen > 22:
            raise _fail(
                "private_subnet_cidrs[0]",
                str(self.private_subnet_cidrs[0]),
                "private subnets must be /22 or larger: every pod takes a VPC IP",
            )
        return self

    @property
    def private_subnets(self) -> list[ipaddress.IPv4Network]:
        """Explicit CIDRs, or the first quarters of the VPC: a /18 each in a /16."""
        if self.private_subnet_cidrs is not None:
            return list(self.private_subnet_cidrs)
        quarters = list(self.vpc_cidr.subnets(prefixlen_diff=2))
        return quarters[: len(self.availability_zones)]

    @property
    def public_subnets(self) -> list[ipaddress.IPv4Network]:
        """Explicit CIDRs, or small subnets (a /24 in a /16) from the VPC's last quarter."""
        if self.public_subnet_cidrs is not None:
            return list(self.public_subnet_cidrs)
        last_quarter = list(self.vpc_cidr.subnets(prefixlen_diff=2))[-1]
        return list(last_quarter.subnets(new_prefix=self.vpc_cidr.prefixlen + 8))[
            : len(self.availability_zones)
        ]


# --------------------------------------------------------------------------- security

# IAM principals that may appear in key policies, trust policies and EKS access entries:
# roles and users (groups are not principals; STS session ARNs change with every session).
_ROLE_OR_USER_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]{1,512}$")
_ACCOUNT_ROOT_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:root$")
# A Kubernetes resource quantity: 512, 1.5, 500m, 4Ti, 16Gi, 1e3.
_K8S_QUANTITY = re.compile(r"^\d+(\.\d+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|e\d+)?$")
_RESERVED_NAMESPACES = RESERVED_NAMESPACES


class NamespaceConfig(Model):
    """A Kubernetes namespace for a team or workload kind, with its quotas.

    Pod Security Admission enforces `pod_security` (default: `restricted` for serving and
    data, `baseline` for training, whose images often run as root; GPU pods need no
    privilege). Every namespace denies all traffic except what its NetworkPolicies allow."""

    name: DnsLabel = Field(
        description="The namespace (not default, monitoring or kube-*)",
    )
    purpose: Literal["training", "serving", "data", "gateway"] = Field(
        description="What runs there: `training`, `serving`, `data` or `gateway` (the model "
        "gateway); sets the default Pod Security level (baseline for training, restricted "
        "otherwise)",
    )
    gpu_quota: int = Field(
        description="ResourceQuota on `nvidia.com/gpu` requests in the namespace (GPUs; 0: none); "
        "unset: derived from the node groups its workloads run on (infra/config/capacity.py)",
        default=0,
        ge=0,
    )
    cpu_quota: str = Field(
        default="512",
        description="ResourceQuota on CPU requests, a Kubernetes quantity (`512`, `500m`); "
        "unset: derived from the node groups its workloads run on",
    )
    memory_quota: str = Field(
        default="4Ti",
        description="ResourceQuota on memory requests, a Kubernetes quantity (`4Ti`, `64Gi`); "
        "unset: derived from the node groups its workloads run on",
    )
    efa_quota: int = Field(
        default=0,
        ge=0,
        description="ResourceQuota on `vpc.amazonaws.com/efa` requests (EFA interfaces); unset: "
        "derived from the node groups its workloads run on",
    )
    pod_quota: int = Field(description="ResourceQuota on the number of pods", default=500, ge=1)
    pod_security: Literal["restricted", "baseline"] | None = Field(
        default=None,
        description="Pod Security Admission level it enforces. Unset: `baseline` for "
        "training, `restricted` for serving and data",
    )
    metrics_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default=[8000, 9090],
        description="Ports the monitoring namespace may scrape (NetworkPolicy)",
    )
    allow_from_namespaces: list[DnsLabel] = Field(
        default=[],
        description="Namespaces (of security.namespaces, or kube-system / monitoring) whose "
        "pods may connect to this one",
    )

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v in _RESERVED_NAMESPACES or v.startswith("kube-"):
            raise _fail(
                "",
                v,
                "reserved namespace; pick another name (not default, monitoring or kube-*)",
            )
        return v

    @field_validator("cpu_quota", "memory_quota")
    @classmethod
    def _quantity(cls, v: str) -> str:
        if not _K8S_QUANTITY.match(v):
            raise _fail("", v, "a Kubernetes quantity, like 512, 500m, 4Ti or 64Gi")
        return v

    @property
    def pod_security_level(self) -> str:
        if self.pod_security is not None:
            return self.pod_security
        return "baseline" if self.purpose == "training" else "restricted"


class SecurityConfig(Model):
    """KMS, IAM and Kubernetes access, and the audit trail.

    `key_admin_arns` administer (not use) the KMS keys; `cluster_admin_arns` and
    `cluster_readonly_arns` get EKS access entries (cluster admin, view);
    `data_stager_arns` may assume the data-staging role that `llmcloud stage` uses to
    write the datasets prefix. All are IAM role or user ARNs."""

    kms_deletion_window_days: int = Field(
        description="Days between scheduling a KMS key's deletion and its deletion",
        default=30,
        ge=7,
        le=30,
    )
    key_admin_arns: list[str] = Field(
        default=[],
        description="IAM role or user ARNs that administer (not use) the KMS keys",
    )
    cluster_admin_arns: list[str] = Field(
        default=[],
        description="IAM role or user ARNs with an EKS access entry for cluster admin "
        "(AmazonEKSClusterAdminPolicy). Whoever runs `pulumi up` must be one",
    )
    cluster_readonly_arns: list[str] = Field(
        default=[],
        description="IAM role or user ARNs with a read-only EKS access entry (AmazonEKSViewPolicy)",
    )
    data_stager_arns: list[str] = Field(
        default=[],
        description="IAM role/user ARNs or account roots that may assume the data-staging "
        "role `llmcloud stage` uses (the role exists only when this is set)",
    )
    pod_identity: Literal["pod_identity", "irsa"] = Field(
        default="pod_identity",
        description="How pods get AWS roles: `pod_identity` (EKS Pod Identity) or `irsa` (IAM"
        " roles for service accounts through the cluster's OIDC provider)",
    )
    cloudtrail: bool = Field(
        default=True,
        description="A multi-region CloudTrail trail for the stack (management events and S3 "
        "data events on the data buckets)",
    )
    create_service_linked_roles: bool = Field(
        default=True,
        description="create the service-linked roles the stack depends on (Auto Scaling, EKS "
        "node groups, ELB, Spot) when the account lacks them; off where an account baseline "
        "owns them (an existing one makes the create fail: import it or switch this off)",
    )
    audit_log_retention_days: RetentionDays = Field(
        default=365,
        description="Days CloudWatch keeps the CloudTrail log group",
    )
    namespaces: list[NamespaceConfig] = Field(
        default=[
            NamespaceConfig(name="training", purpose="training", gpu_quota=64),
            NamespaceConfig(name="serving", purpose="serving", gpu_quota=32),
        ],
        description="Kubernetes namespaces with quotas and network policies (keys: the "
        "namespaces table)",
    )

    @field_validator("key_admin_arns", "cluster_admin_arns", "cluster_readonly_arns")
    @classmethod
    def _roles_or_users(cls, v: list[str]) -> list[str]:
        for i, arn in enumerate(v):
            if not isinstance(arn, str) or not _ROLE_OR_USER_ARN.match(arn):
                raise _fail(
                    f"[{i}]",
                    arn,
                    "must be an IAM role or user ARN, like "
                    "arn:aws:iam::111122223333:role/platform-admin",
                )
            if v.index(arn) != i:
                raise _fail(f"[{i}]", arn, "listed twice")
        return v

    @field_validator("data_stager_arns")
    @classmethod
    def _stagers(cls, v: list[str]) -> list[str]:
        for i, arn in enumerate(v):
            if not isinstance(arn, str) or not (
                _ROLE_OR_USER_ARN.match(arn) or _ACCOUNT_ROOT_ARN.match(arn)
            ):
                raise _fail(
                    f"[{i}]",
                    arn,
                    "must be an IAM role or user ARN (arn:aws:iam::111122223333:role/ci-stager) "
                    "or an account root (arn:aws:iam::111122223333:root)",
                )
            if v.index(arn) != i:
                raise _fail(f"[{i}]", arn, "listed twice")
        return v

    @model_validator(mode="after")
    def _namespaces(self) -> SecurityConfig:
        for j, arn in enumerate(self.cluster_readonly_arns):
            if arn in self.cluster_admin_arns:
                raise _fail(
                    f"cluster_readonly_arns[{j}]",
                    arn,
                    "also in cluster_admin_arns; a principal has one access entry per cluster",
                )
        names = [ns.name for ns in self.namespaces]
        for i, ns in enumerate(self.namespaces):
            if names.count(ns.name) > 1:
                raise _fail(f"namespaces[{i}].name", ns.name, "namespace names must be unique")
            for j, other in enumerate(ns.allow_from_namespaces):
                if other not in names and other not in (KUBE_SYSTEM, MONITORING_NAMESPACE):
                    raise _fail(
                        f"namespaces[{i}].allow_from_namespaces[{j}]",
                        other,
                        "must name a namespace of security.namespaces ("
                        + ", ".join(names)
                        + ") or kube-system / monitoring",
                    )
        return self


# --------------------------------------------------------------------------- cluster


# EC2 user guide, Capacity Blocks for ML: 1 to 14 days, or up to 182 days in 7-day steps.
_CAPACITY_BLOCK_MAX_DAYS = 182


class CapacityConfig(Model):
    """Where a node group's instances come from."""

    type: Literal["on_demand", "spot", "reservation", "capacity_block"] = Field(
        default="on_demand",
        description="Where instances come from: `on_demand`, `spot` (serving kinds), "
        "`reservation` (an On-Demand Capacity Reservation) or `capacity_block` "
        "(EC2 Capacity Blocks for ML, training kinds)",
    )
    reservation_id: str | None = Field(
        default=None,
        description="The reservation or Capacity Block id (`cr-...`); required for "
        "reservation and capacity_block",
    )
    availability_zone: str | None = Field(
        default=None,
        description="The reservation's zone (reservation and capacity_block only); the group "
        "is pinned to it",
    )
    # a Capacity Block's window (ISO 8601 in UTC, `2026-12-07T11:30:00Z`): scheduled actions
    # on the group's ASG bring every node of the block at the start and none from an hour
    # before the end; unset: the Cluster Autoscaler sizes the group
    start_utc: datetime | None = Field(
        default=None,
        description="A Capacity Block's start (ISO 8601 UTC, `2026-12-07T11:30:00Z`); with "
        "end_utc, scheduled actions scale the group up inside the window",
    )
    end_utc: datetime | None = Field(
        default=None,
        description="A Capacity Block's end (ISO 8601 UTC); the group scales back to 0 before it",
    )

    @model_validator(mode="after")
    def _reserved(self) -> CapacityConfig:
        if self.type in ("reservation", "capacity_block"):
            if not self.reservation_id:
                raise _fail("reservation_id", None, f"required when type is {self.type}")
            if not self.availability_zone:
                raise _fail(
                    "availability_zone",
                    None,
                    f"required when type is {self.type}: a reserved group is pinned to the "
                    "reservation's zone",
                )
        elif self.reservation_id is not None:
            raise _fail(
                "reservation_id",
                self.reservation_id,
                "spot instances cannot run in a capacity reservation or Capacity Block; use "
                "type: reservation or capacity_block, or drop reservation_id"
                if self.type == "spot"
                else "only allowed when type is reservation or capacity_block",
            )
        elif self.availability_zone is not None:
            raise _fail(
                "availability_zone",
                self.availability_zone,
                "only for reservation / capacity_block (the reservation's zone); pick the zones "
                "of an on_demand or spot group with the group's availability_zones",
            )
        if self.reservation_id is not None and not _RESERVATION_ID.match(self.reservation_id):
            raise _fail(
                "reservation_id", self.reservation_id, "must look like cr-0123456789abcdef0"
            )
        return self

    @model_validator(mode="after")
    def _block_window(self) -> CapacityConfig:
        given = {"start_utc": self.start_utc, "end_utc": self.end_utc}
        for key, moment in given.items():
            if moment is None:
                continue
            if self.type != "capacity_block":
                raise _fail(key, str(moment), "only for type: capacity_block (the block's window)")
            if moment.utcoffset() != timedelta(0):
                raise _fail(key, str(moment), "a UTC time with its zone, like 2026-12-07T11:30:00Z")
        if (self.start_utc is None) != (self.end_utc is None):
            missing = "end_utc" if self.end_utc is None else "start_utc"
            raise _fail(missing, None, "give both start_utc and end_utc of the Capacity Block")
        if self.start_utc is not None and self.end_utc is not None:
            if self.end_utc <= self.start_utc:
                raise _fail(
                    "end_utc",
                    str(self.end_utc),
                    f"must be after start_utc ({self.start_utc.isoformat()})",
                )
            if self.end_utc - self.start_utc > timedelta(days=_CAPACITY_BLOCK_MAX_DAYS):
                raise _fail(
                    "end_utc",
                    str(self.end_utc),
                    f"a Capacity Block lasts at most {_CAPACITY_BLOCK_MAX_DAYS} days",
                )
        return self


class ScalingMixin(Model):
    min_size: int = Field(description="Fewest nodes (the cost estimate's idle)", default=0, ge=0)
    desired_size: int | None = Field(
        description="Nodes at creation. Unset: min_size", default=None, ge=0
    )
    max_size: int = Field(
        description="Most nodes (the cost estimate's max and the GPU budget)", default=1, ge=1
    )

    @model_validator(mode="after")
    def _sizes(self) -> ScalingMixin:
        if self.max_size < self.min_size:
            raise _fail("max_size", self.max_size, f"must be ≥ min_size ({self.min_size})")
        d = self.desired_size
        if d is not None and not self.min_size <= d <= self.max_size:
            raise _fail(
                "desired_size",
                d,
                f"must be between min_size ({self.min_size}) and max_size ({self.max_size})",
            )
        return self

    @property
    def desired(self) -> int:
        return self.min_size if self.desired_size is None else self.desired_size


class SystemNodeGroupConfig(ScalingMixin):
    """Small on-demand nodes for cluster add-ons, spread across zones."""

    instance_types: list[str] = Field(
        default=["m7i.xlarge"],
        description="Non-GPU instance types of the catalog for the add-on nodes",
    )
    min_size: int = Field(
        description="Fewest add-on nodes (at least 1; 2 keep add-ons up through a node's loss)",
        default=2,
        ge=1,
    )
    max_size: int = Field(description="Most add-on nodes", default=4, ge=1)
    disk_gb: int = Field(
        description="Root volume size of each node (GiB, gp3, EBS-key encrypted)",
        default=50,
        ge=20,
        le=1000,
    )

    @field_validator("instance_types")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        catalog = load_catalog()
        for t in v:
            if t not in catalog.instance_types or catalog.instance_types[t].gpu:
                allowed = sorted(n for n, i in catalog.instance_types.items() if not i.gpu)
                raise _fail("", t, "must be a non-GPU type of the catalog: " + ", ".join(allowed))
        if not v:
            raise _fail("", v, "give at least one instance type")
        return v


class GpuNodeGroupConfig(ScalingMixin):
    """One GPU node group: kind from the catalog, capacity, EFA and placement."""

    name: DnsLabel = Field(
        description="The node group's name (also its `llmcloud.io/node-group` label)",
    )
    gpu: str = Field(
        description="GPU kind of the catalog: A100, A100-80G, H100, H200 (training), L4, "
        "L40S, A10G (serving)",
    )
    instance_type: str | None = Field(
        default=None,
        description="One of the kind's instance types. Unset: the kind's first",
    )
    availability_zones: list[str] | None = Field(
        default=None,
        description="Zones of network.availability_zones to launch in. Unset: every VPC zone "
        "offering the type (EFA groups: the first one)",
    )
    efa: bool | None = Field(
        default=None,
        description="Elastic Fabric Adapter interfaces (one per network card, from the "
        "catalog). Unset: on for training kinds whose type has EFA",
    )
    capacity: CapacityConfig = Field(
        default=CapacityConfig(),
        description="Where the instances come from (keys: capacity.*)",
    )
    ami: Literal["al2023", "bottlerocket"] = Field(
        default="al2023",
        description="Node OS: `al2023` (EKS-optimized Amazon Linux 2023 NVIDIA AMI) or "
        "`bottlerocket`",
    )
    root_volume_gb: int = Field(
        description="Root volume size of each node (GiB, gp3, EBS-key encrypted)",
        default=200,
        ge=50,
        le=16000,
    )
    pods_need_imds: bool = Field(
        default=False,
        description="Let pods reach the instance metadata service (hop limit 2 instead of 1);"
        " off: pods use their own pod roles",
    )
    labels: dict[str, str] = Field(
        default={},
        description="Extra Kubernetes node labels (not in the platform's or Kubernetes' label"
        " domains)",
    )

    @model_validator(mode="after")
    def _kind(self) -> GpuNodeGroupConfig:
        catalog = load_catalog()
        if self.gpu not in catalog.kinds:
            raise _fail("gpu", self.gpu, "must be one of " + ", ".join(catalog.kinds))
        kind = catalog.kinds[self.gpu]
        if self.instance_type is not None and self.instance_type not in kind.instance_types:
            raise _fail(
                "instance_type",
                self.instance_type,
                f"{self.gpu} comes as " + ", ".join(kind.instance_types),
            )
        instance = catalog.instance(self.resolved_instance_type)
        if self.efa and not instance.efa_supported:
            raise _fail(
                "efa", True, f"{instance.name} has no EFA; set efa: false or pick a type with EFA"
            )
        if self.capacity.type == "spot" and kind.role != "serving":
            raise _fail(
                "capacity.type",
                "spot",
                f"spot is for serving kinds only ({', '.join(k for k, v in catalog.kinds.items() if v.role == 'serving')}); "
                f"{self.gpu} is a training kind: use on_demand, reservation or capacity_block",
            )
        if self.capacity.type == "capacity_block":
            if kind.role != "training":
                raise _fail(
                    "capacity.type",
                    "capacity_block",
                    "Capacity Blocks sell training instances (p4d, p4de, p5, p5e, p5en); "
                    f"{self.gpu} is a serving kind: use on_demand, spot or reservation",
                )
            if self.min_size != 0:
                raise _fail(
                    "min_size",
                    self.min_size,
                    "must be 0 for a capacity_block group: its instances exist only inside the "
                    "block's time window, which capacity.start_utc / end_utc schedule",
                )
        for key, value in self.labels.items():
            if _reserved_label(key) or not _LABEL_KEY.match(key):
                raise _fail(
                    f"labels.{key}",
                    value,
                    "label keys are DNS-prefix/name (name ≤ 63 characters) outside the domains "
                    "the platform sets (" + ", ".join(_RESERVED_LABEL_DOMAINS) + ")",
                )
            if not _LABEL_VALUE.match(value):
                raise _fail(
                    f"labels.{key}",
                    value,
                    "label values are ≤ 63 characters of letters, digits, '-', '_', '.', "
                    "starting and ending with a letter or digit",
                )
        return self

    @property
    def kind(self):
        return load_catalog().kind(self.gpu)

    @property
    def resolved_instance_type(self) -> str:
        return self.instance_type or load_catalog().kind(self.gpu).default_instance_type

    @property
    def instance(self):
        return load_catalog().instance(self.resolved_instance_type)

    @property
    def efa_enabled(self) -> bool:
        """EFA defaults on for training kinds whose instance type has it."""
        if self.efa is not None:
            return self.efa
        return self.kind.role == "training" and self.instance.efa_supported

    @property
    def reserved(self) -> bool:
        return self.capacity.type in ("reservation", "capacity_block")

    @property
    def placement_group(self) -> bool:
        """A cluster placement group for EFA groups, unless capacity is reserved (the
        reservation fixes placement, and a forced placement group conflicts with it)."""
        return self.efa_enabled and not self.reserved

    def zones(self, network: NetworkConfig, region: str) -> list[str]:
        """The zones this group launches in: the reservation's zone, else the configured
        zones, else, for EFA groups, the first VPC zone offering the type (EFA traffic stays
        in one placement group), else every VPC zone that offers the type."""
        if self.reserved:
            return [self.capacity.availability_zone or ""]
        if self.availability_zones:
            return list(self.availability_zones)
        offering = load_catalog().region(region).offerings.get(self.resolved_instance_type, ())
        offered = [z for z in network.availability_zones if z in offering]
        return offered[:1] if self.efa_enabled else offered


class AddonsConfig(Model):
    """Cluster add-ons that run on Kubernetes (pinned chart versions live in the code)."""

    metrics: Literal["prometheus", "cloudwatch"] = Field(
        default="prometheus",
        description="`prometheus` (kube-prometheus-stack with the DCGM exporter) or "
        "`cloudwatch` (the Container Insights add-on)",
    )
    keda: bool = Field(
        default=False,
        description="KEDA, which autoscales serving endpoints on waiting requests",
    )
    dcgm_exporter: bool = Field(
        default=True,
        description="NVIDIA DCGM exporter on GPU nodes (GPU metrics for Prometheus)",
    )
    prometheus_retention_days: int = Field(
        description="Days Prometheus keeps metrics", default=15, ge=1, le=365
    )
    prometheus_storage_gb: int = Field(
        description="Prometheus data volume (GiB, encrypted gp3)", default=100, ge=10, le=16000
    )


class ClusterConfig(Model):
    """The EKS control plane, its logging and access, and the node groups."""

    version: str = Field(
        default=None,  # type: ignore[assignment]  # filled from the calendar by _version_on_plan_day
        json_schema_extra={"doc_default": "newest in standard support on the plan's day"},
        description='Kubernetes minor version, quoted (`"1.35"`): one EKS offers on the day of '
        "the plan (`infra/data/eks_versions.json`: released, not past extended support). "
        "A version in extended support needs `extended_support: true`; managed add-ons follow "
        "the version",
    )
    extended_support: bool = Field(
        default=False,
        description="The EKS upgrade policy: false (`STANDARD`) lets EKS upgrade the control "
        "plane when its version leaves standard support; true (`EXTENDED`) keeps the version "
        "for up to 12 more months at $0.60 instead of $0.10 per cluster-hour (the plan's cost "
        "estimate says so). Needed to run a version already in extended support",
    )
    endpoint_public_access: bool = Field(
        default=False,
        description="A public Kubernetes API endpoint (besides the private one); refused in prod",
    )
    public_access_cidrs: list[ipaddress.IPv4Network] = Field(
        default=[],
        description="The public endpoint's CIDR allowlist (required with a public endpoint; "
        "no 0.0.0.0/0)",
    )
    log_types: list[Literal[CONTROL_PLANE_LOG_TYPES]] = Field(  # type: ignore[valid-type]
        default=list(CONTROL_PLANE_LOG_TYPES),
        description="Control-plane logs sent to `/aws/eks/<cluster>/cluster` (api, audit and "
        "authenticator are required)",
    )
    log_retention_days: RetentionDays = Field(
        default=365,
        description="Days CloudWatch keeps the control-plane logs",
    )
    # None: on in prod (deleting the cluster takes an explicit change), off elsewhere
    deletion_protection: bool | None = Field(
        default=None,
        description="EKS deletion protection. Unset: on in prod, off elsewhere",
    )
    system_nodes: SystemNodeGroupConfig = Field(
        default=SystemNodeGroupConfig(),
        description="The on-demand node group for add-ons (keys: system_nodes.*)",
    )
    gpu_node_groups: list[GpuNodeGroupConfig] = Field(
        default=[],
        description="GPU managed node groups (keys: the GPU node group table)",
    )
    addons: AddonsConfig = Field(
        default=AddonsConfig(),
        description="Add-ons on the cluster (keys: addons.*)",
    )

    @model_validator(mode="before")
    @classmethod
    def _version_on_plan_day(cls, data: Any, info: ValidationInfo) -> Any:
        """Check `version` against the EKS calendar on the day of the plan, and default it to
        the newest version in standard support that day."""
        if not isinstance(data, dict):
            return data
        day = plan_day(info.context)
        calendar = load_eks_calendar()
        version = data.get("version")
        if version is None:
            return {**data, "version": calendar.default(day)}
        allowed = calendar.allowed(day)
        if isinstance(version, float):
            raise _fail(
                "version",
                version,
                f'quote the version (version: "{version}"): YAML reads an unquoted 1.30 as '
                f"the number 1.3; versions EKS offers on {day}: " + ", ".join(allowed),
            )
        if not isinstance(version, str) or version not in allowed:
            support = calendar.support(str(version), day)
            why = {
                "ended": "is past EKS extended support",
                "unreleased": "has no EKS release on or before that day in the calendar",
                None: "is not a version of the EKS calendar",
            }.get(support, "is not offered")
            raise _fail(
                "version",
                version,
                f"{why} on {day}; versions EKS offers that day: "
                + ", ".join(allowed)
                + f" (newest in standard support: {calendar.default(day)})",
            )
        return data

    @model_validator(mode="after")
    def _extended_support(self, info: ValidationInfo) -> ClusterConfig:
        """With upgrade policy STANDARD, EKS does not keep a version past its standard support
        (and the policy cannot be changed once the version is in extended support)."""
        day = plan_day(info.context)
        calendar = load_eks_calendar()
        found = calendar.get(self.version)
        if found is not None and found.support(day) == "extended" and not self.extended_support:
            raise _fail(
                "version",
                self.version,
                f"is in EKS extended support on {day} (standard support ended "
                f"{found.end_of_standard_support}): use a version in standard support ("
                + ", ".join(calendar.standard(day))
                + "), or set extended_support: true to keep it until "
                f"{found.end_of_extended_support} at the extended-support rate",
            )
        return self

    @model_validator(mode="after")
    def _endpoint(self) -> ClusterConfig:
        if self.endpoint_public_access:
            if not self.public_access_cidrs:
                raise _fail(
                    "public_access_cidrs",
                    [],
                    "a public endpoint needs a CIDR allowlist (your office or VPN ranges)",
                )
            for i, cidr in enumerate(self.public_access_cidrs):
                if cidr.prefixlen == 0:
                    raise _fail(
                        f"public_access_cidrs[{i}]",
                        str(cidr),
                        "0.0.0.0/0 opens the Kubernetes API to the internet; list your ranges",
                    )
        elif self.public_access_cidrs:
            raise _fail(
                "public_access_cidrs",
                [str(c) for c in self.public_access_cidrs],
                "only allowed with endpoint_public_access: true",
            )
        missing = [t for t in REQUIRED_CONTROL_PLANE_LOGS if t not in self.log_types]
        if missing:
            raise _fail("log_types", self.log_types, "must include " + ", ".join(missing))
        names = [g.name for g in self.gpu_node_groups]
        for i, name in enumerate(names):
            if names.count(name) > 1:
                raise _fail(f"gpu_node_groups[{i}].name", name, "node group names must be unique")
        return self

    def node_group(self, name: str) -> GpuNodeGroupConfig | None:
        return next((g for g in self.gpu_node_groups if g.name == name), None)


# --------------------------------------------------------------------------- storage


_HH_MM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_D_HH_MM = re.compile(r"^[1-7]:([01]\d|2[0-3]):[0-5]\d$")
_S3_KEY_MAX_BYTES = 1024


def _dra_prefix(v: str, purpose: str) -> str:
    """A data repository association's S3 path is `s3://<the purpose's bucket>/<v>`; `v` must
    stay inside that bucket and be a directory-like prefix FSx accepts."""
    example = f"like '{purpose}/'"
    if "://" in v:
        allowed = (
            f"the DRA links a prefix of the {purpose} bucket this stack creates; give only the "
            f"key prefix inside it, {example}, not a URL"
        )
    elif v.startswith("/"):
        allowed = f"a key prefix inside the {purpose} bucket has no leading '/', {example}"
    elif not v:
        allowed = f"give a key prefix inside the {purpose} bucket, {example}"
    elif any(seg in ("", ".", "..") for seg in v.removesuffix("/").split("/")):
        allowed = (
            "'.', '..' and empty ('//') segments would point outside the prefix; write plain "
            f"segments, {example}"
        )
    elif not v.endswith("/"):
        allowed = f"the prefix of a directory ends with '/', {example}"
    elif any(ord(c) < 32 or c in "\x7f\x85\u2028\u2029" for c in v):
        allowed = "FSx rejects control characters and line breaks in a data repository path"
    elif len(v.encode()) > _S3_KEY_MAX_BYTES:
        allowed = f"S3 key prefixes are at most {_S3_KEY_MAX_BYTES} bytes"
    else:
        return v
    raise _fail("", v, allowed)


class FsxConfig(Model):
    """FSx for Lustre (PERSISTENT_2) linked to the datasets and checkpoints prefixes.

    Times are UTC, in the formats FSx takes: `HH:MM` daily, `d:HH:MM` weekly (1 = Monday).
    """

    storage_capacity_gib: int = Field(
        default=1200,
        description="File system size (GiB): 1200, 2400 or a multiple of 2400",
    )
    throughput_mbps_per_tib: int = Field(
        default=250,
        description="Throughput tier (MB/s per TiB of storage): 125, 250, 500 or 1000",
    )
    availability_zone: str | None = Field(
        default=None,
        description="Zone of the file system (one of network.availability_zones). Unset: the "
        "zone of the first EFA node group, else the first VPC zone",
    )
    backup_retention_days: int = Field(
        description="Days automatic daily backups are kept (0: no automatic backups, no final"
        " backup)",
        default=7,
        ge=0,
        le=90,
    )
    daily_backup_start_utc: str = Field(
        default="03:00",
        description="Start of the daily backup window, `HH:MM` UTC",
    )
    weekly_maintenance_start_utc: str = Field(
        default="7:05:00",
        description="Start of the weekly maintenance window, `d:HH:MM` UTC (1 = Monday)",
    )
    compression: Literal["LZ4", "NONE"] = Field(
        default="LZ4",
        description="Data compression: `LZ4` or `NONE`",
    )
    datasets_prefix: str = Field(
        default="datasets/",
        description="Key prefix of the datasets bucket linked at `/datasets` (ends with `/`, "
        "no `s3://`)",
    )
    checkpoints_prefix: str = Field(
        default="checkpoints/",
        description="Key prefix of the checkpoints bucket linked at `/checkpoints` (ends with"
        " `/`, no `s3://`)",
    )

    @property
    def throughput_mb_per_s(self) -> float:
        """The file system's baseline throughput: the per-TiB tier times its size (FSx for
        Lustre user guide, "Performance")."""
        return self.throughput_mbps_per_tib * self.storage_capacity_gib / 1024

    @field_validator("storage_capacity_gib")
    @classmethod
    def _capacity(cls, v: int) -> int:
        if v not in (1200, 2400) and (v <= 0 or v % 2400 != 0):
            raise _fail("", v, "PERSISTENT_2 capacity is 1200, 2400 or a multiple of 2400 GiB")
        return v

    @field_validator("throughput_mbps_per_tib")
    @classmethod
    def _throughput(cls, v: int) -> int:
        if v not in FSX_THROUGHPUT_MBPS_PER_TIB:
            raise _fail(
                "",
                v,
                "PERSISTENT_2 throughput tiers (MB/s/TiB): "
                + ", ".join(str(t) for t in FSX_THROUGHPUT_MBPS_PER_TIB),
            )
        return v

    @field_validator("datasets_prefix")
    @classmethod
    def _datasets_prefix(cls, v: str) -> str:
        return _dra_prefix(v, "datasets")

    @field_validator("checkpoints_prefix")
    @classmethod
    def _checkpoints_prefix(cls, v: str) -> str:
        return _dra_prefix(v, "checkpoints")

    @field_validator("daily_backup_start_utc")
    @classmethod
    def _backup_time(cls, v: str) -> str:
        if not _HH_MM.match(v):
            raise _fail("", v, "a UTC time HH:MM, like '03:00'")
        return v

    @field_validator("weekly_maintenance_start_utc")
    @classmethod
    def _maintenance_time(cls, v: str) -> str:
        if not _D_HH_MM.match(v):
            raise _fail("", v, "a UTC weekday and time d:HH:MM (1 = Monday), like '7:05:00'")
        return v


class StorageConfig(Model):
    """The S3 data lake and the optional FSx for Lustre file system."""

    force_destroy: bool = Field(
        default=False,
        description="Let `pulumi destroy` delete non-empty buckets (dev only, on purpose)",
    )
    checkpoint_noncurrent_days: int = Field(
        description="Days an overwritten or deleted checkpoint version is kept", default=30, ge=1
    )
    abort_multipart_days: int = Field(
        description="Days before incomplete multipart uploads are aborted", default=7, ge=1
    )
    intelligent_tiering_days: int | None = Field(
        description="Days after which objects move to S3 Intelligent-Tiering. Unset: never",
        default=None,
        ge=0,
    )
    access_log_retention_days: int = Field(
        description="Days S3 server access logs are kept", default=365, ge=1
    )
    fsx: FsxConfig | None = Field(
        default=None,
        description="FSx for Lustre linked to the datasets and checkpoints buckets (keys: the"
        " FSx table). Unset: none",
    )
    expected_size_gb: dict[Literal["datasets", "checkpoints", "models"], float] = Field(
        default={},
        description="Expected size (GB) of `datasets`, `checkpoints`, `models`: only for the "
        "cost estimate",
    )


# --------------------------------------------------------------------------- workloads


class TrainingJobConfig(Model):
    """A torchrun job of the packaged trainer on a GPU node group.

    `trainer` holds the trainer's own keys (`workloads/training/config.py`: model, steps,
    batch_size, parallel, data, ...), checked here with the trainer's schema. `data` is
    `synthetic`, a directory relative to the FSx datasets mount, or an absolute path in the
    container. Checkpoint and metrics paths are set by the job: on FSx (shared by every
    node, exported to the checkpoints bucket), or without FSx on the pod's disk, mirrored
    to the checkpoints bucket by the trainer (one node only)."""

    name: DnsLabel = Field(
        description="The job's name (Job, Service and pod role)",
    )
    node_group: str = Field(
        description="A cluster.gpu_node_groups name",
    )
    nodes: int = Field(
        description="Pods, one per node (at most the group's max_size; more than 1 needs use_fsx)",
        default=1,
        ge=1,
    )
    namespace: DnsLabel = Field(
        default="training",
        description="A security.namespaces name (with FSx: the training namespace that holds "
        "its claim)",
    )
    image: str = Field(
        description="Trainer image, pinned by tag or digest (never `latest`)",
    )
    max_restarts: int = Field(
        description="torchrun restarts inside a pod before it fails", default=3, ge=0
    )
    backoff_limit: int = Field(description="Pod failures the Job retries", default=6, ge=0)
    use_fsx: bool = Field(
        default=True,
        description="Mount the FSx claim at `/fsx` (datasets and checkpoints)",
    )
    jobset: bool = Field(
        default=False,
        description="Run as a JobSet instead of an Indexed Job (needs the JobSet controller, "
        "installed when a job asks)",
    )
    trainer: dict[str, str | int | float | bool] = Field(
        default={},
        description="Trainer flags (`workloads/training/config.py`: model, steps, batch_size,"
        " parallel, data, ...), checked against the trainer's schema; the job "
        "sets checkpoint and metrics paths itself",
    )

    @field_validator("image")
    @classmethod
    def _pinned(cls, v: str) -> str:
        return _check_image(v)

    @model_validator(mode="after")
    def _trainer(self) -> TrainingJobConfig:
        from workloads.training.config import mapping_problem

        problem = mapping_problem(self.trainer)
        if problem is not None:
            key, value, allowed = problem
            raise _fail(f"trainer.{key}", value, allowed)
        if not self.use_fsx and self.nodes > 1:
            raise _fail(
                "nodes",
                self.nodes,
                "a multi-node job needs use_fsx: true (every node writes its shards of a "
                "checkpoint to one shared file system)",
            )
        data = str(self.trainer_value("data", "synthetic"))
        if data != "synthetic" and not data.startswith("/"):
            if ".." in data.split("/"):
                raise _fail("trainer.data", data, "a dataset directory without '..'")
            if not self.use_fsx:
                raise _fail(
                    "trainer.data",
                    data,
                    "a dataset directory is read from FSx: set use_fsx: true, or use "
                    "'synthetic' or an absolute path inside the image",
                )
        return self

    def trainer_value(self, key: str, default: Any = None) -> Any:
        """A trainer key, written snake_case or kebab-case in the stack file."""
        return self.trainer.get(key, self.trainer.get(key.replace("_", "-"), default))

    def world_size(self, group: GpuNodeGroupConfig) -> int:
        return self.nodes * group.instance.gpu_count

    def node_group_problem(self, group: GpuNodeGroupConfig) -> tuple[str, Any, str] | None:
        """(field, value, allowed) when the global batch does not split over the job's
        ranks (nodes x the node group's GPUs), else None."""
        world = self.world_size(group)
        batch = self.trainer_value("batch_size")
        micro = self.trainer_value("micro_batch_size")
        ranks = f"{world} ranks ({self.nodes} nodes x {group.instance.gpu_count} GPUs of {group.resolved_instance_type})"
        if batch is not None and int(batch) % world:
            return (
                "trainer.batch_size",
                batch,
                f"the global batch must be divisible by the world size: {ranks}",
            )
        if batch is not None and micro is not None and (int(batch) // world) % int(micro):
            return (
                "trainer.micro_batch_size",
                micro,
                f"must divide the per-rank batch: batch_size {batch} / {ranks} = "
                f"{int(batch) // world}",
            )
        return None


class ServingConfig(Model):
    """A vLLM endpoint: one model on a serving node group."""

    name: DnsLabel = Field(
        description="The endpoint's name (Deployment, Service, Secret, service account)",
    )
    model: str = Field(
        description="Model id; the served name unless served_model_name is set",
    )
    served_model_name: str | None = Field(
        default=None,
        description="Name clients put in `model`. Unset: model",
    )
    model_prefix: str = Field(
        description="Key prefix of the weights in the models bucket (`llama-3.1-8b/`)",
    )
    params_billion: float = Field(
        description="Parameter count (billions), for the fit check and the startup window", gt=0
    )
    node_group: str = Field(
        description="A cluster.gpu_node_groups name",
    )
    gpus_per_replica: int = Field(
        description="GPUs per replica, a power of two (tensor parallel); above the node's "
        "GPUs a replica spans whole nodes",
        default=1,
        ge=1,
    )
    replicas_min: int = Field(description="Fewest replicas (at least 1)", default=1, ge=0)
    replicas_max: int = Field(
        description="Most replicas; autoscaled (KEDA) when above replicas_min", default=1, ge=1
    )
    max_model_len: int = Field(
        description="vLLM `--max-model-len`: context length (tokens)", default=8192, ge=256
    )
    max_num_seqs: int = Field(
        description="vLLM `--max-num-seqs`: sequences in a batch", default=256, ge=1
    )
    dtype: Literal["auto", "bfloat16", "float16"] = Field(
        default="bfloat16",
        description="vLLM `--dtype`",
    )
    quantization: Literal["awq", "gptq", "fp8"] | None = Field(
        default=None,
        description="vLLM `--quantization`. Unset: none",
    )
    gpu_memory_utilization: float = Field(
        description="vLLM `--gpu-memory-utilization`: share of GPU memory for weights and KV cache",
        default=0.90,
        ge=0.5,
        le=0.98,
    )
    # 2 x layers x KV heads x head dim x 2 bytes, from the model's config.json; unset: the
    # fit check's reference shape for the parameter count (workloads/serving/fit.py)
    kv_cache_bytes_per_token: int | None = Field(
        description="KV cache bytes per token: 2 x layers x KV heads x head dim x 2, from the"
        " model's config.json. Unset: estimated from the parameter count "
        "(`workloads/serving/fit.py`)",
        default=None,
        ge=1,
    )
    loader: Literal["init_sync", "s3_streamer"] = Field(
        default="init_sync",
        description="`init_sync` (copy the weights to node-local disk first) or `s3_streamer`"
        " (stream them from S3)",
    )
    # unset: sized from the checkpoint size (workloads/serving/service.py)
    startup_timeout_minutes: int | None = Field(
        description="Startup probe window (minutes). Unset: sized from the checkpoint size",
        default=None,
        ge=5,
        le=240,
    )
    # scale out when more requests than this wait per replica (KEDA)
    target_requests_waiting: int = Field(
        description="KEDA: waiting requests per replica before scaling out", default=4, ge=1
    )
    namespace: DnsLabel = Field(
        default="serving",
        description="A security.namespaces name",
    )
    image: str = Field(
        default=pins.image("vllm"),  # infra/data/pins.json
        description="vLLM image, pinned by tag or digest (never `latest`)",
    )
    api_key_required: bool = Field(
        default=True,
        description="Require the API key (must stay true in staging and prod)",
    )
    allowed_namespaces: list[DnsLabel] = Field(
        default=[],
        description="Namespaces whose pods may call port 8000",
    )
    allowed_cidrs: list[ipaddress.IPv4Network] = Field(
        default=[],
        description="Client CIDRs that may call port 8000 (no 0.0.0.0/0)",
    )
    load_balancer: Literal["none", "internal_nlb"] = Field(
        default="none",
        description="`none` (ClusterIP) or `internal_nlb` (an internal Network Load Balancer)",
    )

    @field_validator("image")
    @classmethod
    def _pinned(cls, v: str) -> str:
        return _check_image(v)

    @model_validator(mode="after")
    def _replicas(self) -> ServingConfig:
        if self.replicas_max < self.replicas_min:
            raise _fail(
                "replicas_max", self.replicas_max, f"must be ≥ replicas_min ({self.replicas_min})"
            )
        if self.replicas_min == 0:
            raise _fail(
                "replicas_min",
                0,
                "must be ≥ 1: the autoscaling signal (waiting requests) comes from running "
                "replicas, so an endpoint at zero would never scale up; remove the entry instead",
            )
        if (
            self.model_prefix.startswith("/")
            or not self.model_prefix.endswith("/")
            or ".." in self.model_prefix
            or "://" in self.model_prefix
        ):
            raise _fail(
                "model_prefix",
                self.model_prefix,
                "a key prefix in the models bucket, like 'llama-3-8b/'",
            )
        for i, cidr in enumerate(self.allowed_cidrs):
            if cidr.prefixlen == 0:
                raise _fail(
                    f"allowed_cidrs[{i}]",
                    str(cidr),
                    "0.0.0.0/0 admits every source; list the client ranges",
                )
        return self


def _check_image(v: str) -> str:
    if not _IMAGE_PINNED.match(v) or ("@sha256:" not in v and ":" not in v.rsplit("/", 1)[-1]):
        raise _fail("", v, "pin the image by tag or digest (repo:tag or repo@sha256:...)")
    if v.rsplit("/", 1)[-1].split("@")[0].endswith(":latest"):
        raise _fail("", v, "'latest' is not a pinned tag; use a version tag or a digest")
    return v


# --------------------------------------------------------------------------- policies


class WaiverConfig(Model):
    """A policy finding accepted on purpose, until a date (good through that day).

    `resource` is a resource name or URN, `*`/`?` globs allowed (`*` alone also covers
    stack-level findings)."""

    rule: str = Field(
        description="A waivable policy rule id",
    )
    resource: str = Field(
        description="Resource name or URN it covers; `*` and `?` globs (`*` alone covers "
        "stack-level findings too)",
        min_length=1,
    )
    reason: str = Field(
        description="Why the finding is accepted (at least 10 characters)", min_length=10
    )
    expires: date = Field(
        description="Last day the waiver holds (YYYY-MM-DD); after it the finding counts again",
    )

    @field_validator("rule")
    @classmethod
    def _known_rule(cls, v: str) -> str:
        from policies.rules.ids import WAIVABLE_RULE_IDS

        if v not in WAIVABLE_RULE_IDS:
            raise _fail("", v, "a policy rule id: " + ", ".join(WAIVABLE_RULE_IDS))
        return v


class PoliciesConfig(Model):
    """How the policy pack treats this stack."""

    enforcement: Literal["advisory", "mandatory"] | None = Field(
        default=None,
        description="Policy enforcement for the stack: `advisory` or `mandatory`. Unset: "
        "advisory in dev, mandatory elsewhere",
    )
    gpu_budget: int | None = Field(
        description="Most GPUs the stack may reach at max scale (`gpu-budget` rule). Unset: "
        "no budget",
        default=None,
        ge=0,
    )
    required_tags: list[str] = Field(
        default=["team", "cost-center"],
        description="Tags every taggable AWS resource must carry",
    )
    # Ports a public load balancer may open to 0.0.0.0/0 (sg-no-open-ingress); none by default.
    public_ingress_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default=[],
        description="Ports a public load balancer may open to 0.0.0.0/0 "
        "(`sg-no-open-ingress`); none by default",
    )
    waivers: list[WaiverConfig] = Field(
        default=[],
        description="Findings accepted on purpose, until a date (keys: waivers[].*)",
    )


# --------------------------------------------------------------------------- ci/cd


class CiConfig(Model):
    """Optional bootstrap of GitHub Actions access: the account's GitHub OIDC provider and
    the roles the pull-request preview and the deploy workflow assume (no long-lived keys)."""

    github_repository: str = Field(
        description="The GitHub repository (`owner/name`) whose workflows get the preview and"
        " deploy roles",
        pattern=_GITHUB_REPOSITORY.pattern,
    )
    create_oidc_provider: bool = Field(
        default=True,
        description="Create the account's GitHub OIDC provider (one per account: false in all"
        " stacks but one)",
    )
    existing_oidc_provider_arn: str | None = Field(
        default=None,
        description="The account's token.actions.githubusercontent.com provider ARN (required"
        " when create_oidc_provider is false)",
    )
    deploy_environments: list[DnsLabel] = Field(
        default=[],
        description="GitHub environments whose jobs may assume the deploy role. Unset: the "
        "stack's name",
    )
    preview_environments: list[DnsLabel] = Field(
        default=[],
        description="GitHub environments whose jobs may assume the read-only preview role "
        "(pull-request preview, nightly drift); default `<stack>-preview`. They hold that "
        "stack's variables and carry no protection rules.",
    )

    @model_validator(mode="after")
    def _provider(self) -> CiConfig:
        if not self.create_oidc_provider and not self.existing_oidc_provider_arn:
            raise _fail(
                "existing_oidc_provider_arn",
                None,
                "required when create_oidc_provider is false (the account's "
                "token.actions.githubusercontent.com provider ARN)",
            )
        return self


# --------------------------------------------------------------------------- deploy path

_CONNECTION_ARN = re.compile(
    r"^arn:aws[a-z-]*:(codeconnections|codestar-connections):[a-z0-9-]+:\d{12}:connection/[0-9a-f-]+$"
)
PATTERN_MEANINGS[_CONNECTION_ARN.pattern] = (
    "an AWS CodeConnections connection ARN, like "
    "arn:aws:codeconnections:us-east-1:111122223333:connection/0b7e6a52-..."
)


class DeployRunnerConfig(Model):
    """An AWS CodeBuild-hosted GitHub Actions runner in the VPC's private subnets: the place
    the workflows run `pulumi up` (and the refreshing previews) from."""

    github_repository: str = Field(
        pattern=_GITHUB_REPOSITORY.pattern,
        description="owner/name of the repository whose workflow jobs the runner takes",
    )
    connection_arn: str = Field(
        pattern=_CONNECTION_ARN.pattern,
        description="AWS CodeConnections connection to GitHub (created and authorized once in "
        "the console: the OAuth handshake cannot be automated)",
    )
    compute_type: Literal[
        "BUILD_GENERAL1_SMALL", "BUILD_GENERAL1_MEDIUM", "BUILD_GENERAL1_LARGE"
    ] = Field(default="BUILD_GENERAL1_MEDIUM", description="CodeBuild compute type of a job")
    image: str = Field(
        default="aws/codebuild/standard:7.0",
        description="CodeBuild image (Ubuntu, so actions/setup-python finds its builds)",
    )
    timeout_minutes: int = Field(
        default=120, ge=5, le=2160, description="a job's build timeout (CodeBuild: 5-2160)"
    )


class DeployConfig(Model):
    """Where the Kubernetes layer (namespaces, Helm releases, workloads) is deployed from, and
    who deploys it. A private endpoint is reachable only from the VPC or a connected network,
    and only access entries reach the API (README, "Deploy path")."""

    kubernetes_from: Literal["codebuild_runner", "connected_network", "public_endpoint"] | None = (
        Field(
            default=None,
            description="codebuild_runner: the in-VPC runner of `runner`; connected_network: "
            "a VPN/Direct Connect range (`connected_cidrs`, admitted on 443); public_endpoint: "
            "the cluster's public endpoint allowlist",
        )
    )
    runner: DeployRunnerConfig | None = Field(
        default=None, description="the CodeBuild runner (with kubernetes_from: codebuild_runner)"
    )
    connected_cidrs: list[ipaddress.IPv4Network] = Field(
        default=[],
        description="ranges of the connected network (kubernetes_from: connected_network)",
    )
    deployer_arns: list[str] = Field(
        default=[],
        description="IAM roles/users that run `pulumi up` from there, besides the stack's own "
        "CI deploy role (llmcloud:ci); each gets a cluster-admin access entry",
    )

    reader_arns: list[str] = Field(
        default=[],
        description="IAM roles/users that refresh the stack read-only from there (previews, "
        "drift), besides the stack's own CI preview role; each gets an AmazonEKSAdminViewPolicy "
        "entry (view including Secrets, which a refresh reads)",
    )

    @field_validator("deployer_arns", "reader_arns")
    @classmethod
    def _deployers(cls, v: list[str]) -> list[str]:
        for i, arn in enumerate(v):
            if not isinstance(arn, str) or not _ROLE_OR_USER_ARN.match(arn):
                raise _fail(
                    f"[{i}]",
                    arn,
                    "must be an IAM role or user ARN (arn:aws:iam::111122223333:role/x)",
                )
        return v

    @model_validator(mode="after")
    def _where(self) -> DeployConfig:
        if self.kubernetes_from == "codebuild_runner" and self.runner is None:
            raise _fail("runner", None, "required with kubernetes_from: codebuild_runner")
        if self.kubernetes_from != "codebuild_runner" and self.runner is not None:
            raise _fail("runner", "...", "only used with kubernetes_from: codebuild_runner")
        if self.kubernetes_from == "connected_network" and not self.connected_cidrs:
            raise _fail("connected_cidrs", [], "required with kubernetes_from: connected_network")
        return self


# --------------------------------------------------------------------------- model gateway

_ACM_CERTIFICATE_ARN = re.compile(
    r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]{36}$"
)
_DOMAIN = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class GatewayTeamConfig(Model):
    """A team's key at the gateway: which models it may call and its limits."""

    name: DnsLabel = Field(
        description="The team (its key's Secrets Manager name and the audit records' `team`)",
    )
    models: list[str] = Field(
        min_length=1,
        description="Served model names (a serving entry's served_model_name or model) the "
        "team may call",
    )
    rpm: int | None = Field(
        default=None, ge=1, description="Requests per minute, per model. Unset: no limit"
    )
    tpm: int | None = Field(
        default=None,
        ge=1,
        description="Tokens (prompt + completion) per minute, per model. Unset: no limit",
    )
    tokens_per_day: int | None = Field(
        default=None, ge=1, description="Tokens per UTC day, per model. Unset: no limit"
    )
    key_version: int = Field(
        default=1,
        ge=1,
        description="Bump to rotate the team's key (a new value; the old one stops working "
        "when the gateway reloads)",
    )

    @property
    def limited(self) -> bool:
        """Every limit set (the gateway-team-limits rule, mandatory in prod)."""
        return None not in (self.rpm, self.tpm, self.tokens_per_day)


class GatewayConfig(Model):
    """The model gateway: one HTTPS address in front of every serving endpoint."""

    namespace: DnsLabel = Field(
        default="gateway",
        description="The gateway's namespace: a security.namespaces entry with purpose `gateway`",
    )
    replicas: int = Field(
        default=2, ge=1, le=20, description="Gateway pods; each enforces its share of a limit"
    )
    certificate_arn: str | None = Field(
        default=None,
        pattern=_ACM_CERTIFICATE_ARN.pattern,
        description="ACM certificate of the NLB's TLS listener. Unset: one is requested "
        "for `domain` (DNS validation)",
    )
    domain: str | None = Field(
        default=None,
        pattern=_DOMAIN.pattern,
        max_length=253,
        description="The environment's address (`llm.example.com`); needed without certificate_arn",
    )
    scheme: Literal["internal", "internet-facing"] = Field(
        default="internal", description="The NLB's scheme"
    )
    allowed_cidrs: list[ipaddress.IPv4Network] = Field(
        default=[],
        description="Client CIDRs the NLB admits. Empty: the VPC CIDR only",
    )
    teams: list[GatewayTeamConfig] = Field(
        default=[], description="Team keys (see Model access: the gateway)"
    )
    log_prompts: bool = Field(
        default=False,
        description="Put the prompt in the audit records (off: counts and metadata only)",
    )
    audit_retention_days: RetentionDays = Field(
        default=365, description="Retention of the access audit log group (days)"
    )

    @model_validator(mode="after")
    def _certificate(self) -> GatewayConfig:
        if self.certificate_arn is None and self.domain is None:
            raise PydanticCustomError(
                "gateway_certificate",
                "set certificate_arn (an ACM certificate) or domain (one is requested): "
                "the gateway listens on TLS only",
            )
        names = [t.name for t in self.teams]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise PydanticCustomError(
                "gateway_teams", "team names must be unique; repeated: {dup}", {"dup": dup}
            )
        return self


# --------------------------------------------------------------------------- the stack


class StackConfig(Model):
    """One environment. Built from the stack file; every component reads only this."""

    project: str = Field(
        description="The Pulumi project name (set by Pulumi, not a stack-file key)",
    )
    stack: str = Field(
        description="The stack name (set by Pulumi, not a stack-file key)",
    )
    region: str = Field(
        description="The AWS region, from `aws:region`: a region of the catalog (zones and "
        "GPU offerings are checked against it)",
    )
    environment: Literal[ENVIRONMENTS] = Field(  # type: ignore[valid-type]
        json_schema_extra={"doc_default": "the stack's name (dev, staging, prod)"},
        description="`dev`, `staging` or `prod`: picks the defaults and checks (policy "
        "enforcement; prod: 3 zones, private API endpoint). A stack named otherwise sets it",
    )
    name_prefix: str = Field(
        json_schema_extra={"doc_default": "`llm-<stack>`"},
        description="Prefix of physical names (cluster, buckets, aliases)",
        default="",
        max_length=20,
    )
    tags: dict[str, str] = Field(
        default={},
        description="Extra tags; with `llmcloud:project`, `llmcloud:stack`, `environment` and"
        " `managed-by` they are the AWS provider's default tags",
    )
    network: NetworkConfig = Field(
        description="The VPC (keys: network.*)",
    )
    security: SecurityConfig = Field(
        default=SecurityConfig(),
        description="KMS, IAM, Kubernetes access and namespaces, the audit trail (keys: "
        "security.*)",
    )
    # validated with the plan's context, so the default version is the plan day's
    cluster: ClusterConfig = Field(
        description="The EKS cluster, its node groups and add-ons (see Cluster and GPU node "
        "groups)",
        default_factory=dict,  # type: ignore[arg-type]
        validate_default=True,
    )
    storage: StorageConfig = Field(
        default=StorageConfig(),
        description="The S3 data lake and FSx for Lustre (keys: storage.*)",
    )
    training: list[TrainingJobConfig] = Field(
        default=[],
        description="torchrun training jobs (see Training)",
    )
    serving: list[ServingConfig] = Field(
        default=[],
        description="vLLM endpoints (see Serving)",
    )
    serving_api_key: SecretStr | None = Field(
        default=None,
        description="The API key of every endpoint, a Pulumi secret (`pulumi config set "
        "--secret`). Unset: a generated key per endpoint",
    )
    policies: PoliciesConfig = Field(
        default=PoliciesConfig(),
        description="How the policy pack treats the stack (keys: policies.*)",
    )
    ci: CiConfig | None = Field(
        default=None,
        description="GitHub Actions OIDC roles for preview and deploy (keys: ci.*). Unset: none",
    )
    deploy: DeployConfig = Field(
        default=DeployConfig(),
        description="Where the Kubernetes layer is deployed from (keys: deploy.*)",
    )
    gateway: GatewayConfig | None = Field(
        default=None,
        description="The model gateway in front of every serving endpoint (keys: gateway.*)."
        " Unset: none",
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> StackConfig:
        """Checks across sections (zones and offerings, workloads, admission, prod, deploy
        path): `infra/config/checks.py`, run once every section validated itself."""
        from infra.config.checks import check_stack  # checks imports this module

        check_stack(self)
        return self

    @property
    def fsx_namespace(self) -> str | None:
        """The namespace of FSx's PersistentVolumeClaim: the first training namespace (a
        static PersistentVolume binds exactly one claim)."""
        return next((ns.name for ns in self.security.namespaces if ns.purpose == "training"), None)

    @property
    def prefix(self) -> str:
        """Prefix of physical names (cluster, buckets): `name_prefix` or `llm-<stack>`."""
        return self.name_prefix or f"llm-{self.stack}"

    @property
    def default_tags(self) -> dict[str, str]:
        """Tags every taggable resource carries (set as the AWS provider's default tags)."""
        return {
            "llmcloud:project": self.project,
            "llmcloud:stack": self.stack,
            "environment": self.environment,
            "managed-by": "pulumi",
            **self.tags,
        }

    @property
    def policy_enforcement(self) -> str:
        """Advisory in dev, mandatory elsewhere, unless the stack says otherwise."""
        if self.policies.enforcement:
            return self.policies.enforcement
        return "advisory" if self.environment == "dev" else "mandatory"
