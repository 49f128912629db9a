"""`llmcloud audit` against moto: a compliant stack seeded with the tags the AWS provider
puts on every resource audits clean; each kind of drift is found by the policy pack's own rule,
with its id and message; resources of other stacks are ignored; and the audit only ever reads."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from infra.cli import app
from infra.config import load_stack_config, parse_stack_config
from infra.ops.audit import AuditClients, audited_rules, run_audit

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
ACCOUNT = "123456789012"
_names = itertools.count(1)


@pytest.fixture(scope="module", autouse=True)
def aws():
    """One moto for the module (its backends take seconds to start); every test seeds its
    own stack name, so stacks never see each other's resources."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    with mock_aws():
        yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def client(service: str):
    return boto3.client(service, region_name=REGION)


def stack_config(stack: str | None = None, environment: str = "staging", **llmcloud):
    stack = stack or f"audit{next(_names)}"
    raw = {
        "aws:region": REGION,
        "llmcloud:environment": environment,
        "llmcloud:network": {"availability_zones": ["us-east-1a", "us-east-1b"]},
    }
    llmcloud.setdefault("tags", {"team": "ml", "cost-center": "research"})
    raw.update({f"llmcloud:{k}": v for k, v in llmcloud.items()})
    return parse_stack_config(raw, project="llmcloud", stack=stack)


def tls_only_policy(bucket: str) -> str:
    arn = f"arn:aws:s3:::{bucket}"
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [arn, f"{arn}/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            ],
        }
    )


class Seeded:
    """Names and ids of one seeded stack."""

    def __init__(self, config) -> None:
        self.config = config
        prefix = f"llm-{config.stack}"
        self.data_bucket = f"{prefix}-datasets-{ACCOUNT}"
        self.logs_bucket = f"{prefix}-logs-{ACCOUNT}"
        self.cluster = f"{prefix}-eks"
        self.tags = dict(config.default_tags)  # the AWS provider's default tags
        self.tag_list = [{"Key": k, "Value": v} for k, v in self.tags.items()]
        self.data_key = self.ebs_key = ""
        self.launch_template = self.file_system = ""


def seed(config) -> Seeded:
    """A compliant deployment of `config`, tagged like the provider's default tags."""
    s = Seeded(config)
    kms, s3, eks, ec2, fsx = (client(n) for n in ("kms", "s3", "eks", "ec2", "fsx"))
    kms_tags = [{"TagKey": k, "TagValue": v} for k, v in s.tags.items()]
    keys = []
    for purpose in ("data", "ebs"):
        key = kms.create_key(Description=f"{purpose} key", Tags=kms_tags)["KeyMetadata"]["Arn"]
        kms.enable_key_rotation(KeyId=key)
        keys.append(key)
    s.data_key, s.ebs_key = keys

    for bucket, algorithm in ((s.logs_bucket, "AES256"), (s.data_bucket, "aws:kms")):
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": s.tag_list})
        default = {"SSEAlgorithm": algorithm}
        if algorithm == "aws:kms":
            default["KMSMasterKeyID"] = s.data_key
        s3.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": default}]
            },
        )
        s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
    # Logging first: moto checks the target's policy for the log delivery principal and
    # cannot read a policy whose Principal is "*".
    s3.put_bucket_acl(Bucket=s.logs_bucket, ACL="log-delivery-write")
    s3.put_bucket_logging(
        Bucket=s.data_bucket,
        BucketLoggingStatus={
            "LoggingEnabled": {"TargetBucket": s.logs_bucket, "TargetPrefix": "s3-access/datasets/"}
        },
    )
    for bucket in (s.logs_bucket, s.data_bucket):
        s3.put_bucket_policy(Bucket=bucket, Policy=tls_only_policy(bucket))
    s3.put_bucket_versioning(
        Bucket=s.data_bucket, VersioningConfiguration={"Status": "Enabled"}
    )  # the log bucket needs none

    declared = config.cluster
    eks.create_cluster(
        name=s.cluster,
        version=declared.version,
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/{s.cluster}-cluster",
        resourcesVpcConfig={
            "subnetIds": ["subnet-0123456789abcdef0"],
            "endpointPublicAccess": declared.endpoint_public_access,
            "endpointPrivateAccess": True,
            **(
                {"publicAccessCidrs": [str(c) for c in declared.public_access_cidrs]}
                if declared.endpoint_public_access
                else {}
            ),
        },
        encryptionConfig=[{"resources": ["secrets"], "provider": {"keyArn": s.data_key}}],
        logging={"clusterLogging": [{"types": list(declared.log_types), "enabled": True}]},
        tags=s.tags,
    )
    s.launch_template = ec2.create_launch_template(
        LaunchTemplateName=f"{s.cluster}-h100",
        LaunchTemplateData={
            "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
            "BlockDeviceMappings": [
                {
                    "DeviceName": "/dev/xvda",
                    "Ebs": {
                        "VolumeSize": 200,
                        "VolumeType": "gp3",
                        "Encrypted": True,
                        "KmsKeyId": s.ebs_key,
                    },
                }
            ],
        },
        TagSpecifications=[{"ResourceType": "launch-template", "Tags": s.tag_list}],
    )["LaunchTemplate"]["LaunchTemplateId"]
    s.file_system = fsx.create_file_system(
        FileSystemType="LUSTRE",
        StorageCapacity=1200,
        SubnetIds=["subnet-0123456789abcdef0"],
        LustreConfiguration={"DeploymentType": "PERSISTENT_2", "PerUnitStorageThroughput": 125},
        KmsKeyId=s.data_key,
        Tags=s.tag_list,
    )["FileSystem"]["FileSystemId"]
    return s


