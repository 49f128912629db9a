"""`llmcloud preflight`: can this stack get its GPUs? Checked read-only, before `pulumi up`.

For each node group of the stack config:
- the EC2 vCPU quota of its instance family (Service Quotas) covers what the stack could
  launch: the sum, over every group drawing on the same quota, of max size × vCPUs;
- the instance type is offered in each of the group's zones;
- a reserved group's capacity reservation (targeted ODCR or Capacity Block) exists, is
  active (or says when it starts), matches the instance type, zone and platform, and holds
  at least the group's max size.

Groups on reserved capacity are checked against their reservation, not the vCPU quota: an
ODCR took its quota when it was created, and a Capacity Block is capacity bought outright.

For the account (fresh accounts included):
- the service-linked roles the stack depends on exist, or the stack creates them
  (`security.create_service_linked_roles`); one that exists but the stack would create again
  makes `pulumi up` fail, and is reported;
- every principal the KMS key policies name exists (KMS refuses a policy with an unknown
  principal: `MalformedPolicyDocumentException`); principals in other accounts cannot be
  checked from here and are reported as such.

A check that cannot be made (the API is not implemented, throttled, or answers 5xx after a
short bounded retry, or times out) is reported as `incomplete` with its name, never as
`blocked`: exit 1 means a blocker was found, exit 2 that some check could not be made. The
clients retry at most `PREFLIGHT_MAX_ATTEMPTS` times with short timeouts, and an operation
that failed once is not called again, so the whole run stays within seconds.

The AWS calls sit behind `CapacityApi`, so the decision logic is tested with recorded API
responses where moto has no implementation (capacity reservations, EC2 quotas), and
`BotoCapacityApi` is the one implementation that talks to AWS.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import botocore.exceptions as bce
from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

from infra.catalog import load_catalog
from infra.config import StackConfig
from infra.ops import awsclient
from infra.ops.awsclient import aws_errors, error_code
from infra.security.principals import (
    SERVICE_LINKED_ROLES,
    key_policy_principals,
    needed_services,
)

Status = Literal["ok", "warn", "blocked", "incomplete"]
Check = Literal["quota", "offering", "reservation", "service-linked-role", "key-principal"]

# Preflight's clients: a short bounded retry and short timeouts (a read that cannot be made
# is reported, not waited for). Standard mode backs off at most ~1 s then ~2 s.
PREFLIGHT_MAX_ATTEMPTS = 3
PREFLIGHT_CONNECT_TIMEOUT_S = 3
PREFLIGHT_READ_TIMEOUT_S = 5
PREFLIGHT_CLIENT_CONFIG: dict[str, Any] = {
    "retries": {"mode": "standard", "total_max_attempts": PREFLIGHT_MAX_ATTEMPTS},
    "connect_timeout": PREFLIGHT_CONNECT_TIMEOUT_S,
    "read_timeout": PREFLIGHT_READ_TIMEOUT_S,
}
# Tag the stack's own resources carry (provider default tags): a service-linked role with it
# was created by this stack.
STACK_TAG = "llmcloud:stack"


class CheckUnavailable(Exception):
    """An AWS read that could not be made: not implemented, throttled, 5xx, a timeout."""

    def __init__(self, operation: str, reason: str) -> None:
        super().__init__(f"{operation}: {reason}")
        self.operation = operation
        self.reason = reason


def _unavailable_reason(exc: BaseException) -> str | None:
    """Why a call failed in a way no user action fixes, or None for anything else."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = error_code(exc)
        if status >= 500 or code in (
            "Throttling",
            "ThrottlingException",
            "TooManyRequests",
            "RequestLimitExceeded",
            "NotImplemented",
            "InternalFailure",
            "ServiceUnavailable",
        ):
            return f"{code or 'HTTP ' + str(status)} after {PREFLIGHT_MAX_ATTEMPTS} attempts"
        return None
    if isinstance(exc, ResponseParserError):  # an error page instead of an AWS answer (a 5xx)
        return "an answer that is not the API's (an HTTP error page)"
    if isinstance(exc, (bce.ReadTimeoutError, bce.ConnectTimeoutError, bce.ConnectionClosedError)):
        return f"no answer within {PREFLIGHT_READ_TIMEOUT_S} s ({type(exc).__name__})"
    return None


