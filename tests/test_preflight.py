"""`llmcloud preflight`: quotas, offerings and reservations decide whether a deploy can get
its GPUs. Calls moto implements (instance type offerings) run against moto; the rest
(capacity reservations, EC2 quotas) replay the API responses in tests/fixtures/aws, which
botocore's Stubber validates against the real service model."""

from __future__ import annotations

import copy
import functools
import json
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from botocore.utils import parse_timestamp
from moto import mock_aws
from typer.testing import CliRunner

from infra.cli import app
from infra.config import parse_stack_config
from infra.ops import awsclient
from infra.ops.awsclient import AwsUsageError
from infra.ops.preflight import (
    PREFLIGHT_CLIENT_CONFIG,
    PREFLIGHT_READ_TIMEOUT_S,
    BotoCapacityApi,
    CheckUnavailable,
    Finding,
    PreflightReport,
    _account_findings,
    quota_for,
    render_table,
    run_preflight,
)
from infra.security.keys import key_policy_principals

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "aws"
ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
BLOCK_ID, ODCR_ID = "cr-0a1b2c3d4e5f60718", "cr-0f1e2d3c4b5a69788"


# ----------------------------------------------------------------------------- fixtures


@functools.cache
def _model(service: str):
    return _client(service).meta.service_model


def _client(service: str, region: str = "us-east-2"):
    return boto3.client(
        service,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _parsed(shape, value):
    """A JSON fixture value as boto3 returns it: timestamps become datetimes."""
    if shape is None:
        return value
    if shape.type_name == "structure":
        return {k: _parsed(shape.members.get(k), v) for k, v in value.items()}
    if shape.type_name == "list":
        return [_parsed(shape.member, v) for v in value]
    if shape.type_name == "map":
        return {k: _parsed(shape.value, v) for k, v in value.items()}
    if shape.type_name == "timestamp":
        return parse_timestamp(value)
    return value


def recorded(service: str, operation: str, case: str) -> dict[str, Any]:
    raw = json.loads((FIXTURES / f"{service}.{operation}.{case}.json").read_text())
    model = _model("ec2" if service == "ec2" else "service-quotas")
    return _parsed(model.operation_model(operation).output_shape, raw)


def recorded_error(service: str, operation: str, case: str) -> dict[str, str]:
    return json.loads((FIXTURES / f"{service}.{operation}.{case}.error.json").read_text())["Error"]


@functools.cache
def moto_offerings() -> dict[str, set[str]]:
    """us-east-2 offerings of the types these tests use, read once from moto (its EC2 backend
    takes seconds to start) through the same BotoCapacityApi the CLI uses."""
    with mock_aws():
        api = BotoCapacityApi(_client("ec2"), None)
        types = ("m7i.xlarge", "p5.48xlarge", "p4d.24xlarge", "p5e.48xlarge", "p5en.48xlarge")
        return {t: api.offered_zones(t) for t in (*types, "g6e.12xlarge", "no-such.type")}


RESPONSE_FILES = sorted(p for p in FIXTURES.glob("*.json") if not p.name.endswith(".error.json"))


@pytest.mark.parametrize("path", RESPONSE_FILES, ids=lambda p: p.name)
def test_recorded_responses_have_the_real_api_shape(path):
    service, operation, case = path.name.removesuffix(".json").split(".", 2)
    client = _client("ec2" if service == "ec2" else "service-quotas")
    method = client.meta.method_to_api_mapping
    name = next(k for k, v in method.items() if v == operation)
    with Stubber(client) as stub:  # add_response validates against the output shape
        stub.add_response(name, recorded(service, operation, case))


# ----------------------------------------------------------------------------- the boto3 side


def test_quota_value_is_read_from_service_quotas():
    quotas = _client("service-quotas")
    with Stubber(quotas) as stub:
        stub.add_response(
            "get_service_quota",
            recorded("servicequotas", "GetServiceQuota", "L-417A185B"),
            {"ServiceCode": "ec2", "QuotaCode": "L-417A185B"},
        )
        assert BotoCapacityApi(None, quotas).vcpu_quota("L-417A185B") == 2304.0


def test_quota_without_an_applied_value_falls_back_to_the_aws_default():
    quotas = _client("service-quotas")
    error = recorded_error("servicequotas", "GetServiceQuota", "no-such-resource")
    with Stubber(quotas) as stub:
        stub.add_client_error("get_service_quota", error["Code"], error["Message"])
        stub.add_response(
            "get_aws_default_service_quota",
            recorded("servicequotas", "GetServiceQuota", "L-3819A6DF"),
        )
        assert BotoCapacityApi(None, quotas).vcpu_quota("L-3819A6DF") == 64.0
        stub.add_client_error("get_service_quota", error["Code"], error["Message"])
        stub.add_client_error("get_aws_default_service_quota", error["Code"], error["Message"])
        assert BotoCapacityApi(None, quotas).vcpu_quota("L-3819A6DF") is None


def test_denied_quota_read_is_a_usage_error_naming_the_permission():
    quotas = _client("service-quotas")
    with Stubber(quotas) as stub:
        stub.add_client_error(
            "get_service_quota", "AccessDeniedException", "not authorized", http_status_code=400
        )
        with pytest.raises(AwsUsageError, match="servicequotas:GetServiceQuota"):
            BotoCapacityApi(None, quotas).vcpu_quota("L-417A185B")


def test_capacity_reservation_is_read_and_a_missing_one_is_none():
    ec2 = _client("ec2")
    error = recorded_error("ec2", "DescribeCapacityReservations", "not-found")
    with Stubber(ec2) as stub:
        stub.add_response(
            "describe_capacity_reservations",
            recorded("ec2", "DescribeCapacityReservations", "odcr-active"),
            {"CapacityReservationIds": [ODCR_ID]},
        )
        stub.add_client_error("describe_capacity_reservations", error["Code"], error["Message"])
        api = BotoCapacityApi(ec2, None)
        assert api.capacity_reservation(ODCR_ID)["InstanceType"] == "p5en.48xlarge"
        assert api.capacity_reservation(BLOCK_ID) is None


def test_offered_zones_come_from_describe_instance_type_offerings():
    offered = moto_offerings()
    assert offered["g6e.12xlarge"] == {"us-east-2a", "us-east-2b", "us-east-2c"}
    assert offered["no-such.type"] == set()


def test_quota_codes_by_family_and_market():
    assert quota_for("p5.48xlarge", "on_demand").code == "L-417A185B"
    assert quota_for("p4d.24xlarge", "on_demand").code == "L-417A185B"
    assert quota_for("p5en.48xlarge", "spot").code == "L-C4BD4855"
    assert quota_for("p4d.24xlarge", "spot").code == "L-7212CCBC"
    assert quota_for("g6e.12xlarge", "on_demand").code == "L-DB2E81BA"
    assert quota_for("g6.xlarge", "spot").code == "L-3819A6DF"
    assert quota_for("m7i.xlarge", "on_demand").code == "L-1216C47A"


# ----------------------------------------------------------------------------- decisions


class RecordedApi:
    """CapacityApi answering from recorded responses; offerings from moto unless given."""

    def __init__(
        self, quotas: dict[str, float | None], reservations: dict[str, dict], offered=None
    ):
        self.quotas = quotas
        self.reservations = reservations
        self.offered = offered
        self.calls: list[str] = []

    def vcpu_quota(self, code):
        self.calls.append(code)
        return self.quotas.get(code)

    def offered_zones(self, instance_type):
        if self.offered is not None and instance_type in self.offered:
            return self.offered[instance_type]
        return moto_offerings()[instance_type]

    def capacity_reservation(self, reservation_id):
        return copy.deepcopy(self.reservations.get(reservation_id))


def quota(code: str, value: float | None = None) -> float:
    recorded_value = recorded("servicequotas", "GetServiceQuota", code)["Quota"]["Value"]
    return recorded_value if value is None else value


def reservation(case: str, **changes) -> dict:
    r = recorded("ec2", "DescribeCapacityReservations", case)["CapacityReservations"][0]
    r.update(changes)
    return r


def stack(**gpu_changes) -> Any:
    """A prod-shaped stack in us-east-2: on-demand H100 and A100, a capacity block of
    H200 (p5e), an ODCR of H200 (p5en), spot L40S for serving."""
    groups = [
        {"name": "h100", "gpu": "H100", "availability_zones": ["us-east-2a"], "max_size": 8},
        {"name": "a100", "gpu": "A100", "availability_zones": ["us-east-2a"], "max_size": 4},
        {
            "name": "h200-block",
            "gpu": "H200",
            "instance_type": "p5e.48xlarge",
            "capacity": {
                "type": "capacity_block",
                "reservation_id": BLOCK_ID,
                "availability_zone": "us-east-2b",
            },
            "max_size": 4,
        },
        {
            "name": "h200-odcr",
            "gpu": "H200",
            "instance_type": "p5en.48xlarge",
            "capacity": {
                "type": "reservation",
                "reservation_id": ODCR_ID,
                "availability_zone": "us-east-2c",
            },
            "min_size": 2,
            "max_size": 2,
        },
        {
            "name": "l40s",
            "gpu": "L40S",
            "instance_type": "g6e.12xlarge",
            "capacity": {"type": "spot"},
            "max_size": 1,
        },
    ]
    for g in groups:
        g.update(gpu_changes.get(g["name"], {}))
    raw = {
        "aws:region": "us-east-2",
        "llmcloud:environment": "staging",
        "llmcloud:network": {"availability_zones": ["us-east-2a", "us-east-2b", "us-east-2c"]},
        "llmcloud:cluster": {
            "system_nodes": {"instance_types": ["m7i.xlarge"], "min_size": 3, "max_size": 6},
            "gpu_node_groups": groups,
        },
    }
    return parse_stack_config(raw, project="llmcloud", stack="staging")


def healthy_api(**overrides) -> RecordedApi:
    quotas = {
        code: quota(code) for code in ("L-417A185B", "L-DB2E81BA", "L-3819A6DF", "L-1216C47A")
    }
    quotas.update(overrides.pop("quotas", {}))
    reservations = {
        BLOCK_ID: reservation("capacity-block-active"),
        ODCR_ID: reservation("odcr-active"),
    }
    reservations.update(overrides.pop("reservations", {}))
    return RecordedApi(quotas, reservations, **overrides)


def findings(report, check, status=None):
    return [
        f for f in report.findings if f.check == check and (status is None or f.status == status)
    ]


def test_preflight_passes_when_quotas_offerings_and_reservations_suffice():
    report = run_preflight(stack(), healthy_api(), now=NOW)
    assert report.exit_code == 0, [f for f in report.findings if f.status != "ok"]
    assert {f.check for f in report.findings} == {"quota", "offering", "reservation"}
    assert all(f.status == "ok" for f in report.findings)
    # one offering finding per group (system + 5 GPU groups), one per reservation
    assert len(findings(report, "offering")) == 6
    assert len(findings(report, "reservation")) == 2


def test_groups_sharing_a_quota_are_summed_at_max_size():
    # h100 8 × p5.48xlarge (192 vCPUs) + a100 4 × p4d.24xlarge (96) = 1,920 vCPUs
    report = run_preflight(stack(), healthy_api(quotas={"L-417A185B": 1536.0}), now=NOW)
    (blocked,) = findings(report, "quota", "blocked")
    assert blocked.groups == ("h100", "a100")
    assert "1536 vCPUs; the stack needs 1920" in blocked.detail
    assert "--quota-code L-417A185B --desired-value 1920 --region us-east-2" in blocked.fix
    assert report.exit_code == 1


def test_spot_group_is_checked_against_the_spot_quota_of_its_family():
    report = run_preflight(stack(), healthy_api(quotas={"L-3819A6DF": 32.0}), now=NOW)
    (blocked,) = findings(report, "quota", "blocked")
    assert blocked.groups == ("l40s",)
    assert "L-3819A6DF" in blocked.detail and "needs 48" in blocked.detail


def test_reserved_groups_do_not_draw_on_the_vcpu_quota():
    api = healthy_api()
    run_preflight(stack(), api, now=NOW)
    assert "L-C4BD4855" not in api.calls  # no spot P5 group; the p5e/p5en groups are reserved
    report = run_preflight(stack(h100={"max_size": 1}, a100={"max_size": 1}), api, now=NOW)
    (p_quota,) = [f for f in findings(report, "quota") if "L-417A185B" in f.detail]
    assert "needs 288" in p_quota.detail  # 192 + 96; nothing from h200-block or h200-odcr


def test_unknown_quota_is_a_warning_not_a_blocker():
    report = run_preflight(stack(), healthy_api(quotas={"L-1216C47A": None}), now=NOW)
    (warn,) = findings(report, "quota", "warn")
    assert warn.groups == ("system",)
    assert report.exit_code == 0


def test_type_not_offered_in_the_group_zone_blocks_and_names_zones_that_offer_it():
    offerings = recorded("ec2", "DescribeInstanceTypeOfferings", "p5-us-east-2")
    offered = {"p5.48xlarge": {o["Location"] for o in offerings["InstanceTypeOfferings"]}}
    report = run_preflight(stack(), healthy_api(offered=offered), now=NOW)
    (blocked,) = findings(report, "offering", "blocked")
    assert blocked.groups == ("h100",)
    assert "not offered in us-east-2a" in blocked.detail
    assert "move the group to us-east-2b or us-east-2c" in blocked.fix


def test_type_offered_only_outside_the_vpc_zones_says_to_add_a_zone():
    offered = {"p5.48xlarge": {"us-east-2d"}}
    report = run_preflight(stack(), healthy_api(offered=offered), now=NOW)
    (blocked,) = findings(report, "offering", "blocked")
    assert "add one of them to network.availability_zones" in blocked.fix


def test_missing_capacity_block_blocks_and_says_how_to_buy_one():
    api = healthy_api()
    api.reservations.pop(BLOCK_ID)
    report = run_preflight(stack(), api, now=NOW)
    (blocked,) = findings(report, "reservation", "blocked")
    assert blocked.groups == ("h200-block",)
    assert "does not exist" in blocked.detail
    assert "describe-capacity-block-offerings --instance-type p5e.48xlarge --instance-count 4" in (
        blocked.fix
    )


def test_scheduled_capacity_block_reports_when_it_starts_and_lets_a_zero_size_group_deploy():
    api = healthy_api(reservations={BLOCK_ID: reservation("capacity-block-scheduled")})
    report = run_preflight(stack(), api, now=NOW)
    (warn,) = findings(report, "reservation", "warn")
    assert "starts 2026-12-03 11:30 UTC (in 5.0 days)" in warn.detail
    # its size comes from the incremental-quantity tag while the counts read 0
    assert f"{BLOCK_ID}: 4× p5e.48xlarge" in warn.detail
    assert report.exit_code == 0


def test_future_dated_reservation_blocks_a_group_that_needs_nodes_at_creation():
    start = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    future = reservation("odcr-active", State="scheduled", StartDate=start)
    report = run_preflight(stack(), healthy_api(reservations={ODCR_ID: future}), now=NOW)
    (blocked,) = findings(report, "reservation", "blocked")
    assert blocked.groups == ("h200-odcr",)
    assert "starts 2026-12-01 08:00 UTC" in blocked.detail
    assert "set min_size: 0 until the reservation starts" in blocked.fix


def test_capacity_block_ending_within_a_day_is_a_warning():
    ending = reservation("capacity-block-active", EndDate=datetime(2026, 11, 28, 18, 0, tzinfo=UTC))
    api = healthy_api(reservations={BLOCK_ID: ending})
    (warn,) = findings(run_preflight(stack(), api, now=NOW), "reservation", "warn")
    assert "ends 2026-11-28 18:00 UTC (in 6.0 h)" in warn.detail


def test_expired_capacity_block_blocks():
    api = healthy_api(reservations={BLOCK_ID: reservation("capacity-block-expired")})
    (blocked,) = findings(run_preflight(stack(), api, now=NOW), "reservation", "blocked")
    assert "is expired" in blocked.detail and "buy a new capacity block" in blocked.fix


@pytest.mark.parametrize(
    ("changes", "detail", "fix"),
    [
        (
            {"InstanceType": "p5.48xlarge"},
            "reserves p5.48xlarge, the group runs p5en.48xlarge",
            "set instance_type: p5.48xlarge",
        ),
        (
            {"AvailabilityZone": "us-east-2a"},
            "is in us-east-2a, the group is pinned to us-east-2c",
            "set capacity.availability_zone: us-east-2a",
        ),
        (
            {"TotalInstanceCount": 1, "AvailableInstanceCount": 1},
            "holds 1 instances, the group scales to 2",
            "set max_size: 1",
        ),
        (
            {"ReservationType": "capacity-block"},
            "is a capacity block",
            "set capacity.type: capacity_block",
        ),
        ({"State": "cancelled"}, "is cancelled", "create a new reservation"),
    ],
)
def test_reservation_that_does_not_match_the_group_blocks(changes, detail, fix):
    api = healthy_api(reservations={ODCR_ID: reservation("odcr-active", **changes)})
    (blocked,) = findings(run_preflight(stack(), api, now=NOW), "reservation", "blocked")
    assert blocked.groups == ("h200-odcr",)
    assert detail in blocked.detail
    assert fix in blocked.fix


def test_reservation_partly_in_use_is_a_warning():
    api = healthy_api(reservations={ODCR_ID: reservation("odcr-active", AvailableInstanceCount=0)})
    (warn,) = findings(run_preflight(stack(), api, now=NOW), "reservation", "warn")
    assert "0 of 2 reserved instances are free" in warn.detail


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture
def aws_env(monkeypatch):
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def stub_quotas(monkeypatch, values: dict[str, float]):
    """Service Quotas has no EC2 data in moto: the CLI's service-quotas client answers
    GetServiceQuota from the recorded responses (any order of calls)."""
    from botocore.awsrequest import AWSResponse

    real = awsclient.client
    made_clients: list = []

    def remember(params, context, **_):
        context["quota_code"] = params["QuotaCode"]

    def answer(context, **_):
        code = context["quota_code"]
        response = recorded("servicequotas", "GetServiceQuota", code)
        response["Quota"]["Value"] = values[code]
        return AWSResponse(None, 200, {}, None), response

    def client(service, **kwargs):
        made = real(service, **kwargs)
        made_clients.append(made)
        if service == "service-quotas":
            events = made.meta.events
            events.register("before-parameter-build.service-quotas.GetServiceQuota", remember)
            events.register("before-call.service-quotas.GetServiceQuota", answer)
        return made

    monkeypatch.setattr(awsclient, "client", client)
    return made_clients


@pytest.fixture(scope="module")
def moto():
    """One moto for the CLI tests: its EC2 backend takes seconds to start per region."""
    with mock_aws():
        yield


def test_cli_passes_the_dev_stack_against_moto_with_enough_quota(moto, aws_env, monkeypatch):
    # dev: system m7i.large (standard), h100 p5 on demand (P), l4 g6.xlarge spot (G spot)
    made = stub_quotas(monkeypatch, {"L-417A185B": 384.0, "L-1216C47A": 32.0, "L-3819A6DF": 8.0})
    result = CliRunner().invoke(
        app, ["preflight", "--stack", "dev", "--project", str(ROOT), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    # a short bounded retry (standard mode, 3 attempts) and short timeouts, for every client
    assert sorted(c.meta.service_model.service_name for c in made) == [
        "ec2",
        "iam",
        "service-quotas",
        "sts",
    ]
    assert all(c.meta.config.retries == PREFLIGHT_CLIENT_CONFIG["retries"] for c in made)
    assert all(c.meta.config.read_timeout == PREFLIGHT_READ_TIMEOUT_S for c in made)
    report = json.loads(result.stdout)
    assert report["ok"] and report["region"] == "us-east-1" and report["incomplete"] == []
    assert {f["check"] for f in report["findings"]} == {
        "quota",
        "offering",
        "service-linked-role",
        "key-principal",
    }


def test_cli_exits_1_with_a_table_that_says_how_to_fix_the_blocker(moto, aws_env, monkeypatch):
    stub_quotas(monkeypatch, {"L-417A185B": 0.0, "L-1216C47A": 32.0, "L-3819A6DF": 8.0})
    result = CliRunner().invoke(app, ["preflight", "--stack", "dev", "--project", str(ROOT)])
    assert result.exit_code == 1, result.output
    assert "BLOCKED" in result.stdout and "L-417A185B" in result.stdout


def test_cli_without_credentials_exits_2_with_one_clear_message(monkeypatch, tmp_path):
    for var in list(__import__("os").environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    result = CliRunner().invoke(app, ["preflight", "--stack", "dev", "--project", str(ROOT)])
    assert result.exit_code == 2
    assert "no AWS credentials found" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stack", "nope"], "no such stack file"),
        (["--stack", "dev", "--format", "xml"], "--format 'xml' is not a format"),
        (["--stack", "dev", "--region", "eu-west-1"], "is not the region of stack dev"),
    ],
)
def test_cli_usage_errors_exit_2(args, message, aws_env):
    result = CliRunner().invoke(app, ["preflight", "--project", str(ROOT), *args])
    assert result.exit_code == 2
    assert message in result.stderr


# ----------------------------------------------------------------------------- honesty


@pytest.fixture
def moto_server(aws_env):
    """moto as a real HTTP endpoint: calls it does not implement answer 500, as a partial
    AWS-compatible endpoint does."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    # a fresh account: moto's backends are per process, other tests may have written to them
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
    yield url
    server.stop()


def test_an_endpoint_refusing_the_quota_call_is_incomplete_exit_2_within_10_s(moto_server):
    import time

    start = time.monotonic()
    result = CliRunner().invoke(
        app,
        [
            "preflight",
            "--stack",
            "dev",
            "--project",
            str(ROOT),
            "--endpoint-url",
            moto_server,
            "--format",
            "json",
        ],
    )
    elapsed_s = time.monotonic() - start
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    assert report["incomplete"] == ["quota"] and not report["ok"]
    quota = [f for f in report["findings"] if f["check"] == "quota"]
    assert quota and all(f["status"] == "incomplete" for f in quota)
    assert "GetAWSDefaultServiceQuota" in quota[0]["detail"]
    assert not any(f["status"] == "blocked" for f in report["findings"])
    # the other checks were still made
    assert {f["check"] for f in report["findings"] if f["status"] == "ok"} >= {"offering"}
    assert elapsed_s < 10, elapsed_s  # bound of the contract, not a benchmark


def test_an_operation_that_failed_once_is_not_called_again():
    calls = []

    class Quotas:
        def get_service_quota(self, **kw):
            calls.append(kw["QuotaCode"])
            raise ClientError(
                {
                    "Error": {"Code": "ThrottlingException"},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "GetServiceQuota",
            )

    api = BotoCapacityApi(ec2=None, quotas=Quotas())
    for code in ("L-1", "L-2"):
        with pytest.raises(CheckUnavailable, match="ThrottlingException"):
            api.vcpu_quota(code)
    assert calls == ["L-1"]


def test_a_table_with_an_incomplete_check_says_so_and_is_not_blocked():
    from rich.console import Console

    report = PreflightReport(
        "dev",
        "us-east-1",
        [Finding("quota", "incomplete", ("h100",), "could not check: x failed (500)", "again")],
    )
    console = Console(record=True, width=200)
    render_table(report, console)
    text = console.export_text()
    assert "INCOMPLETE" in text and "quota" in text and "BLOCKED" not in text
    assert report.exit_code == 2 and not report.blocked


# ----------------------------------------------------------------------------- fresh accounts


def account_config(**security):
    return parse_stack_config(
        {
            "aws:region": "us-east-1",
            "llmcloud:environment": "dev",
            "llmcloud:network": {"availability_zones": ["us-east-1a", "us-east-1b"]},
            "llmcloud:security": security,
        },
        project="llmcloud",
        stack="dev",
    )


@pytest.fixture
def iam_api(aws_env):
    import boto3

    with mock_aws():
        iam = boto3.client("iam", region_name="us-east-1")
        sts = boto3.client("sts", region_name="us-east-1")
        yield iam, BotoCapacityApi(ec2=None, quotas=None, iam=iam, sts=sts)


def account_findings(config, api):
    return {(f.check, f.groups[0] if f.groups else ""): f for f in _account_findings(config, api)}


def test_a_fresh_account_without_the_auto_scaling_role_is_fine_when_the_stack_creates_it(iam_api):
    _, api = iam_api
    found = account_findings(account_config(), api)
    asg = found[("service-linked-role", "AWSServiceRoleForAutoScaling")]
    assert asg.status == "ok" and "the stack creates it" in asg.detail
    assert ("service-linked-role", "AWSServiceRoleForEC2Spot") not in found  # no spot groups


def test_a_missing_auto_scaling_role_blocks_when_the_stack_does_not_create_it(iam_api):
    _, api = iam_api
    found = account_findings(account_config(create_service_linked_roles=False), api)
    asg = found[("service-linked-role", "AWSServiceRoleForAutoScaling")]
    assert asg.status == "blocked"
    assert "create-service-linked-role --aws-service-name autoscaling.amazonaws.com" in asg.fix


def test_an_existing_role_the_stack_would_create_again_is_reported(iam_api):
    iam, api = iam_api
    iam.create_service_linked_role(AWSServiceName="autoscaling.amazonaws.com")
    asg = account_findings(account_config(), api)[
        ("service-linked-role", "AWSServiceRoleForAutoScaling")
    ]
    assert asg.status == "blocked" and "create_service_linked_roles: false" in asg.fix
    off = account_findings(account_config(create_service_linked_roles=False), api)
    assert off[("service-linked-role", "AWSServiceRoleForAutoScaling")].status == "ok"


def test_key_policy_principals_that_do_not_exist_are_reported(iam_api):
    iam, api = iam_api
    here = "arn:aws:iam::123456789012:role/security-admin"
    elsewhere = "arn:aws:iam::444455556666:role/security-admin"
    config = account_config(key_admin_arns=[here, elsewhere])
    found = account_findings(config, api)
    assert found[("key-principal", here)].status == "blocked"
    assert "MalformedPolicyDocumentException" in found[("key-principal", here)].detail
    assert found[("key-principal", elsewhere)].status == "warn"
    iam.create_role(RoleName="security-admin", AssumeRolePolicyDocument="{}")
    assert account_findings(config, api)[("key-principal", here)].status == "ok"


def test_preflight_checks_the_principals_the_key_policies_name():
    config = account_config(key_admin_arns=["arn:aws:iam::123456789012:role/a"])
    assert key_policy_principals(config, "123456789012") == [
        "arn:aws:iam::123456789012:root",
        "arn:aws:iam::123456789012:role/a",
        "arn:aws:iam::123456789012:role/aws-service-role/autoscaling.amazonaws.com/"
        "AWSServiceRoleForAutoScaling",
    ]


def test_prod_against_an_endpoint_without_reservations_or_quotas_is_incomplete_not_a_traceback(
    moto_server,
):
    result = CliRunner().invoke(
        app,
        [
            "preflight",
            "--stack",
            "prod",
            "--project",
            str(ROOT),
            "--endpoint-url",
            moto_server,
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    assert "reservation" in report["incomplete"] and "quota" in report["incomplete"]
    reservations = [f for f in report["findings"] if f["check"] == "reservation"]
    assert reservations and all(f["status"] == "incomplete" for f in reservations)