def audit(config):
    return run_audit(config, AuditClients.create(REGION, None))


def rules(report) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in report.findings:
        out.setdefault(f.rule, []).append(f.name)
    return out


# ----------------------------------------------------------------------------- clean


def test_compliant_stack_audits_clean_and_every_kind_is_found():
    s = seed(stack_config())
    report = audit(s.config)
    assert report.findings == [], [f.to_json() for f in report.findings]
    assert report.exit_code == 0
    kinds = sorted(r.kind for r in report.resources)
    assert kinds == [
        "eks-cluster",
        "fsx-file-system",
        "kms-key",
        "kms-key",
        "launch-template",
        "s3-bucket",
        "s3-bucket",
    ]


def test_resources_of_other_stacks_are_not_audited():
    mine, other = seed(stack_config()), seed(stack_config())
    client("kms").disable_key_rotation(KeyId=other.data_key)
    client("s3").delete_public_access_block(Bucket=other.data_bucket)
    report = audit(mine.config)
    assert report.findings == []
    assert other.data_bucket not in {r.name for r in report.resources}


# ----------------------------------------------------------------------------- seeded drift


def test_unencrypted_bucket_is_drift():
    s = seed(stack_config())
    client("s3").delete_bucket_encryption(Bucket=s.data_bucket)
    report = audit(s.config)
    assert rules(report) == {"s3-bucket-kms-encryption": [s.data_bucket]}
    assert report.exit_code == 1


def test_data_bucket_on_sse_s3_is_drift_but_the_access_log_bucket_may_use_it():
    s = seed(stack_config())
    client("s3").put_bucket_encryption(
        Bucket=s.data_bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    (finding,) = audit(s.config).findings
    assert (finding.rule, finding.name) == ("s3-bucket-kms-encryption", s.data_bucket)
    assert "AES256" in finding.message


def test_key_with_rotation_off_is_drift():
    s = seed(stack_config())
    client("kms").disable_key_rotation(KeyId=s.ebs_key)
    (finding,) = audit(s.config).findings
    assert finding.rule == "kms-key-rotation"
    assert finding.resource == s.ebs_key and finding.kind == "kms-key"
    assert finding.severity in ("low", "medium", "high", "critical")


def test_removed_public_access_block_is_drift():
    s = seed(stack_config())
    client("s3").delete_public_access_block(Bucket=s.logs_bucket)
    (finding,) = audit(s.config).findings
    assert (finding.rule, finding.name) == ("s3-public-access-block", s.logs_bucket)
    assert "has no public access block" in finding.message


def test_public_access_block_with_a_setting_off_names_it():
    s = seed(stack_config())
    client("s3").put_public_access_block(
        Bucket=s.data_bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": False,
            "RestrictPublicBuckets": True,
        },
    )
    (finding,) = audit(s.config).findings
    assert "leaves blockPublicPolicy off" in finding.message


def test_bucket_policy_without_the_tls_deny_is_drift():
    s = seed(stack_config())
    allow_only = json.loads(tls_only_policy(s.data_bucket))
    allow_only["Statement"][0]["Effect"] = "Allow"
    client("s3").put_bucket_policy(Bucket=s.data_bucket, Policy=json.dumps(allow_only))
    client("s3").delete_bucket_policy(Bucket=s.logs_bucket)
    report = audit(s.config)
    assert set(rules(report)) == {"s3-tls-only"}
    assert sorted(rules(report)["s3-tls-only"]) == sorted([s.data_bucket, s.logs_bucket])


def test_public_endpoint_is_drift_where_the_stack_declares_it_private():
    config = stack_config(
        environment="prod",
        network={"availability_zones": ["us-east-1a", "us-east-1b", "us-east-1c"]},
    )
    s = seed(config)
    client("eks").update_cluster_config(
        name=s.cluster,
        resourcesVpcConfig={
            "endpointPublicAccess": True,
            "endpointPrivateAccess": True,
            "publicAccessCidrs": ["0.0.0.0/0"],
        },
    )
    report = audit(config)
    assert rules(report) == {"eks-private-endpoint": [s.cluster]}