# EC2 vCPU quotas by instance family and market (Service Quotas, service code "ec2").
# Source: EC2 User Guide, "Amazon EC2 service quotas" and "Spot Instance quotas"; the P5
# spot quota (P5, P5e, P5en) is separate from the P4/P3/P2 one, the on-demand P quota is not.
ON_DEMAND_QUOTAS: dict[str, tuple[str, str]] = {
    "P": ("L-417A185B", "Running On-Demand P instances"),
    "G": ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    "standard": (
        "L-1216C47A",
        "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
    ),
}
SPOT_QUOTAS: dict[str, tuple[str, str]] = {
    "P5": ("L-C4BD4855", "All P5 Spot Instance Requests"),
    "P": ("L-7212CCBC", "All P4, P3 and P2 Spot Instance Requests"),
    "G": ("L-3819A6DF", "All G and VT Spot Instance Requests"),
    "standard": (
        "L-34B43A08",
        "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
    ),
}

# Capacity reservation states (DescribeCapacityReservations) that can launch instances now,
# and those that will without anyone acting.
_LAUNCHABLE = {"active"}
_UPCOMING = {"scheduled", "pending", "assessing", "payment-pending", "delayed"}
# Before a Capacity Block starts its counts read 0; the size it will have is in this tag.
CAPACITY_BLOCK_SIZE_TAG = "aws:ec2capacityreservation:incrementalRequestedQuantity"
# An active reservation ending sooner than this is worth a warning.
ENDING_SOON_S = 24 * 3600


@dataclass(frozen=True)
class Quota:
    code: str
    name: str


def quota_for(instance_type: str, market: Literal["on_demand", "spot"]) -> Quota:
    """The vCPU quota an instance type launches against, on demand or spot."""
    family = instance_type.split(".", 1)[0].lower()
    if family.startswith("p"):
        key = "P5" if market == "spot" and family.startswith("p5") else "P"
    elif family.startswith(("g", "vt")):
        key = "G"
    else:
        key = "standard"
    code, name = (ON_DEMAND_QUOTAS if market == "on_demand" else SPOT_QUOTAS)[key]
    return Quota(code, name)


class CapacityApi(Protocol):
    """The three reads preflight needs."""

    def vcpu_quota(self, code: str) -> float | None:
        """The applied value of an EC2 quota in vCPUs (None when AWS reports none)."""

    def offered_zones(self, instance_type: str) -> set[str]:
        """Zone names of the region where the instance type is offered."""

    def capacity_reservation(self, reservation_id: str) -> dict[str, Any] | None:
        """The `CapacityReservation` of DescribeCapacityReservations, None if not found."""


