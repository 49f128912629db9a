"""Refresh the per-region AZ and instance-offering section of infra/data/catalog.json.

Source: the EC2 DescribeAvailabilityZones / DescribeInstanceTypeOfferings data that moto
ships (recorded from real AWS accounts). Run by hand after upgrading moto:

    python scripts/refresh_catalog_offerings.py
"""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path

import moto
from moto.ec2.models.availability_zones_and_regions import RegionsAndZonesBackend

CATALOG = Path(__file__).resolve().parent.parent / "infra" / "data" / "catalog.json"
REGIONS = [
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "eu-north-1",
    "ap-northeast-1",
    "ap-southeast-2",
    "ap-south-1",
]


def main() -> None:
    catalog = json.loads(CATALOG.read_text())
    types = set(catalog["instance_types"])
    offerings_dir = Path(moto.__file__).parent / "ec2/resources/instance_type_offerings"
    regions: dict[str, dict] = {}
    for region in REGIONS:
        zones = RegionsAndZonesBackend.zones[region]
        with gzip.open(offerings_dir / "availability-zone" / f"{region}.json.gz") as fh:
            rows = json.loads(fh.read())
        offered: dict[str, list[str]] = {}
        for row in rows:
            if row["InstanceType"] in types:
                offered.setdefault(row["InstanceType"], []).append(row["Location"])
        regions[region] = {
            "zones": {z.name: z.zone_id for z in zones},
            "offerings": {t: sorted(v) for t, v in sorted(offered.items())},
        }
    catalog["regions"] = regions
    catalog["sources"]["regions"] = (
        f"EC2 DescribeAvailabilityZones and DescribeInstanceTypeOfferings as shipped in "
        f"moto {moto.__version__}; refreshed {date.today().isoformat()} by "
        "scripts/refresh_catalog_offerings.py"
    )
    CATALOG.write_text(json.dumps(catalog, indent=2) + "\n")


if __name__ == "__main__":
    main()