def test_public_endpoint_is_the_pack_finding_a_waiver_on_the_live_name_covers():
    """dev declares a public endpoint with an allowlist: the pack reports it (advisory), a
    waiver naming the live cluster keeps the audit clean, and the message follows the live
    allowlist when someone opens it to the internet."""
    cluster = {"endpoint_public_access": True, "public_access_cidrs": ["203.0.113.0/24"]}
    config = stack_config(environment="dev", cluster=cluster)
    s = seed(config)
    (finding,) = audit(config).findings
    assert (finding.rule, finding.enforcement) == ("eks-private-endpoint", "advisory")
    assert "restricted to 203.0.113.0/24" in finding.message
    waiver = {
        "rule": "eks-private-endpoint",
        "resource": s.cluster,
        "reason": "dev API reachable from the office range only",
        "expires": "2099-01-01",
    }
    waived = stack_config(
        config.stack, environment="dev", cluster=cluster, policies={"waivers": [waiver]}
    )
    report = audit(waived)
    assert [f.waived for f in report.findings] == [True] and report.exit_code == 0
    client("eks").update_cluster_config(
        name=s.cluster,
        resourcesVpcConfig={
            "endpointPublicAccess": True,
            "endpointPrivateAccess": True,
            "publicAccessCidrs": ["203.0.113.0/24", "0.0.0.0/0"],
        },
    )
    (finding,) = audit(config).findings
    assert "open to the internet (0.0.0.0/0)" in finding.message


def test_cluster_without_secrets_encryption_and_logging_is_drift():
    config = stack_config()
    s = Seeded(config)
    client("eks").create_cluster(
        name=s.cluster,
        version=config.cluster.version,
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/c",
        resourcesVpcConfig={
            "subnetIds": ["subnet-0123456789abcdef0"],
            "endpointPublicAccess": False,
            "endpointPrivateAccess": True,
        },
        logging={"clusterLogging": [{"types": ["api"], "enabled": True}]},
        tags=s.tags,
    )
    report = audit(config)
    assert rules(report) == {
        "eks-control-plane-logging": [s.cluster],
        "eks-secrets-encryption": [s.cluster],
    }
    (logging,) = [f for f in report.findings if f.rule == "eks-control-plane-logging"]
    assert "does not log audit, authenticator" in logging.message


def test_launch_template_version_allowing_imdsv1_or_unencrypted_volumes_is_drift():
    s = seed(stack_config())
    client("ec2").create_launch_template_version(
        LaunchTemplateId=s.launch_template,
        LaunchTemplateData={
            "MetadataOptions": {"HttpTokens": "optional"},
            "BlockDeviceMappings": [
                {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 200, "Encrypted": False}}
            ],
        },
    )
    report = audit(s.config)
    assert set(rules(report)) == {"ec2-imdsv2-required", "ebs-encrypted"}
    assert all("version 2" in f.message for f in report.findings)


def test_file_system_without_a_customer_managed_key_is_drift():
    config = stack_config()
    s = Seeded(config)
    system = client("fsx").create_file_system(
        FileSystemType="LUSTRE",
        StorageCapacity=1200,
        SubnetIds=["subnet-0123456789abcdef0"],
        LustreConfiguration={"DeploymentType": "PERSISTENT_2", "PerUnitStorageThroughput": 125},
        Tags=s.tag_list,
    )["FileSystem"]["FileSystemId"]
    (finding,) = audit(config).findings
    assert (finding.rule, finding.name) == ("fsx-kms-encryption", system)


def test_a_live_waiver_marks_the_finding_and_keeps_the_audit_clean():
    config = stack_config(
        policies={
            "waivers": [
                {
                    "rule": "kms-key-rotation",
                    "resource": "arn:aws:kms:*",
                    "reason": "rotation handled by the HSM team's own schedule",
                    "expires": "2099-01-01",
                }
            ]
        }
    )
    s = seed(config)
    client("kms").disable_key_rotation(KeyId=s.data_key)
    report = audit(config)
    (finding,) = report.findings
    assert finding.waived and report.exit_code == 0


def test_the_audit_only_reads():
    s = seed(stack_config())
    clients = AuditClients.create(REGION, None)
    operations: list[str] = []
    for c in vars(clients).values():
        c.meta.events.register("before-call.*.*", lambda model, **_: operations.append(model.name))
    run_audit(s.config, clients)
    assert operations
    assert all(op.startswith(("Get", "Describe", "List")) for op in operations), operations