class BotoCapacityApi:
    """`CapacityApi` over boto3 clients (service-quotas and ec2, iam and sts for the account
    checks). An operation that could not be made once raises `CheckUnavailable` again at once
    (no second wait on an endpoint that refuses it)."""

    def __init__(self, ec2: Any, quotas: Any, iam: Any = None, sts: Any = None) -> None:
        self.ec2 = ec2
        self.quotas = quotas
        self.iam = iam
        self.sts = sts
        self._down: dict[str, CheckUnavailable] = {}

    def __getattribute__(self, name: str) -> Any:
        attr = object.__getattribute__(self, name)
        if name in _GUARDED and callable(attr):
            return object.__getattribute__(self, "_guard")(name, attr)
        return attr

    def _guard(self, name: str, method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if name in self._down:
                raise self._down[name]
            try:
                return method(*args, **kwargs)
            except NotImplementedError as e:  # an emulator (moto in-process) lacking the call
                self._down[name] = CheckUnavailable(_OPERATIONS[name], f"not implemented ({e})")
                raise self._down[name] from None
            except (ClientError, bce.BotoCoreError, ResponseParserError) as e:
                reason = _unavailable_reason(e)
                if reason is None:
                    raise
                self._down[name] = CheckUnavailable(_OPERATIONS[name], reason)
                raise self._down[name] from None

        return call

    def account_id(self) -> str:
        with aws_errors("read the account id (sts:GetCallerIdentity)"):
            return str(self.sts.get_caller_identity()["Account"])

    def role_tags(self, role_name: str) -> dict[str, str] | None:
        """The role's tags, None when there is no such role."""
        try:
            with aws_errors(f"read role {role_name} (iam:GetRole)"):
                role = self.iam.get_role(RoleName=role_name)["Role"]
        except ClientError as e:
            if error_code(e) == "NoSuchEntity":
                return None
            raise
        return {t["Key"]: t["Value"] for t in role.get("Tags", [])}

    def principal_exists(self, arn: str) -> bool:
        """Whether an IAM role or user of this account exists (by its ARN)."""
        kind, _, path_name = arn.split(":", 5)[5].partition("/")
        name = path_name.rsplit("/", 1)[-1]
        try:
            with aws_errors(f"read {kind} {name} (iam:Get{kind.capitalize()})"):
                if kind == "role":
                    self.iam.get_role(RoleName=name)
                elif kind == "user":
                    self.iam.get_user(UserName=name)
                else:
                    return True  # root, assumed roles: not IAM entities to look up
        except ClientError as e:
            if error_code(e) == "NoSuchEntity":
                return False
            raise
        return True

    def vcpu_quota(self, code: str) -> float | None:
        try:
            with aws_errors(f"read EC2 quota {code} (servicequotas:GetServiceQuota)"):
                return float(
                    self.quotas.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"][
                        "Value"
                    ]
                )
        except ClientError as e:
            if error_code(e) != "NoSuchResourceException":
                raise
        # No applied value: the account has the AWS default.
        try:
            with aws_errors(f"read EC2 quota {code} (servicequotas:GetAWSDefaultServiceQuota)"):
                response = self.quotas.get_aws_default_service_quota(
                    ServiceCode="ec2", QuotaCode=code
                )
                return float(response["Quota"]["Value"])
        except ClientError as e:
            if error_code(e) != "NoSuchResourceException":
                raise
        return None

    def offered_zones(self, instance_type: str) -> set[str]:
        zones: set[str] = set()
        with aws_errors("list instance type offerings (ec2:DescribeInstanceTypeOfferings)"):
            paginator = self.ec2.get_paginator("describe_instance_type_offerings")
            for page in paginator.paginate(
                LocationType="availability-zone",
                Filters=[{"Name": "instance-type", "Values": [instance_type]}],
            ):
                zones.update(o["Location"] for o in page["InstanceTypeOfferings"])
        return zones

    def capacity_reservation(self, reservation_id: str) -> dict[str, Any] | None:
        try:
            with aws_errors(
                f"read capacity reservation {reservation_id} (ec2:DescribeCapacityReservations)"
            ):
                response = self.ec2.describe_capacity_reservations(
                    CapacityReservationIds=[reservation_id]
                )
        except ClientError as e:
            if error_code(e).startswith("InvalidCapacityReservationId"):
                return None
            raise
        found = response.get("CapacityReservations") or []
        return found[0] if found else None


# The reads guarded by BotoCapacityApi, and the API operation each one makes (named in the
# `incomplete` finding).
_OPERATIONS = {
    "vcpu_quota": "servicequotas:GetServiceQuota/GetAWSDefaultServiceQuota",
    "offered_zones": "ec2:DescribeInstanceTypeOfferings",
    "capacity_reservation": "ec2:DescribeCapacityReservations",
    "account_id": "sts:GetCallerIdentity",
    "role_tags": "iam:GetRole",
    "principal_exists": "iam:GetRole/GetUser",
}
_GUARDED = frozenset(_OPERATIONS)


def boto_api(region: str, endpoint_url: str | None = None) -> BotoCapacityApi:
    """The API over clients with preflight's short retries and timeouts."""

    def make(service: str) -> Any:
        return awsclient.client(
            service, region=region, endpoint_url=endpoint_url, **PREFLIGHT_CLIENT_CONFIG
        )

    return BotoCapacityApi(make("ec2"), make("service-quotas"), make("iam"), make("sts"))


