"""The GPU catalog against the EC2 instance data that moto ships (recorded from real AWS)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import moto
import pytest

from infra.catalog import load_catalog

MOTO_EC2 = Path(moto.__file__).parent / "ec2" / "resources"


@pytest.fixture(scope="module")
def aws_instance_types() -> dict:
    with gzip.open(MOTO_EC2 / "instance_types.json.gz") as fh:
        return json.loads(fh.read())


@pytest.mark.parametrize("name", sorted(load_catalog().instance_types))
def test_catalog_entry_matches_aws_instance_data(name, aws_instance_types):
    entry = load_catalog().instance(name)
    aws = aws_instance_types[name]
    assert entry.vcpus == aws["VCpuInfo"]["DefaultVCpus"]
    assert entry.memory_mib == aws["MemoryInfo"]["SizeInMiB"]
    gpus = (aws.get("GpuInfo") or {}).get("Gpus") or []
    if entry.gpu:
        assert len(gpus) == 1
        assert gpus[0]["Name"] == entry.gpu
        assert gpus[0]["Count"] == entry.gpu_count
        assert gpus[0]["MemoryInfo"]["SizeInMiB"] == entry.gpu_memory_mib
    else:
        assert not gpus and entry.gpu_count == 0
    network = aws["NetworkInfo"]
    efa = (
        (network.get("EfaInfo") or {}).get("MaximumEfaInterfaces", 0)
        if network["EfaSupported"]
        else 0
    )
    assert entry.efa_interfaces == efa
    assert entry.network_cards == network["MaximumNetworkCards"]
    assert entry.max_network_interfaces == network["MaximumNetworkInterfaces"]
    assert entry.ipv4_per_interface == network["Ipv4AddressesPerInterface"]
    disks = (aws.get("InstanceStorageInfo") or {}).get("Disks") or []
    assert entry.nvme_disks == sum(d["Count"] for d in disks)
    if disks:
        assert entry.nvme_disk_gb == disks[0]["SizeInGB"]


def test_training_kinds_have_the_efa_interface_counts_aws_documents():
    catalog = load_catalog()
    counts = {
        t: catalog.instance(t).efa_interfaces
        for t in ("p4d.24xlarge", "p4de.24xlarge", "p5.48xlarge", "p5e.48xlarge", "p5en.48xlarge")
    }
    assert counts == {
        "p4d.24xlarge": 4,
        "p4de.24xlarge": 4,
        "p5.48xlarge": 32,
        "p5e.48xlarge": 32,
        "p5en.48xlarge": 16,
    }


def test_every_kind_maps_to_gpu_instance_types_of_that_gpu():
    catalog = load_catalog()
    for kind in catalog.kinds.values():
        assert kind.instance_types
        for t in kind.instance_types:
            assert catalog.instance(t).gpu == kind.gpu
        assert kind.peak_bf16_tflops > 0


def test_region_offerings_match_moto_recorded_offerings():
    catalog = load_catalog()
    for name, region in catalog.regions.items():
        with gzip.open(
            MOTO_EC2 / "instance_type_offerings" / "availability-zone" / f"{name}.json.gz"
        ) as fh:
            rows = json.loads(fh.read())
        for itype, zones in region.offerings.items():
            recorded = sorted(r["Location"] for r in rows if r["InstanceType"] == itype)
            assert list(zones) == recorded, (name, itype)


def test_catalog_records_its_sources_and_date():
    catalog = load_catalog()
    assert catalog.date
    for key in ("instance_types", "prices", "gpu_peaks", "regions"):
        assert catalog.sources[key], key


def test_unknown_names_raise_with_the_known_choices():
    catalog = load_catalog()
    with pytest.raises(KeyError, match=r"p5\.48xlarge"):
        catalog.instance("p9.96xlarge")
    with pytest.raises(KeyError, match="H100"):
        catalog.kind("B300")
