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

    vpc_cidr: ipaddress.IPv4Network = ipaddress.IPv4Network("10.0.0.0/16")
    availability_zones: list[str] = Field(min_length=2, max_length=3)
    private_subnet_cidrs: list[ipaddress.IPv4Network] | None = None
    public_subnet_cidrs: list[ipaddress.IPv4Network] | None = None
    nat_gateways: Literal["single", "per_az"] = "per_az"
    interface_endpoints: bool = True
    flow_logs_retention_days: RetentionDays = 365

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

    name: DnsLabel
    purpose: Literal["training", "serving", "data"]
    gpu_quota: int = Field(default=0, ge=0)
    cpu_quota: str = "512"
    memory_quota: str = "4Ti"
    # EFA interfaces (`vpc.amazonaws.com/efa` requests); the quotas a namespace leaves unset are
    # derived from the node groups its workloads run on (infra/config/capacity.py)
    efa_quota: int = Field(default=0, ge=0)
    pod_quota: int = Field(default=500, ge=1)
    pod_security: Literal["restricted", "baseline"] | None = None
    metrics_ports: list[Annotated[int, Field(ge=1, le=65535)]] = [8000, 9090]
    allow_from_namespaces: list[DnsLabel] = []

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

    kms_deletion_window_days: int = Field(default=30, ge=7, le=30)
    key_admin_arns: list[str] = []
    cluster_admin_arns: list[str] = []
    cluster_readonly_arns: list[str] = []
    data_stager_arns: list[str] = []
    pod_identity: Literal["pod_identity", "irsa"] = "pod_identity"
    cloudtrail: bool = True
    create_service_linked_roles: bool = Field(
        default=True,
        description="create the service-linked roles the stack depends on (Auto Scaling, EKS "
        "node groups, ELB, Spot) when the account lacks them; off where an account baseline "
        "owns them (an existing one makes the create fail: import it or switch this off)",
    )
    audit_log_retention_days: RetentionDays = 365
    namespaces: list[NamespaceConfig] = [
        NamespaceConfig(name="training", purpose="training", gpu_quota=64),
        NamespaceConfig(name="serving", purpose="serving", gpu_quota=32),
    ]

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

    type: Literal["on_demand", "spot", "reservation", "capacity_block"] = "on_demand"
    reservation_id: str | None = None
    availability_zone: str | None = None
    # a Capacity Block's window (ISO 8601 in UTC, `2026-12-07T11:30:00Z`): scheduled actions
    # on the group's ASG bring every node of the block at the start and none from an hour
    # before the end; unset: the Cluster Autoscaler sizes the group
    start_utc: datetime | None = None
    end_utc: datetime | None = None

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
    min_size: int = Field(default=0, ge=0)
    desired_size: int | None = Field(default=None, ge=0)
    max_size: int = Field(default=1, ge=1)

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

    instance_types: list[str] = ["m7i.xlarge"]
    min_size: int = Field(default=2, ge=1)
    max_size: int = Field(default=4, ge=1)
    disk_gb: int = Field(default=50, ge=20, le=1000)

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

    name: DnsLabel
    gpu: str
    instance_type: str | None = None
    availability_zones: list[str] | None = None
    efa: bool | None = None
    capacity: CapacityConfig = CapacityConfig()
    ami: Literal["al2023", "bottlerocket"] = "al2023"
    root_volume_gb: int = Field(default=200, ge=50, le=16000)
    pods_need_imds: bool = False
    labels: dict[str, str] = {}

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
                    "block's time window; raise desired_size while the block is active",
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

    metrics: Literal["prometheus", "cloudwatch"] = "prometheus"
    keda: bool = False
    dcgm_exporter: bool = True
    prometheus_retention_days: int = Field(default=15, ge=1, le=365)
    prometheus_storage_gb: int = Field(default=100, ge=10, le=16000)


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
    endpoint_public_access: bool = False
    public_access_cidrs: list[ipaddress.IPv4Network] = []
    log_types: list[Literal[CONTROL_PLANE_LOG_TYPES]] = list(CONTROL_PLANE_LOG_TYPES)  # type: ignore[valid-type]
    log_retention_days: RetentionDays = 365
    # None: on in prod (deleting the cluster takes an explicit change), off elsewhere
    deletion_protection: bool | None = None
    system_nodes: SystemNodeGroupConfig = SystemNodeGroupConfig()
    gpu_node_groups: list[GpuNodeGroupConfig] = []
    addons: AddonsConfig = AddonsConfig()

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

    storage_capacity_gib: int = 1200
    throughput_mbps_per_tib: int = 250
    availability_zone: str | None = None
    backup_retention_days: int = Field(default=7, ge=0, le=90)
    daily_backup_start_utc: str = "03:00"
    weekly_maintenance_start_utc: str = "7:05:00"
    compression: Literal["LZ4", "NONE"] = "LZ4"
    datasets_prefix: str = "datasets/"
    checkpoints_prefix: str = "checkpoints/"

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

    force_destroy: bool = False
    checkpoint_noncurrent_days: int = Field(default=30, ge=1)
    abort_multipart_days: int = Field(default=7, ge=1)
    intelligent_tiering_days: int | None = Field(default=None, ge=0)
    access_log_retention_days: int = Field(default=365, ge=1)
    fsx: FsxConfig | None = None
    expected_size_gb: dict[Literal["datasets", "checkpoints", "models"], float] = {}