@dataclass(frozen=True)
class Finding:
    """One check's outcome; `fix` says what to do when it is not ok."""

    check: Check
    status: Status
    groups: tuple[str, ...]
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["groups"] = list(self.groups)
        return out


@dataclass
class PreflightReport:
    stack: str
    region: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return any(f.status == "blocked" for f in self.findings)

    @property
    def incomplete(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "incomplete"]

    @property
    def exit_code(self) -> int:
        """1 a blocker was found; else 2 when a check could not be made; else 0."""
        if self.blocked:
            return 1
        return 2 if self.incomplete else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "region": self.region,
            "ok": not self.blocked and not self.incomplete,
            "incomplete": sorted({f.check for f in self.incomplete}),
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass(frozen=True)
class _Group:
    """What preflight needs of a node group (GPU or system)."""

    name: str
    instance_type: str
    capacity: str
    min_size: int
    max_size: int
    zones: tuple[str, ...]
    reservation_id: str | None


def _groups(config: StackConfig) -> list[_Group]:
    out = []
    system = config.cluster.system_nodes
    out.append(
        _Group(
            name="system",
            instance_type=system.instance_types[0],
            capacity="on_demand",
            min_size=system.min_size,
            max_size=system.max_size,
            zones=tuple(config.network.availability_zones),
            reservation_id=None,
        )
    )
    for g in config.cluster.gpu_node_groups:
        out.append(
            _Group(
                name=g.name,
                instance_type=g.resolved_instance_type,
                capacity=g.capacity.type,
                min_size=g.min_size,
                max_size=g.max_size,
                zones=tuple(g.zones(config.network, config.region)),
                reservation_id=g.capacity.reservation_id,
            )
        )
    return out


def run_preflight(
    config: StackConfig, api: CapacityApi, *, region: str | None = None, now: datetime | None = None
) -> PreflightReport:
    """Every check for every node group of the stack; nothing is changed anywhere."""
    region = region or config.region
    now = now or datetime.now(UTC)
    report = PreflightReport(stack=config.stack, region=region)
    groups = _groups(config)
    report.findings.extend(_quota_findings(groups, api, region))
    report.findings.extend(_offering_findings(groups, api, config, region))
    for group in groups:
        if group.reservation_id:
            try:
                report.findings.append(_reservation_finding(group, api, now))
            except CheckUnavailable as e:
                report.findings.append(_incomplete("reservation", (group.name,), e))
    if hasattr(api, "role_tags"):
        report.findings.extend(_account_findings(config, api))
    return report


def _incomplete(check: Check, groups: tuple[str, ...], e: CheckUnavailable) -> Finding:
    return Finding(
        check,
        "incomplete",
        groups,
        f"could not check: {e.operation} failed ({e.reason})",
        f"run `llmcloud preflight` again later; if it persists, check {e.operation} by hand",
    )


# ----------------------------------------------------------------------------- account


