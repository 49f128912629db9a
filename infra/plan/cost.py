"""Cost estimate of a plan: every priced resource the program declares, at idle (each
scalable group at its minimum) and at max, from list prices recorded in data files.

Instance prices come from the GPU catalog (`infra/data/catalog.json`); every other price
from `infra/data/prices.json`, both with their source and date. Usage-driven charges (data
processed, requests, log ingestion nobody sized) are left out and said so in the notes:
an estimate that guesses usage would look precise and be wrong.

Capacity is labelled, not guessed:
- `spot` groups are priced at the on-demand rate, an upper bound (spot prices move hourly);
- `reservation` groups (a targeted On-Demand Capacity Reservation) are billed at the
  on-demand rate for every reserved instance whether used or not, so idle = max, priced at
  the group's max size (the reservation holds at least that many, or the group cannot scale);
- `capacity_block` groups are prepaid when the block is bought: their hourly is 0 here and
  the description carries the on-demand equivalent. Their EBS volumes are still billed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from infra.catalog import Catalog, load_catalog
from infra.config import StackConfig
from infra.plan.engine import Plan, Resource
from infra.plan.results import HOURS_PER_MONTH, CostItem, CostReport

PRICES_PATH = Path(__file__).resolve().parents[1] / "data" / "prices.json"

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
CLUSTER = "aws:eks/cluster:Cluster"
NAT_GATEWAY = "aws:ec2/natGateway:NatGateway"
EIP = "aws:ec2/eip:Eip"
VPC_ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"
FSX_LUSTRE = "aws:fsx/lustreFileSystem:LustreFileSystem"
KMS_KEY = "aws:kms/key:Key"
EBS_VOLUME = "aws:ebs/volume:Volume"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
K8S_SERVICE = "kubernetes:core/v1:Service"
TRAIL = "aws:cloudtrail/trail:Trail"
EC2_INSTANCE = "aws:ec2/instance:Instance"
AUTOSCALING_GROUP = "aws:autoscaling/group:Group"
LOAD_BALANCERS = ("aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer")
CLASSIC_LOAD_BALANCER = "aws:elb/loadBalancer:LoadBalancer"
RDS_INSTANCE = "aws:rds/instance:Instance"
SECRET = "aws:secretsmanager/secret:Secret"

# EKS capacityType -> our capacity label, when a node group carries no llmcloud:capacity tag.
_CAPACITY_TYPES = {"ON_DEMAND": "on_demand", "SPOT": "spot", "CAPACITY_BLOCK": "capacity_block"}


@dataclass(frozen=True)
class Prices:
    """List prices of everything but instances (those are in the catalog)."""

    date: str
    region: str
    sources: dict[str, str]
    same_prices_as_base: tuple[str, ...]
    eks_cluster_hourly_usd: float
    eks_extended_support_cluster_hourly_usd: float
    nat_gateway_hourly_usd: float
    nat_gateway_per_gb_usd: float
    public_ipv4_hourly_usd: float
    interface_endpoint_hourly_usd_per_az: float
    interface_endpoint_per_gb_usd: float
    ebs_gb_month_usd: dict[str, float]
    ebs_gp3_included_iops: int
    ebs_gp3_included_throughput_mbps: int
    ebs_gp3_iops_month_usd: float
    ebs_gp3_throughput_mbps_month_usd: float
    ebs_default_volume_type: str
    eks_node_group_default_disk_gb: int
    fsx_lustre_gb_month_usd: dict[str, dict[int, float]]
    fsx_lustre_scratch_gb_month_usd: float
    kms_key_month_usd: float
    s3_standard_gb_month_usd: float
    cloudwatch_logs_ingestion_per_gb_usd: float
    cloudwatch_logs_storage_gb_month_usd: float
    nlb_hourly_usd: float
    alb_hourly_usd: float = 0.0
    gwlb_hourly_usd: float = 0.0
    clb_hourly_usd: float = 0.0
    ec2_usd_per_gib_hour: dict[str, float] = field(default_factory=dict)
    ec2_memory_gib: dict[str, float] = field(default_factory=dict)
    ec2_default_root_volume_gb: int = 8
    rds_instance_hourly_usd: dict[str, dict[str, float]] = field(default_factory=dict)
    rds_engine_aliases: dict[str, str] = field(default_factory=dict)
    rds_storage_gb_month_usd: dict[str, float] = field(default_factory=dict)
    no_charge_type_prefixes: tuple[str, ...] = ()
    secretsmanager_secret_month_usd: float = 0.0

    def ec2_hourly_usd(self, instance_type: str) -> float | None:
        """On-demand $/h of a non-GPU instance type of a recorded family: the family's rate
        per GiB-hour × the size's memory (moto's instance data); None if not recorded."""
        rate = self.ec2_usd_per_gib_hour.get(instance_type.split(".", 1)[0])
        memory = self.ec2_memory_gib.get(instance_type)
        if rate is None or memory is None:
            return None
        return round(rate * memory, 6)

    def no_charge(self, token: str) -> bool:
        return token.startswith(self.no_charge_type_prefixes)


@cache
def load_prices(path: Path = PRICES_PATH) -> Prices:
    """Load (once per process) the price data file."""
    raw = json.loads(path.read_text())
    fsx = {
        deployment: {int(tier): float(price) for tier, price in tiers.items()}
        for deployment, tiers in raw["fsx_lustre_gb_month_usd"].items()
    }
    return Prices(
        date=raw["date"],
        region=raw["region"],
        sources=dict(raw["sources"]),
        same_prices_as_base=tuple(raw["same_prices_as_us_east_1"]),
        eks_cluster_hourly_usd=float(raw["eks_cluster_hourly_usd"]),
        eks_extended_support_cluster_hourly_usd=float(
            raw["eks_extended_support_cluster_hourly_usd"]
        ),
        nat_gateway_hourly_usd=float(raw["nat_gateway_hourly_usd"]),
        nat_gateway_per_gb_usd=float(raw["nat_gateway_per_gb_usd"]),
        public_ipv4_hourly_usd=float(raw["public_ipv4_hourly_usd"]),
        interface_endpoint_hourly_usd_per_az=float(raw["interface_endpoint_hourly_usd_per_az"]),
        interface_endpoint_per_gb_usd=float(raw["interface_endpoint_per_gb_usd"]),
        ebs_gb_month_usd={k: float(v) for k, v in raw["ebs_gb_month_usd"].items()},
        ebs_gp3_included_iops=int(raw["ebs_gp3_included_iops"]),
        ebs_gp3_included_throughput_mbps=int(raw["ebs_gp3_included_throughput_mbps"]),
        ebs_gp3_iops_month_usd=float(raw["ebs_gp3_iops_month_usd"]),
        ebs_gp3_throughput_mbps_month_usd=float(raw["ebs_gp3_throughput_mbps_month_usd"]),
        ebs_default_volume_type=raw["ebs_default_volume_type"],
        eks_node_group_default_disk_gb=int(raw["eks_node_group_default_disk_gb"]),
        fsx_lustre_gb_month_usd=fsx,
        fsx_lustre_scratch_gb_month_usd=float(raw["fsx_lustre_scratch_gb_month_usd"]),
        kms_key_month_usd=float(raw["kms_key_month_usd"]),
        s3_standard_gb_month_usd=float(raw["s3_standard_gb_month_usd"]),
        cloudwatch_logs_ingestion_per_gb_usd=float(raw["cloudwatch_logs_ingestion_per_gb_usd"]),
        cloudwatch_logs_storage_gb_month_usd=float(raw["cloudwatch_logs_storage_gb_month_usd"]),
        nlb_hourly_usd=float(raw["nlb_hourly_usd"]),
        alb_hourly_usd=float(raw["alb_hourly_usd"]),
        gwlb_hourly_usd=float(raw["gwlb_hourly_usd"]),
        clb_hourly_usd=float(raw["clb_hourly_usd"]),
        ec2_usd_per_gib_hour={
            k: float(v) for k, v in raw["ec2_on_demand_usd_per_gib_hour"].items()
        },
        ec2_memory_gib={k: float(v) for k, v in raw["ec2_instance_memory_gib"].items()},
        ec2_default_root_volume_gb=int(raw["ec2_default_root_volume_gb"]),
        rds_instance_hourly_usd={
            engine: {cls: float(v) for cls, v in classes.items()}
            for engine, classes in raw["rds_instance_hourly_usd"].items()
        },
        rds_engine_aliases=dict(raw["rds_engine_aliases"]),
        rds_storage_gb_month_usd={k: float(v) for k, v in raw["rds_storage_gb_month_usd"].items()},
        no_charge_type_prefixes=tuple(raw["no_charge_type_prefixes"]),
        secretsmanager_secret_month_usd=float(raw["secretsmanager_secret_month_usd"]),
    )


def ebs_volume_month_usd(
    prices: Prices,
    size_gb: float,
    volume_type: str | None = None,
    iops: int | None = None,
    throughput_mbps: int | None = None,
) -> float | None:
    """Monthly price of one EBS volume; None for a volume type without a recorded price.
    gp3 IOPS and throughput above the included baseline are billed on top."""
    vtype = volume_type or prices.ebs_default_volume_type
    per_gb = prices.ebs_gb_month_usd.get(vtype)
    if per_gb is None:
        return None
    monthly = size_gb * per_gb
    if vtype == "gp3":
        monthly += (
            max(0, (iops or 0) - prices.ebs_gp3_included_iops) * prices.ebs_gp3_iops_month_usd
        )
        monthly += (
            max(0, (throughput_mbps or 0) - prices.ebs_gp3_included_throughput_mbps)
            * prices.ebs_gp3_throughput_mbps_month_usd
        )
    return monthly


def fsx_lustre_gb_month_usd(
    prices: Prices, deployment_type: str, throughput_mbps_per_tib: int | None
) -> float | None:
    """$/GB-month of an FSx for Lustre SSD file system; None when the tier has no price."""
    if deployment_type.startswith("SCRATCH"):
        return prices.fsx_lustre_scratch_gb_month_usd
    tiers = prices.fsx_lustre_gb_month_usd.get(deployment_type, {})
    if throughput_mbps_per_tib is None:
        return None
    return tiers.get(int(throughput_mbps_per_tib))


def estimate_cost(plan: Plan, config: StackConfig | None, today: date | None = None) -> CostReport:
    """Price every priced resource of a recorded plan (see the module docstring). `today`: the
    day of the plan, for the EKS support calendar (default: today, UTC)."""
    return _Estimator(plan, config, load_prices(), load_catalog(), today).run()


def _hourly(monthly_usd: float) -> float:
    return monthly_usd / HOURS_PER_MONTH


def _usd(value: float) -> str:
    """$1,234.56 for dollars, $0.045 / $0.10 for cents (at least two decimals, at most four)."""
    if value >= 1 or value == 0:
        return f"${value:,.2f}"
    text = f"{value:.4f}".rstrip("0")
    return "$" + (text if len(text.split(".")[1]) >= 2 else f"{value:.2f}")


class _Estimator:
    def __init__(
        self,
        plan: Plan,
        config: StackConfig | None,
        prices: Prices,
        catalog: Catalog,
        today: date | None = None,
    ) -> None:
        self.today = today
        self.plan = plan
        self.config = config
        self.prices = prices
        self.catalog = catalog
        self.items: list[CostItem] = []
        self.notes: list[str] = []
        self._labels: set[str] = set()
        # resources looked at and deliberately not priced (usage-only, free by design)
        self._accounted: set[str] = set()
        self._failed: set[str] = set()  # partly priced: listed as not priced all the same

    # ------------------------------------------------------------------ driver

    def run(self) -> CostReport:
        region = self._region()
        self.notes.append(
            f"List prices of {self.prices.region} recorded {self.prices.date} "
            "(infra/data/prices.json; instance prices from infra/data/catalog.json, "
            f"recorded {self.catalog.date}); a month is {HOURS_PER_MONTH:.0f} hours. "
            "idle = every scalable group at its minimum, max = at its maximum."
        )
        if region and region not in self.prices.same_prices_as_base:
            self.notes.append(
                f"Region {region}: priced with {self.prices.region} list prices, which are a "
                f"lower bound there (list prices in {region} are typically higher); "
                f"{', '.join(self.prices.same_prices_as_base)} share the same prices."
            )
        self._node_groups()
        self._volumes()
        self._clusters()
        self._nat_gateways()
        self._public_ips()
        self._endpoints()
        self._fsx()
        self._kms_keys()
        self._buckets()
        self._log_groups()
        self._trails()
        self._load_balancers()
        self._ec2_instances()
        self._autoscaling_groups()
        self._aws_load_balancers()
        self._rds_instances()
        self._secrets()
        self._capacity_notes()
        self.items.sort(key=lambda i: i.urn)
        unpriced = self._unpriced()
        return CostReport(items=self.items, notes=self.notes, unpriced=unpriced)

    def _unpriced(self) -> list[dict[str, Any]]:
        """Every resource the estimate neither priced nor knows AWS does not bill by itself,
        by type, with a note: an unpriced resource is not free."""
        priced = {i.urn for i in self.items} | self._accounted
        missing: dict[str, list[str]] = {}
        for r in self.plan.resources:
            if r.urn not in self._failed and (
                not r.custom or r.urn in priced or self.prices.no_charge(r.type)
            ):
                continue
            missing.setdefault(r.type, []).append(r.urn)
        out = [
            {"type": token, "count": len(urns), "urns": sorted(urns)}
            for token, urns in sorted(missing.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        ]
        if out:
            self.notes.append(
                "not priced: "
                + ", ".join(f"{u['count']} × {u['type']}" for u in out)
                + " (no recorded price: the totals leave them out)"
            )
        return out

    def _region(self) -> str | None:
        if self.config is not None:
            return self.config.region
        for r in self.plan.resources:
            if r.type == "pulumi:providers:aws" and r.inputs.get("region"):
                return str(r.inputs["region"])
        return None

    def _add(
        self,
        resource: Resource,
        hourly_idle: float,
        hourly_max: float,
        description: str,
        pricing: str = "on_demand",
        *,
        name: str | None = None,
    ) -> None:
        component = self.plan.component_of(resource)
        self.items.append(
            CostItem(
                urn=resource.urn,
                name=name or resource.name,
                type=resource.type,
                hourly_idle=hourly_idle,
                hourly_max=hourly_max,
                description=description,
                component=component.name if component else None,
                pricing=pricing,
            )
        )
        self._labels.add(pricing)

    # ------------------------------------------------------------------ compute

    def _node_groups(self) -> None:
        templates = self.plan.by_type(LAUNCH_TEMPLATE)
        for group in self.plan.by_type(NODE_GROUP):
            inputs = group.inputs
            scaling = inputs.get("scalingConfig") or {}
            low, high = int(scaling.get("minSize") or 0), int(scaling.get("maxSize") or 0)
            template = _template_of(group, templates)
            lt_inputs = template.inputs if template else {}
            capacity = _capacity_label(group)
            types = list(inputs.get("instanceTypes") or [])
            if not types and lt_inputs.get("instanceType"):
                types = [str(lt_inputs["instanceType"])]
            self._instances(group, types, capacity, low, high, lt_inputs)
            self._node_volumes(group, template, low, high)

    def _instances(
        self,
        group: Resource,
        types: list[str],
        capacity: str,
        low: int,
        high: int,
        lt_inputs: dict[str, Any],
    ) -> None:
        if not types:
            self.notes.append(
                f"Node group {group.name}: no instance type in the node group or its launch "
                "template; not priced."
            )
            return
        rates = {t: self._instance_hourly(t) for t in types}
        missing = [t for t, rate in rates.items() if rate is None]
        if missing:
            self._failed.add(group.urn)  # its volumes may be priced; its instances are not
            self.notes.append(
                f"Node group {group.name}: instance type {', '.join(missing)} has no recorded "
                "price (infra/data/catalog.json, infra/data/prices.json); not priced."
            )
            return
        # On-demand groups launch the first type (prioritized); spot may get any: upper bound.
        name = max(types, key=lambda t: rates[t] or 0.0) if capacity == "spot" else types[0]
        rate = float(rates[name] or 0.0)
        sizes = f"{low}–{high} nodes" if low != high else f"{high} nodes"
        base = f"{name} at {_usd(rate)}/h × {sizes}"
        reservation = _reservation_id(lt_inputs)
        if capacity == "spot":
            self._add(
                group,
                low * rate,
                high * rate,
                f"{base}; spot, at the on-demand rate (upper bound)",
                "spot",
            )
        elif capacity == "reservation":
            self._add(
                group,
                high * rate,
                high * rate,
                f"{base}; targeted ODCR {reservation or '(id not in the plan)'} billed at "
                f"on-demand for {high} reserved instances, used or not",
                "reservation",
            )
        elif capacity == "capacity_block":
            self._add(
                group,
                0.0,
                0.0,
                f"{base}; capacity block {reservation or '(id not in the plan)'} prepaid at "
                f"purchase (on-demand equivalent {_usd(high * rate)}/h at max)",
                "capacity_block",
            )
        else:
            self._add(group, low * rate, high * rate, base, "on_demand")

    def _node_volumes(
        self, group: Resource, template: Resource | None, low: int, high: int
    ) -> None:
        volumes: list[dict[str, Any]] = []
        if template is not None:
            for mapping in template.inputs.get("blockDeviceMappings") or []:
                ebs = mapping.get("ebs") or {}
                if ebs.get("volumeSize"):
                    volumes.append(ebs)
        owner = template if volumes and template is not None else group
        if not volumes:
            size = group.inputs.get("diskSize") or self.prices.eks_node_group_default_disk_gb
            volumes = [{"volumeSize": size, "volumeType": self.prices.ebs_default_volume_type}]
        per_node_month = 0.0
        shown = []
        for ebs in volumes:
            monthly = ebs_volume_month_usd(
                self.prices,
                float(ebs["volumeSize"]),
                ebs.get("volumeType"),
                ebs.get("iops"),
                ebs.get("throughput"),
            )
            vtype = ebs.get("volumeType") or self.prices.ebs_default_volume_type
            if monthly is None:
                self.notes.append(
                    f"Node group {group.name}: EBS volume type {vtype} has no recorded price; "
                    "not priced."
                )
                continue
            per_node_month += monthly
            shown.append(f"{vtype} {ebs['volumeSize']} GiB")
        if not shown:
            return
        per_node = _hourly(per_node_month)
        self._add(
            owner,
            low * per_node,
            high * per_node,
            f"EBS {' + '.join(shown)} per node ({_usd(per_node_month)}/month) × {low}–{high} "
            f"nodes of {group.name}",
            "on_demand",
            name=f"{group.name}-volumes" if owner is group else None,
        )

    def _volumes(self) -> None:
        for volume in self.plan.by_type(EBS_VOLUME):
            i = volume.inputs
            monthly = ebs_volume_month_usd(
                self.prices,
                float(i.get("size") or 0),
                i.get("type"),
                i.get("iops"),
                i.get("throughput"),
            )
            if monthly is None:
                self.notes.append(
                    f"EBS volume {volume.name}: type {i.get('type')} has no recorded price."
                )
                continue
            h = _hourly(monthly)
            self._add(
                volume,
                h,
                h,
                f"EBS {i.get('type') or self.prices.ebs_default_volume_type} {i.get('size')} GiB",
            )

    # ------------------------------------------------------------------ control plane, network

    def _clusters(self) -> None:
        # the EKS calendar decides the support (and so the rate) of the version on the plan's day
        from infra.config.eks_versions import load_eks_calendar, plan_day, support_note

        day = self.today or plan_day()
        calendar = load_eks_calendar()
        for cluster in self.plan.by_type(CLUSTER):
            version = str(cluster.inputs.get("version") or "")
            extended = self.prices.eks_extended_support_cluster_hourly_usd
            if calendar.support(version, day) == "extended":
                rate = extended
                description = f"EKS control plane, Kubernetes {version} in extended support"
            else:
                rate = self.prices.eks_cluster_hourly_usd
                description = (
                    f"EKS control plane, standard support ({_usd(extended)}/h "
                    "once the version is in extended support)"
                )
            self._add(cluster, rate, rate, description)
            note = support_note(version, day, calendar)
            if note and note not in self.notes:
                self.notes.append(note)

    def _nat_gateways(self) -> None:
        gateways = self.plan.by_type(NAT_GATEWAY)
        for nat in gateways:
            rate = self.prices.nat_gateway_hourly_usd
            self._add(nat, rate, rate, "NAT gateway hours")
        if gateways:
            self.notes.append(
                f"NAT gateways: hours only; data processed ({_usd(self.prices.nat_gateway_per_gb_usd)}/GB) "
                "is usage and left out."
            )

    def _public_ips(self) -> None:
        for eip in self.plan.by_type(EIP):
            rate = self.prices.public_ipv4_hourly_usd
            self._add(eip, rate, rate, "public IPv4 address")

    def _endpoints(self) -> None:
        interface = [
            e
            for e in self.plan.by_type(VPC_ENDPOINT)
            if e.inputs.get("vpcEndpointType") == "Interface"
        ]
        self._accounted.update(e.urn for e in self.plan.by_type(VPC_ENDPOINT))  # gateway: free
        for endpoint in interface:
            zones = len(endpoint.inputs.get("subnetIds") or []) or 1
            rate = self.prices.interface_endpoint_hourly_usd_per_az * zones
            service = str(endpoint.inputs.get("serviceName", "")).rsplit(".", 1)[-1]
            self._add(endpoint, rate, rate, f"interface endpoint {service} in {zones} zone(s)")
        if interface:
            self.notes.append(
                f"Interface endpoints: hours per zone only; data processed "
                f"({_usd(self.prices.interface_endpoint_per_gb_usd)}/GB) is usage and left out. "
                "Gateway endpoints (S3) are free."
            )

    # ------------------------------------------------------------------ storage, keys, logs

    def _fsx(self) -> None:
        for fs in self.plan.by_type(FSX_LUSTRE):
            i = fs.inputs
            deployment = str(i.get("deploymentType") or "SCRATCH_1")
            tier = i.get("perUnitStorageThroughput")
            capacity_gib = float(i.get("storageCapacity") or 0)
            per_gb = fsx_lustre_gb_month_usd(self.prices, deployment, tier)
            if per_gb is None:
                self.notes.append(
                    f"FSx for Lustre {fs.name}: {deployment} at {tier} MB/s/TiB has no recorded "
                    "price; not priced."
                )
                continue
            h = _hourly(capacity_gib * per_gb)
            self._add(
                fs,
                h,
                h,
                f"FSx for Lustre {deployment} {capacity_gib:,.0f} GiB at {tier} MB/s/TiB "
                f"({_usd(per_gb)}/GB-month)",
            )
            if int(i.get("automaticBackupRetentionDays") or 0) > 0:
                self.notes.append(
                    f"FSx for Lustre {fs.name}: backup storage is usage (incremental) and left out."
                )

    def _kms_keys(self) -> None:
        for key in self.plan.by_type(KMS_KEY):
            h = _hourly(self.prices.kms_key_month_usd)
            self._add(
                key, h, h, f"KMS customer managed key ({_usd(self.prices.kms_key_month_usd)}/month)"
            )

    def _buckets(self) -> None:
        buckets = [r for r in self.plan.resources if r.type in BUCKETS]
        sizes = dict(self.config.storage.expected_size_gb) if self.config else {}
        if not sizes:
            if buckets:
                self.notes.append(
                    f"S3: {len(buckets)} bucket(s) left out: storage is usage; set "
                    "storage.expected_size_gb (datasets, checkpoints, models) to price it."
                )
            return
        for purpose, size_gb in sorted(sizes.items()):
            bucket = next((b for b in buckets if _bucket_purpose(b) == purpose), None)
            if bucket is None:
                self.notes.append(
                    f"S3: storage.expected_size_gb.{purpose} is set but the plan has no "
                    f"{purpose} bucket; not priced."
                )
                continue
            h = _hourly(size_gb * self.prices.s3_standard_gb_month_usd)
            self._add(
                bucket,
                h,
                h,
                f"S3 Standard {size_gb:,.0f} GB expected ({_usd(self.prices.s3_standard_gb_month_usd)}/GB-month)",
            )
        self.notes.append(
            "S3: sized buckets at S3 Standard (an upper bound where Intelligent-Tiering moves "
            "objects to cheaper tiers); requests and unsized buckets are left out."
        )

    def _log_groups(self) -> None:
        groups = self.plan.by_type(LOG_GROUP)
        if groups:
            self.notes.append(
                f"CloudWatch Logs: {len(groups)} log group(s) left out: ingestion is usage "
                f"({_usd(self.prices.cloudwatch_logs_ingestion_per_gb_usd)}/GB ingested, "
                f"{_usd(self.prices.cloudwatch_logs_storage_gb_month_usd)}/GB-month stored) and "
                "no log volume is sized in the stack config."
            )

    def _trails(self) -> None:
        trails = self.plan.by_type(TRAIL)
        if trails:
            self.notes.append(
                f"CloudTrail: {len(trails)} trail(s) not priced: the first copy of management "
                "events is free; data events and the S3 storage of log files are usage."
            )

    def _load_balancers(self) -> None:
        for service in self.plan.by_type(K8S_SERVICE):
            spec = service.inputs.get("spec") or {}
            if spec.get("type") != "LoadBalancer":
                continue
            rate = self.prices.nlb_hourly_usd
            self._add(
                service,
                rate,
                rate,
                "Network Load Balancer provisioned for this Service (hours; NLCU usage left out)",
            )

    # ------------------------------------------------------------------ services next to a platform

    def _instance_hourly(self, instance_type: str) -> float | None:
        """On-demand $/h: the GPU catalog, else the recorded non-GPU families."""
        known = self.catalog.instance_types.get(instance_type)
        if known is not None:
            return known.on_demand_hourly_usd
        return self.prices.ec2_hourly_usd(instance_type)

    def _root_volume(self, inputs: dict[str, Any]) -> tuple[float, str]:
        """Monthly price and description of an instance's root and extra EBS volumes."""
        volumes = [dict(inputs.get("rootBlockDevice") or {})]
        volumes += [dict(v) for v in inputs.get("ebsBlockDevices") or []]
        monthly, shown = 0.0, []
        for i, ebs in enumerate(volumes):
            size = float(
                ebs.get("volumeSize") or (self.prices.ec2_default_root_volume_gb if i == 0 else 0)
            )
            vtype = str(ebs.get("volumeType") or self.prices.ebs_default_volume_type)
            price = ebs_volume_month_usd(
                self.prices, size, vtype, ebs.get("iops"), ebs.get("throughput")
            )
            if price is None or not size:
                continue
            monthly += price
            shown.append(f"{vtype} {size:,.0f} GiB")
        return monthly, " + ".join(shown)

    def _ec2_instances(self) -> None:
        for instance in self.plan.by_type(EC2_INSTANCE):
            itype = str(instance.inputs.get("instanceType") or "")
            rate = self._instance_hourly(itype)
            if rate is None:
                continue  # listed as not priced
            volume_month, volumes = self._root_volume(instance.inputs)
            h = rate + _hourly(volume_month)
            default_root = not (instance.inputs.get("rootBlockDevice") or {}).get("volumeSize")
            self._add(
                instance,
                h,
                h,
                f"{itype} at {_usd(rate)}/h + EBS {volumes}"
                + (
                    " (the AMI's root size is not in the plan: 8 GiB assumed)"
                    if default_root
                    else ""
                ),
            )

    def _autoscaling_groups(self) -> None:
        templates = self.plan.by_type(LAUNCH_TEMPLATE)
        for group in self.plan.by_type(AUTOSCALING_GROUP):
            inputs = group.inputs
            spec = inputs.get("launchTemplate") or {}
            template = _template_of(group, templates) if spec else None
            itype = str((template.inputs if template else {}).get("instanceType") or "")
            rate = self._instance_hourly(itype) if itype else None
            if rate is None:
                continue  # listed as not priced
            low, high = int(inputs.get("minSize") or 0), int(inputs.get("maxSize") or 0)
            volume_month, volumes = self._root_volume(template.inputs if template else {})
            per_node = rate + _hourly(volume_month)
            self._add(
                group,
                low * per_node,
                high * per_node,
                f"{itype} at {_usd(rate)}/h + EBS {volumes} × {low}–{high} instances",
            )

    def _aws_load_balancers(self) -> None:
        kinds = {
            "application": (self.prices.alb_hourly_usd, "Application Load Balancer", "LCU"),
            "network": (self.prices.nlb_hourly_usd, "Network Load Balancer", "NLCU"),
            "gateway": (self.prices.gwlb_hourly_usd, "Gateway Load Balancer", "GLCU"),
        }
        for lb in [r for r in self.plan.resources if r.type in LOAD_BALANCERS]:
            kind = str(lb.inputs.get("loadBalancerType") or "application")
            if kind not in kinds:
                continue
            rate, label, unit = kinds[kind]
            self._add(lb, rate, rate, f"{label} hours ({unit}-hours are usage, left out)")
        for lb in self.plan.by_type(CLASSIC_LOAD_BALANCER):
            rate = self.prices.clb_hourly_usd
            self._add(lb, rate, rate, "Classic Load Balancer hours (data processed is usage)")

    def _rds_instances(self) -> None:
        for db in self.plan.by_type(RDS_INSTANCE):
            i = db.inputs
            engine = self.prices.rds_engine_aliases.get(str(i.get("engine") or ""))
            cls = str(i.get("instanceClass") or "")
            rate = self.prices.rds_instance_hourly_usd.get(engine or "", {}).get(cls)
            if rate is None:
                continue  # listed as not priced
            copies = 2 if i.get("multiAz") else 1  # Multi-AZ: one standby, billed the same
            # CreateDBInstance: StorageType defaults to io1 with Iops, else gp2.
            storage = str(i.get("storageType") or ("io1" if i.get("iops") else "gp2"))
            per_gb = self.prices.rds_storage_gb_month_usd.get(storage, 0.0)
            storage_h = _hourly(float(i.get("allocatedStorage") or 0) * per_gb)
            h = copies * (rate + storage_h)
            self._add(
                db,
                h,
                h,
                f"RDS {i.get('engine')} {cls} at {_usd(rate)}/h + {storage} "
                f"{i.get('allocatedStorage') or 0} GB"
                + (", Multi-AZ (× 2)" if copies == 2 else "")
                + "; backups beyond the database's size and I/O are usage",
            )

    def _secrets(self) -> None:
        month = self.prices.secretsmanager_secret_month_usd
        for secret in self.plan.by_type(SECRET):
            h = _hourly(month)
            self._add(
                secret, h, h, f"Secrets Manager secret ({_usd(month)}/month; API calls are usage)"
            )

    # ------------------------------------------------------------------ notes

    def _capacity_notes(self) -> None:
        if "spot" in self._labels:
            self.notes.append(
                "spot: priced at the on-demand rate, an upper bound; spot usually costs 60–90% "
                "less, but its price moves and the capacity can be reclaimed."
            )
        if "reservation" in self._labels:
            self.notes.append(
                "reservation: a targeted On-Demand Capacity Reservation is billed at the "
                "on-demand rate for every reserved instance, running or not, so idle = max; "
                "priced at the group's max size (run `llmcloud preflight` for the reservation's "
                "actual size; a larger reservation costs more)."
            )
        if "capacity_block" in self._labels:
            self.notes.append(
                "capacity_block: Capacity Blocks are paid up front when bought, so their hourly "
                "here is 0; the description shows the on-demand equivalent. EBS volumes of their "
                "nodes are billed as usual."
            )