# --------------------------------------------------------------------------- workloads


class TrainingJobConfig(Model):
    """A torchrun job of the packaged trainer on a GPU node group.

    `trainer` holds the trainer's own keys (`workloads/training/config.py`: model, steps,
    batch_size, parallel, data, ...), checked here with the trainer's schema. `data` is
    `synthetic`, a directory relative to the FSx datasets mount, or an absolute path in the
    container. Checkpoint and metrics paths are set by the job: on FSx (shared by every
    node, exported to the checkpoints bucket), or without FSx on the pod's disk, mirrored
    to the checkpoints bucket by the trainer (one node only)."""

    name: DnsLabel
    node_group: str
    nodes: int = Field(default=1, ge=1)
    namespace: DnsLabel = "training"
    image: str
    max_restarts: int = Field(default=3, ge=0)
    backoff_limit: int = Field(default=6, ge=0)
    use_fsx: bool = True
    jobset: bool = False
    trainer: dict[str, str | int | float | bool] = {}

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

    name: DnsLabel
    model: str
    served_model_name: str | None = None
    model_prefix: str
    params_billion: float = Field(gt=0)
    node_group: str
    gpus_per_replica: int = Field(default=1, ge=1)
    replicas_min: int = Field(default=1, ge=0)
    replicas_max: int = Field(default=1, ge=1)
    max_model_len: int = Field(default=8192, ge=256)
    max_num_seqs: int = Field(default=256, ge=1)
    dtype: Literal["auto", "bfloat16", "float16"] = "bfloat16"
    quantization: Literal["awq", "gptq", "fp8"] | None = None
    gpu_memory_utilization: float = Field(default=0.90, ge=0.5, le=0.98)
    # 2 x layers x KV heads x head dim x 2 bytes, from the model's config.json; unset: the
    # fit check's reference shape for the parameter count (workloads/serving/fit.py)
    kv_cache_bytes_per_token: int | None = Field(default=None, ge=1)
    loader: Literal["init_sync", "s3_streamer"] = "init_sync"
    # unset: sized from the checkpoint size (workloads/serving/service.py)
    startup_timeout_minutes: int | None = Field(default=None, ge=5, le=240)
    # scale out when more requests than this wait per replica (KEDA)
    target_requests_waiting: int = Field(default=4, ge=1)
    namespace: DnsLabel = "serving"
    image: str = "vllm/vllm-openai:v0.11.0"
    api_key_required: bool = True
    allowed_namespaces: list[DnsLabel] = []
    allowed_cidrs: list[ipaddress.IPv4Network] = []
    load_balancer: Literal["none", "internal_nlb"] = "none"

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

    rule: str
    resource: str = Field(min_length=1)
    reason: str = Field(min_length=10)
    expires: date

    @field_validator("rule")
    @classmethod
    def _known_rule(cls, v: str) -> str:
        from policies.rules.ids import WAIVABLE_RULE_IDS

        if v not in WAIVABLE_RULE_IDS:
            raise _fail("", v, "a policy rule id: " + ", ".join(WAIVABLE_RULE_IDS))
        return v


class PoliciesConfig(Model):
    """How the policy pack treats this stack."""

    enforcement: Literal["advisory", "mandatory"] | None = None
    gpu_budget: int | None = Field(default=None, ge=0)
    required_tags: list[str] = ["team", "cost-center"]
    # Ports a public load balancer may open to 0.0.0.0/0 (sg-no-open-ingress); none by default.
    public_ingress_ports: list[Annotated[int, Field(ge=1, le=65535)]] = []
    waivers: list[WaiverConfig] = []


# --------------------------------------------------------------------------- ci/cd


class CiConfig(Model):
    """Optional bootstrap of GitHub Actions access: the account's GitHub OIDC provider and
    the roles the pull-request preview and the deploy workflow assume (no long-lived keys)."""

    github_repository: str = Field(pattern=_GITHUB_REPOSITORY.pattern)
    create_oidc_provider: bool = True
    existing_oidc_provider_arn: str | None = None
    deploy_environments: list[DnsLabel] = []
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

    @field_validator("deployer_arns")
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


# --------------------------------------------------------------------------- the stack