def _account_findings(config: StackConfig, api: Any) -> Iterable[Finding]:
    """Service-linked roles, and the principals the key policies name."""
    creates = config.security.create_service_linked_roles
    for service in needed_services(config):
        role = SERVICE_LINKED_ROLES[service]
        try:
            tags = api.role_tags(role)
        except CheckUnavailable as e:
            yield _incomplete("service-linked-role", (role,), e)
            continue
        if tags is None and creates:
            yield Finding(
                "service-linked-role", "ok", (role,), f"absent: the stack creates it for {service}"
            )
        elif tags is None:
            yield Finding(
                "service-linked-role",
                "blocked",
                (role,),
                f"absent, and security.create_service_linked_roles is false; {service} needs it",
                f"aws iam create-service-linked-role --aws-service-name {service}, or set "
                "security.create_service_linked_roles: true",
            )
        elif creates and tags.get(STACK_TAG) != config.stack:
            yield Finding(
                "service-linked-role",
                "blocked",
                (role,),
                "exists already (not created by this stack): creating it again fails",
                "set security.create_service_linked_roles: false (the account has the roles), "
                "or `pulumi import` it into the stack",
            )
        else:
            yield Finding("service-linked-role", "ok", (role,), f"exists ({service})")
    try:
        account = api.account_id()
    except CheckUnavailable as e:
        yield _incomplete("key-principal", (), e)
        return
    for arn in key_policy_principals(config, account):
        if "aws-service-role/" in arn:
            continue  # the service-linked roles above
        owner = arn.split(":")[4]
        if owner != account:
            yield Finding(
                "key-principal",
                "warn",
                (arn,),
                f"in account {owner}, not {account}: it cannot be checked from here, and KMS "
                "refuses the key policy if it does not exist",
                f"check it exists in {owner} before `pulumi up`",
            )
            continue
        try:
            exists = api.principal_exists(arn)
        except CheckUnavailable as e:
            yield _incomplete("key-principal", (arn,), e)
            continue
        if exists:
            yield Finding("key-principal", "ok", (arn,), "exists")
        else:
            yield Finding(
                "key-principal",
                "blocked",
                (arn,),
                "named in the KMS key policies but does not exist: KMS refuses the policy "
                "(MalformedPolicyDocumentException: invalid principals)",
                "create it first, or remove it from security.key_admin_arns",
            )


# ----------------------------------------------------------------------------- quotas


def _quota_findings(groups: list[_Group], api: CapacityApi, region: str) -> Iterable[Finding]:
    catalog = load_catalog()
    need: dict[Quota, list[tuple[_Group, int]]] = {}
    for g in groups:
        if g.capacity not in ("on_demand", "spot"):
            continue
        vcpus = catalog.instance(g.instance_type).vcpus * g.max_size
        need.setdefault(quota_for(g.instance_type, g.capacity), []).append((g, vcpus))  # type: ignore[arg-type]
    for quota, users in need.items():
        needed = sum(v for _, v in users)
        names = tuple(g.name for g, _ in users)
        breakdown = " + ".join(
            f"{g.name} {g.max_size}×{g.instance_type} ({v} vCPUs)" for g, v in users
        )
        try:
            value = api.vcpu_quota(quota.code)
        except CheckUnavailable as e:
            yield _incomplete("quota", names, e)
            continue
        if value is None:
            yield Finding(
                "quota",
                "warn",
                names,
                f"{quota.name} ({quota.code}): Service Quotas reports no value; needs "
                f"{needed} vCPUs at max ({breakdown})",
                "check the quota in the Service Quotas console",
            )
        elif value < needed:
            yield Finding(
                "quota",
                "blocked",
                names,
                f"{quota.name} ({quota.code}) is {value:g} vCPUs; the stack needs {needed} at "
                f"max ({breakdown})",
                f"request an increase to at least {needed}: aws service-quotas "
                f"request-service-quota-increase --service-code ec2 --quota-code {quota.code} "
                f"--desired-value {needed} --region {region}",
            )
        else:
            yield Finding(
                "quota",
                "ok",
                names,
                f"{quota.name} ({quota.code}) is {value:g} vCPUs; the stack needs {needed} at max",
            )


# ----------------------------------------------------------------------------- offerings


def _offering_findings(
    groups: list[_Group], api: CapacityApi, config: StackConfig, region: str
) -> Iterable[Finding]:
    offered_cache: dict[str, set[str]] = {}
    for g in groups:
        if g.instance_type not in offered_cache:
            try:
                offered_cache[g.instance_type] = api.offered_zones(g.instance_type)
            except CheckUnavailable as e:
                yield _incomplete("offering", (g.name,), e)
                continue
        offered = offered_cache[g.instance_type]
        missing = [z for z in g.zones if z not in offered]
        if not missing:
            yield Finding(
                "offering",
                "ok",
                (g.name,),
                f"{g.instance_type} is offered in {', '.join(g.zones)}",
            )
            continue
        vpc_offered = [z for z in config.network.availability_zones if z in offered]
        elsewhere = sorted(offered - set(config.network.availability_zones))
        if g.reservation_id:
            fix = "use a reservation in a zone that offers the type" + (
                f" ({', '.join(vpc_offered)})" if vpc_offered else ""
            )
        elif vpc_offered:
            key = "availability_zones"
            fix = f"move the group to {' or '.join(vpc_offered)} (cluster.gpu_node_groups[].{key})"
        elif elsewhere:
            fix = (
                f"{g.instance_type} is offered in {', '.join(elsewhere)} of {region}: add one of "
                "them to network.availability_zones, or pick another instance type"
            )
        else:
            fix = f"{g.instance_type} is not offered in {region}: pick another region or type"
        yield Finding(
            "offering",
            "blocked",
            (g.name,),
            f"{g.instance_type} is not offered in {', '.join(missing)}",
            fix,
        )