# ---------------------------------------------------------------------- plan helpers


def _template_of(group: Resource, templates: list[Resource]) -> Resource | None:
    """The launch template a node group names (by id, else by name)."""
    spec = group.inputs.get("launchTemplate") or {}
    wanted_id, wanted_name = spec.get("id"), spec.get("name")
    for t in templates:
        if wanted_id and (t.id == wanted_id or t.outputs.get("id") == wanted_id):
            return t
    for t in templates:
        if wanted_name and wanted_name in (t.inputs.get("name"), t.outputs.get("name")):
            return t
    return None


def _capacity_label(group: Resource) -> str:
    tags = group.inputs.get("tags") or {}
    label = tags.get("llmcloud:capacity")
    if label in ("on_demand", "spot", "reservation", "capacity_block"):
        return str(label)
    return _CAPACITY_TYPES.get(str(group.inputs.get("capacityType") or "ON_DEMAND"), "on_demand")


def _reservation_id(lt_inputs: dict[str, Any]) -> str | None:
    spec = lt_inputs.get("capacityReservationSpecification") or {}
    target = spec.get("capacityReservationTarget") or {}
    rid = target.get("capacityReservationId")
    return str(rid) if rid else None


def _bucket_purpose(bucket: Resource) -> str | None:
    """`datasets` / `checkpoints` / `models` / `logs`: the DataLake's purpose tag, else the
    logical name (`datasets` or `datasets-bucket`)."""
    tags = bucket.inputs.get("tags") or {}
    if tags.get("llmcloud:bucket-purpose"):
        return str(tags["llmcloud:bucket-purpose"])
    for purpose in ("datasets", "checkpoints", "models", "logs"):
        if bucket.name in (purpose, f"{purpose}-bucket"):
            return purpose
    return None