def test_audit_clients_retry_throttling_adaptively():
    clients = AuditClients.create(REGION, None)
    assert all(c.meta.config.retries["mode"] == "adaptive" for c in vars(clients).values())


def test_audited_rules_are_the_pack_rules_of_the_types_the_audit_reads():
    from policies.rules.ids import RULE_IDS

    audited = set(audited_rules())
    assert audited <= set(RULE_IDS)
    assert {
        "s3-bucket-kms-encryption",
        "s3-public-access-block",
        "s3-tls-only",
        "s3-versioning",
        "kms-key-rotation",
        "eks-private-endpoint",
        "eks-secrets-encryption",
        "eks-control-plane-logging",
        "ec2-imdsv2-required",
        "ebs-encrypted",
        "fsx-kms-encryption",
        "tags-required",
    } <= audited
    # Rules on what the audit does not read (Kubernetes objects, IAM, the GPU budget) are not.
    assert not audited & {"k8s-no-privileged", "iam-no-admin-on-workloads", "gpu-budget"}


# ----------------------------------------------------------------------------- the CLI


def invoke(*args: str):
    return CliRunner().invoke(app, ["audit", "--project", str(ROOT), *args])


def test_cli_reports_drift_as_json_sarif_and_table_with_exit_1(tmp_path):
    config = load_stack_config(ROOT, "dev")
    s = seed(config)
    client("kms").disable_key_rotation(KeyId=s.data_key)
    client("s3").delete_public_access_block(Bucket=s.data_bucket)

    result = invoke("--stack", "dev", "--format", "json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert not report["clean"]
    drift = {f["policy"] for f in report["findings"] if not f["waived"]}
    assert drift == {"kms-key-rotation", "s3-public-access-block"}
    # dev's public endpoint: the stack's waiver ("*-eks") covers the live cluster too
    waived = [f for f in report["findings"] if f["waived"]]
    assert [(f["policy"], f["name"]) for f in waived] == [("eks-private-endpoint", s.cluster)]

    sarif_file = tmp_path / "audit.sarif"
    assert invoke("--stack", "dev", "--format", "sarif", "--out", str(sarif_file)).exit_code == 1
    sarif = json.loads(sarif_file.read_text())
    run = sarif["runs"][0]
    assert sarif["version"] == "2.1.0"
    assert {r["ruleId"] for r in run["results"] if "suppressions" not in r} == {
        "kms-key-rotation",
        "s3-public-access-block",
    }
    rule_ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert {"kms-key-rotation", "s3-public-access-block"} <= set(rule_ids)
    assert all(rule_ids[r["ruleIndex"]] == r["ruleId"] for r in run["results"])
    location = run["results"][0]["locations"][0]
    assert location["physicalLocation"]["artifactLocation"]["uri"] == "stacks/Pulumi.dev.yaml"
    assert location["logicalLocations"][0]["fullyQualifiedName"].startswith("arn:aws:")

    table = invoke("--stack", "dev")
    assert table.exit_code == 1
    assert "DRIFT" in table.stdout and "kms-key-rotation" in table.stdout


def test_cli_audits_through_an_aws_compatible_endpoint(tmp_path):
    """--endpoint-url sends every call to that URL: here a moto server on localhost (it
    shares this process's moto state, so it serves the stack seeded here)."""
    import socket

    from moto.server import ThreadedMotoServer

    from tests.conftest import write_project

    project = write_project(
        tmp_path / "project",
        "",
        {
            "llmcloud:environment": "staging",
            "llmcloud:network": {"availability_zones": ["us-east-1a", "us-east-1b"]},
            "llmcloud:tags": {"team": "ml", "cost-center": "research"},
        },
        name="llmcloud",
        stack="endpoint",
    )
    s = seed(load_stack_config(project, "endpoint"))
    client("kms").disable_key_rotation(KeyId=s.data_key)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        result = CliRunner().invoke(
            app,
            [
                "audit",
                "--project",
                str(project),
                "--stack",
                "endpoint",
                "--format",
                "json",
                "--endpoint-url",
                f"http://127.0.0.1:{port}",
            ],
        )
    finally:
        server.stop()
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert [f["policy"] for f in report["findings"]] == ["kms-key-rotation"]
    assert len(report["resources"]) == 7


def test_cli_with_no_deployed_resources_exits_2():
    result = invoke("--stack", "staging")
    assert result.exit_code == 2
    assert "is the stack deployed in this account and region?" in result.stderr


def test_cli_rejects_an_unknown_format():
    result = invoke("--stack", "dev", "--format", "xml")
    assert result.exit_code == 2
    assert "--format 'xml' is not a format" in result.stderr


def test_cli_without_credentials_exits_2(monkeypatch, tmp_path):
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    result = invoke("--stack", "dev")
    assert result.exit_code == 2
    assert "no AWS credentials found" in result.stderr