# ----------------------------------------------------------------------------- reservations


def _when(moment: Any, now: datetime) -> str:
    if not isinstance(moment, datetime):
        return str(moment)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    delta = moment - now
    stamp = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    hours = abs(delta.total_seconds()) / 3600
    span = f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"
    return f"{stamp} ({'in ' + span if delta.total_seconds() >= 0 else span + ' ago'})"


def _reservation_finding(group: _Group, api: CapacityApi, now: datetime) -> Finding:
    rid = group.reservation_id or ""
    kind = "capacity block" if group.capacity == "capacity_block" else "capacity reservation"
    names = (group.name,)
    zone = group.zones[0] if group.zones else ""
    r = api.capacity_reservation(rid)
    if r is None:
        buy = (
            f"buy one: aws ec2 describe-capacity-block-offerings --instance-type "
            f"{group.instance_type} --instance-count {group.max_size} --capacity-duration-hours 24, "
            "then purchase-capacity-block"
            if group.capacity == "capacity_block"
            else f"create one: aws ec2 create-capacity-reservation --instance-type "
            f"{group.instance_type} --instance-platform Linux/UNIX --availability-zone {zone} "
            f"--instance-count {group.max_size} --instance-match-criteria targeted"
        )
        return Finding(
            "reservation",
            "blocked",
            names,
            f"{kind} {rid} does not exist in this region or is not visible to this account",
            f"{buy}; set capacity.reservation_id to its id",
        )
    problems: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    rtype = r.get("ReservationType", "default")
    if group.capacity == "capacity_block" and rtype != "capacity-block":
        problems.append(
            (
                f"{rid} is an On-Demand Capacity Reservation, not a capacity block",
                "set capacity.type: reservation",
            )
        )
    if group.capacity == "reservation" and rtype == "capacity-block":
        problems.append((f"{rid} is a capacity block", "set capacity.type: capacity_block"))
    if r.get("InstanceType") != group.instance_type:
        problems.append(
            (
                f"{rid} reserves {r.get('InstanceType')}, the group runs {group.instance_type}",
                f"set instance_type: {r.get('InstanceType')} or use a reservation for {group.instance_type}",
            )
        )
    if r.get("AvailabilityZone") != zone:
        problems.append(
            (
                f"{rid} is in {r.get('AvailabilityZone')}, the group is pinned to {zone}",
                f"set capacity.availability_zone: {r.get('AvailabilityZone')}",
            )
        )
    platform = r.get("InstancePlatform", "Linux/UNIX")
    if platform != "Linux/UNIX":
        problems.append(
            (f"{rid} is for {platform}; EKS nodes run Linux/UNIX", "use a Linux/UNIX reservation")
        )
    if r.get("Tenancy", "default") != "default":
        problems.append(
            (f"{rid} has {r.get('Tenancy')} tenancy", "use a default-tenancy reservation")
        )

    state = str(r.get("State", ""))
    start, end = r.get("StartDate"), r.get("EndDate")
    tags = {t.get("Key"): t.get("Value") for t in r.get("Tags") or []}
    total = int(r.get("TotalInstanceCount") or 0)
    if state != "active" and CAPACITY_BLOCK_SIZE_TAG in tags:
        total = max(total, int(tags[CAPACITY_BLOCK_SIZE_TAG]))
    available = int(r.get("AvailableInstanceCount") or 0)

    if state in _LAUNCHABLE:
        timing = f"active until {_when(end, now)}" if end else "active (no end date)"
        if end and isinstance(end, datetime):
            end_utc = end if end.tzinfo else end.replace(tzinfo=UTC)
            if end_utc <= now:
                problems.append((f"{rid} ended {_when(end, now)}", "buy a new capacity block"))
            elif (end_utc - now).total_seconds() < ENDING_SOON_S:
                warnings.append(
                    (
                        f"it ends {_when(end, now)}; EC2 terminates its instances 30 minutes "
                        "before the end",
                        "extend it or buy the next block before it ends",
                    )
                )
    elif state in _UPCOMING:
        timing = f"{state}, starts {_when(start, now)}" if start else state
        if group.min_size > 0:
            problems.append(
                (
                    f"{rid} is {state} (starts {_when(start, now)}) but the group needs "
                    f"{group.min_size} nodes at creation",
                    "set min_size: 0 until the reservation starts, or deploy after it starts",
                )
            )
        else:
            warnings.append(
                (
                    "nodes can launch once it starts",
                    "deploy now (the group starts at 0 nodes) and scale up once it is active",
                )
            )
    else:
        timing = state
        problems.append(
            (
                f"{rid} is {state or 'in an unknown state'}; it cannot launch instances",
                "buy a new capacity block"
                if rtype == "capacity-block"
                else "create a new reservation",
            )
        )

    if total < group.max_size:
        problems.append(
            (
                f"{rid} holds {total} instances, the group scales to {group.max_size}",
                f"set max_size: {total}, or add {group.max_size - total} instances to the reservation",
            )
        )
    elif state in _LAUNCHABLE and available < group.max_size:
        warnings.append(
            (
                f"{available} of {total} reserved instances are free (the rest run already, "
                f"maybe this stack's own nodes); the group scales to {group.max_size}",
                "check what runs in the reservation: aws ec2 describe-instances --filters "
                f"Name=capacity-reservation-id,Values={rid}",
            )
        )
    summary = (
        f"{kind} {rid}: {total}× {r.get('InstanceType')} in {r.get('AvailabilityZone')}, {timing}"
    )
    if problems:
        return Finding(
            "reservation",
            "blocked",
            names,
            summary + "; " + "; ".join(p for p, _ in problems + warnings),
            "; ".join(f for _, f in problems + warnings),
        )
    if warnings:
        return Finding(
            "reservation",
            "warn",
            names,
            summary + "; " + "; ".join(p for p, _ in warnings),
            "; ".join(f for _, f in warnings),
        )
    return Finding("reservation", "ok", names, summary)