class StackConfig(Model):
    """One environment. Built from the stack file; every component reads only this."""

    project: str
    stack: str
    region: str
    environment: Literal[ENVIRONMENTS]  # type: ignore[valid-type]
    name_prefix: str = Field(default="", max_length=20)
    tags: dict[str, str] = {}
    network: NetworkConfig
    security: SecurityConfig = SecurityConfig()
    # validated with the plan's context, so the default version is the plan day's
    cluster: ClusterConfig = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    storage: StorageConfig = StorageConfig()
    training: list[TrainingJobConfig] = []
    serving: list[ServingConfig] = []
    serving_api_key: SecretStr | None = None
    policies: PoliciesConfig = PoliciesConfig()
    ci: CiConfig | None = None
    deploy: DeployConfig = DeployConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> StackConfig:
        catalog = load_catalog()
        if self.region not in catalog.regions:
            raise _fail(
                "region", self.region, "regions in the catalog: " + ", ".join(catalog.regions)
            )
        region = catalog.regions[self.region]
        for i, zone in enumerate(self.network.availability_zones):
            if zone not in region.zones:
                raise _fail(
                    f"network.availability_zones[{i}]",
                    zone,
                    f"{self.region} has zones " + ", ".join(region.zones),
                )
        if self.storage.fsx is not None and self.fsx_namespace is None:
            raise _fail(
                "storage.fsx",
                self.storage.fsx.model_dump(mode="json"),
                "needs a namespace with purpose: training in security.namespaces "
                "(its PersistentVolumeClaim lives there)",
            )
        self._check_node_groups(region)
        self._check_workloads()
        # lazy: capacity reads the workloads' pod sizes, whose modules import this one
        from infra.config.capacity import admission_problem

        problem = admission_problem(self)
        if problem is not None:
            raise _fail(*problem)
        if self.storage.fsx and self.storage.fsx.availability_zone is not None:
            zone = self.storage.fsx.availability_zone
            if zone not in self.network.availability_zones:
                raise _fail(
                    "storage.fsx.availability_zone",
                    zone,
                    "must be one of network.availability_zones: "
                    + ", ".join(self.network.availability_zones),
                )
        if self.environment == "prod":
            if self.cluster.endpoint_public_access:
                raise _fail(
                    "cluster.endpoint_public_access",
                    True,
                    "prod clusters have a private endpoint only",
                )
        if self.deploy.kubernetes_from == "public_endpoint" and not (
            self.cluster.endpoint_public_access
        ):
            raise _fail(
                "deploy.kubernetes_from",
                "public_endpoint",
                "the cluster's endpoint is private (cluster.endpoint_public_access: false); "
                "deploy from codebuild_runner or connected_network",
            )
            if len(self.network.availability_zones) < 3:
                raise _fail(
                    "network.availability_zones",
                    self.network.availability_zones,
                    "prod spans 3 zones",
                )
        return self

    def _check_node_groups(self, region) -> None:
        zones = self.network.availability_zones
        for i, group in enumerate(self.cluster.gpu_node_groups):
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
                        f"{self.region} has zones " + ", ".join(region.zones),
                    )
                if zone not in zones:
                    raise _fail(
                        f"{key}.availability_zones[{j}]",
                        zone,
                        "must be one of network.availability_zones: " + ", ".join(zones),
                    )
            group_zones = group.zones(self.network, self.region)
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

    def _workload_group(self, key: str, name: str) -> GpuNodeGroupConfig:
        group = self.cluster.node_group(name)
        if group is None:
            groups = ", ".join(g.name for g in self.cluster.gpu_node_groups)
            raise _fail(
                f"{key}.node_group",
                name,
                f"must name a GPU node group: {groups}"
                if groups
                else "the cluster has no gpu_node_groups",
            )
        return group

    @staticmethod
    def _check_namespace(key: str, namespace: str, namespaces: dict[str, Any]) -> None:
        if namespace not in namespaces:
            raise _fail(f"{key}.namespace", namespace, "must be one of " + ", ".join(namespaces))

    def _check_workloads(self) -> None:
        namespaces = {ns.name: ns for ns in self.security.namespaces}
        for i, job in enumerate(self.training):
            key = f"training[{i}]"
            group = self._workload_group(key, job.node_group)
            self._check_namespace(key, job.namespace, namespaces)
            problem = job.node_group_problem(group)
            if problem is not None:
                raise _fail(f"{key}.{problem[0]}", problem[1], problem[2])
            if job.nodes > group.max_size:
                raise _fail(
                    f"{key}.nodes",
                    job.nodes,
                    f"node group {group.name} scales to at most {group.max_size}",
                )
            if job.use_fsx and self.storage.fsx is None:
                raise _fail(f"{key}.use_fsx", True, "needs storage.fsx, or set use_fsx: false")
            if job.use_fsx and job.namespace != self.fsx_namespace:
                raise _fail(
                    f"{key}.namespace",
                    job.namespace,
                    f"jobs that mount FSx run in {self.fsx_namespace!r}, where its one "
                    "PersistentVolumeClaim is (or set use_fsx: false)",
                )
        for i, svc in enumerate(self.serving):
            key = f"serving[{i}]"
            group = self._workload_group(key, svc.node_group)
            self._check_namespace(key, svc.namespace, namespaces)
            if self.environment != "dev" and not svc.api_key_required:
                raise _fail(
                    f"{key}.api_key_required",
                    False,
                    f"an API key is required in {self.environment}",
                )
            # lazy: the serving package imports this module
            from workloads.serving.fit import FitError, check_fit

            try:
                check_fit(svc, group)
            except FitError as e:
                raise _fail(f"{key}.{e.field}", e.value, e.message) from None

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