# ----------------------------------------------------------------------------- rendering


def render_table(report: PreflightReport, console: Any) -> None:
    from rich.table import Table
    from rich.text import Text  # details quote AWS and config text: not rich markup

    table = Table(
        title=f"llmcloud preflight {report.stack} ({report.region})",
        header_style="bold",
        show_lines=True,
    )
    for column in ("check", "node group", "status", "detail", "how to fix"):
        table.add_column(column, overflow="fold")
    styles = {"ok": "green", "warn": "yellow", "blocked": "red bold", "incomplete": "magenta bold"}
    order = {"blocked": 0, "incomplete": 1, "warn": 2, "ok": 3}
    for f in sorted(report.findings, key=lambda f: (order[f.status], f.check, f.groups)):
        table.add_row(
            f.check,
            ", ".join(f.groups),
            f"[{styles[f.status]}]{f.status}[/]",
            Text(f.detail),
            Text(f.fix),
        )
    console.print(table)
    if report.blocked:
        n = sum(f.status == "blocked" for f in report.findings)
        console.print(f"[red bold]BLOCKED[/]: {n} check(s) would stop the deploy")
    if report.incomplete:
        names = ", ".join(sorted({f.check for f in report.incomplete}))
        console.print(f"[magenta bold]INCOMPLETE[/]: could not check {names}")
    if not report.blocked and not report.incomplete:
        console.print("[green bold]OK[/]: quotas, offerings and reservations allow the deploy")
