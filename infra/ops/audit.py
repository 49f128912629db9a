"""`llmcloud audit`: is what is deployed still what the rules allow? The policy pack's own rule
predicates, evaluated on what the audit reads from AWS (drift).

Resources are found by the tags every llmcloud resource carries (the AWS provider's default
tags `llmcloud:stack` and `llmcloud:project`): through the Resource Groups Tagging API for
S3 buckets and KMS keys, and by listing EKS clusters, launch templates and FSx file systems
with their tags (moto's tagging API does not return those; the real one would, and the
listing works against both). Every call is a Describe/Get/List: audit changes nothing.

What is read becomes the resources a Pulumi program would declare for it, with the
properties CrossGuard hands the pack (an S3 bucket and its encryption, public access block,
policy, logging and versioning resources; a KMS key with its rotation and key policy; an EKS
cluster; each launch template version; an FSx for Lustre file system). The pack runs on
them through the same runner as `llmcloud plan` (`infra.plan.policy_runner`): rule ids,
messages, severities, enforcement and waivers all come from the rules and the stack config.
The audited rules are the pack's rules that apply to those types (`audited_rules()`); a
rule added to the pack for one of them is audited without an edit here.

A KMS key is referred to as AWS managed (`alias/aws/<service>`, the reserved alias prefix of
AWS managed keys) when it is one, as a program would name it, so the rules' "customer managed
key" checks judge live keys the same way.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from infra.config import StackConfig
from infra.ops.awsclient import aws_errors, error_code
from infra.reporting import sarif
from infra.reporting.findings import Finding
from infra.reporting.findings import urn_name as _urn_name
from infra.reporting.table import findings_table

STACK_TAG, PROJECT_TAG = "llmcloud:stack", "llmcloud:project"
# Error codes of a resource that disappeared between discovery and its check.
_GONE = frozenset(
    {
        "NoSuchBucket",
        "NotFoundException",
        "ResourceNotFoundException",
        "InvalidLaunchTemplateId.NotFound",
        "FileSystemNotFound",
    }
)
# AWS reserves this alias prefix for AWS managed keys (KMS CreateAlias: "The alias name
# cannot begin with alias/aws/").
AWS_MANAGED_ALIAS_PREFIX = "alias/aws/"

# The Pulumi types the live reader produces, per kind of live resource.
BUCKET = "aws:s3/bucket:Bucket"
BUCKET_SSE = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
)
BUCKET_PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
BUCKET_LOGGING = "aws:s3/bucketLogging:BucketLogging"
BUCKET_VERSIONING = "aws:s3/bucketVersioning:BucketVersioning"
KMS_KEY = "aws:kms/key:Key"
EKS_CLUSTER = "aws:eks/cluster:Cluster"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
LUSTRE = "aws:fsx/lustreFileSystem:LustreFileSystem"
# The type a finding on each kind is reported on (the others are a bucket's companions).
SUBJECT_TYPES = {
    "s3-bucket": BUCKET,
    "kms-key": KMS_KEY,
    "eks-cluster": EKS_CLUSTER,
    "launch-template": LAUNCH_TEMPLATE,
    "fsx-file-system": LUSTRE,
}
# No provider resource: the live tags already include the provider's default tags.
_LIVE_PROVIDER = "urn:pulumi:live::live::pulumi:providers:aws::live"


@dataclass(frozen=True)
class LiveResource:
    """A deployed resource of the stack: its ARN, kind, name and tags."""

    arn: str
    kind: str  # "s3-bucket" | "kms-key" | "eks-cluster" | "launch-template" | "fsx-file-system"
    name: str
    tags: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class AuditReport:
    project: str
    stack: str
    region: str
    resources: list[LiveResource] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def drift(self) -> list[Finding]:
        return [f for f in self.findings if not f.waived]

    @property
    def exit_code(self) -> int:
        """0 clean (waived findings allowed), 1 when the live state breaks a rule."""
        return 1 if self.drift else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "stack": self.stack,
            "region": self.region,
            "clean": not self.drift,
            "resources": [{"arn": r.arn, "kind": r.kind, "name": r.name} for r in self.resources],
            "findings": [f.to_json() for f in self.findings],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class AuditClients:
    """The boto3 clients audit reads with (all in the stack's region)."""

    tagging: Any
    s3: Any
    kms: Any
    eks: Any
    ec2: Any
    fsx: Any

    @classmethod
    def create(cls, region: str, endpoint_url: str | None) -> AuditClients:
        from infra.ops.awsclient import client

        def make(service: str) -> Any:
            return client(service, region=region, endpoint_url=endpoint_url)

        return cls(
            tagging=make("resourcegroupstaggingapi"),
            s3=make("s3"),
            kms=make("kms"),
            eks=make("eks"),
            ec2=make("ec2"),
            fsx=make("fsx"),
        )


def audited_rules() -> tuple[str, ...]:
    """Ids of the pack's rules that apply to a type the audit reads, in pack order."""
    from policies.rules import build_policies

    subjects = set(SUBJECT_TYPES.values())
    return tuple(p.name for p in build_policies() if any(p.applies_to(t) for t in sorted(subjects)))


def rule_metadata() -> list[dict[str, Any]]:
    """The policy pack's metadata of the audited rules."""
    from infra.plan.policy_runner import rule_metadata as pack_metadata

    audited = set(audited_rules())
    return [r for r in pack_metadata() if r["id"] in audited]


def run_audit(config: StackConfig, clients: AuditClients, region: str | None = None) -> AuditReport:
    """Find the stack's resources by tag, read them, and run the pack's rules on them."""
    from infra.plan.engine import Plan
    from infra.plan.policy_runner import evaluate_policies
    from policies.rules.base import PolicySettings

    region = region or config.region
    report = AuditReport(project=config.project, stack=config.stack, region=region)
    reader = _Reader(config, clients, report)
    reader.discover()
    reader.read()
    plan = Plan(
        project=config.project,
        stack=config.stack,
        project_dir=Path("."),
        stack_file=Path("."),
        resources=reader.resources,
        outputs={},
        secret_outputs=set(),
        warnings=[],
        elapsed_s=0.0,
    )
    names = {urn: (live.arn, live.name) for urn, live in reader.subjects.items()}
    settings = PolicySettings.from_stack_config(config, drop_waived=False)
    found = evaluate_policies(plan, settings, only=audited_rules(), names=names)
    for f in found:
        live = reader.subjects.get(f.urn or "")
        if live is None:
            continue  # a companion resource or the stack: the audit reports on live resources
        report.findings.append(
            dataclasses.replace(
                f,
                urn=None,  # the live view's URNs are not the program's: the ARN identifies it
                resource=live.arn,
                kind=live.kind,
                resource_name=_urn_name(f.urn),
            )
        )
    report.findings.sort(key=lambda f: (f.policy, f.resource or "", f.message))
    return report


class _Reader:
    """Discovers the stack's live resources and turns them into plan resources."""

    def __init__(self, config: StackConfig, clients: AuditClients, report: AuditReport) -> None:
        self.config = config
        self.c = clients
        self.report = report
        self.tags = {STACK_TAG: config.stack, PROJECT_TAG: config.project}
        self.resources: list[Any] = []
        self.subjects: dict[str, LiveResource] = {}  # urn -> the live resource it stands for
        self._keys: dict[str, dict[str, Any] | None] = {}
        self._key_refs: dict[str, str] = {}

    # ------------------------------------------------------------------ discovery

    def _ours(self, tags: dict[str, str]) -> bool:
        return all(tags.get(k) == v for k, v in self.tags.items())

    def discover(self) -> None:
        found: list[LiveResource] = []
        filters = [{"Key": k, "Values": [v]} for k, v in self.tags.items()]
        with aws_errors("find resources by tag (tag:GetResources)"):
            pages = self.c.tagging.get_paginator("get_resources").paginate(
                TagFilters=filters, ResourceTypeFilters=["s3:bucket", "kms:key"]
            )
            for page in pages:
                for mapping in page.get("ResourceTagMappingList", []):
                    arn = mapping["ResourceARN"]
                    tags = {t["Key"]: t["Value"] for t in mapping.get("Tags") or []}
                    if arn.startswith("arn:aws") and ":s3:::" in arn:
                        found.append(LiveResource(arn, "s3-bucket", arn.split(":::", 1)[1], tags))
                    elif ":kms:" in arn and ":key/" in arn:
                        found.append(LiveResource(arn, "kms-key", arn.rsplit("/", 1)[1], tags))
        with aws_errors("list EKS clusters (eks:ListClusters, eks:DescribeCluster)"):
            for page in self.c.eks.get_paginator("list_clusters").paginate():
                for name in page.get("clusters", []):
                    cluster = self.c.eks.describe_cluster(name=name)["cluster"]
                    tags = cluster.get("tags") or {}
                    if self._ours(tags):
                        found.append(LiveResource(cluster["arn"], "eks-cluster", name, tags))
        with aws_errors("list launch templates (ec2:DescribeLaunchTemplates)"):
            tag_filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in self.tags.items()]
            pages = self.c.ec2.get_paginator("describe_launch_templates").paginate(
                Filters=tag_filters
            )
            for page in pages:
                for lt in page.get("LaunchTemplates", []):
                    tags = {t["Key"]: t["Value"] for t in lt.get("Tags") or []}
                    found.append(
                        LiveResource(
                            lt["LaunchTemplateId"],
                            "launch-template",
                            lt["LaunchTemplateName"],
                            tags,
                        )
                    )
        with aws_errors("list FSx file systems (fsx:DescribeFileSystems)"):
            for page in self.c.fsx.get_paginator("describe_file_systems").paginate():
                for fs in page.get("FileSystems", []):
                    tags = {t["Key"]: t["Value"] for t in fs.get("Tags") or []}
                    if self._ours(tags):
                        arn = fs.get("ResourceARN") or fs["FileSystemId"]
                        found.append(LiveResource(arn, "fsx-file-system", fs["FileSystemId"], tags))
        self.report.resources = sorted(found, key=lambda r: (r.kind, r.name))

    # ------------------------------------------------------------------ reading

    def read(self) -> None:
        readers: dict[str, Callable[[LiveResource], None]] = {
            "s3-bucket": self._bucket,
            "kms-key": self._key,
            "eks-cluster": self._cluster,
            "launch-template": self._launch_template,
            "fsx-file-system": self._file_system,
        }
        for resource in self.report.resources:
            try:
                readers[resource.kind](resource)
            except ClientError as e:
                if error_code(e) not in _GONE:
                    raise
                self.report.notes.append(
                    f"{resource.kind} {resource.name} was deleted while the audit ran; skipped"
                )

    def _declare(
        self,
        type_: str,
        name: str,
        inputs: dict[str, Any],
        outputs: dict[str, Any] | None = None,
        live: LiveResource | None = None,
    ) -> str:
        from infra.plan.engine import Resource

        urn = f"urn:pulumi:{self.config.stack}::{self.config.project}::{type_}::{name}"
        self.resources.append(
            Resource(
                urn=urn,
                type=type_,
                name=name,
                parent=None,
                custom=True,
                inputs=inputs,
                provider=_LIVE_PROVIDER,
                id=(outputs or {}).get("id"),
                outputs=outputs or {},
            )
        )
        if live is not None:
            self.subjects[urn] = live
        return urn

    # ------------------------------------------------------------------ KMS references

    def _describe_key(self, key: str) -> dict[str, Any] | None:
        if key not in self._keys:
            try:
                with aws_errors(f"describe KMS key {key} (kms:DescribeKey)"):
                    self._keys[key] = self.c.kms.describe_key(KeyId=key)["KeyMetadata"]
            except ClientError as e:
                if error_code(e) != "NotFoundException":
                    raise
                self._keys[key] = None
        return self._keys[key]

    def _key_ref(self, key: str | None) -> str | None:
        """The key as a program names it: its ARN, or `alias/aws/<service>` for an AWS managed
        key (by KeyManager, or by the reserved alias prefix)."""
        if not key:
            return None
        if key not in self._key_refs:
            meta = self._describe_key(key)
            ref = key
            if meta is not None:
                with aws_errors(f"list aliases of KMS key {key} (kms:ListAliases)"):
                    aliases = [
                        a["AliasName"]
                        for a in self.c.kms.list_aliases(KeyId=meta["KeyId"]).get("Aliases", [])
                    ]
                managed = [a for a in aliases if a.startswith(AWS_MANAGED_ALIAS_PREFIX)]
                if managed:
                    ref = managed[0]
                elif meta.get("KeyManager") == "AWS":
                    ref = f"{AWS_MANAGED_ALIAS_PREFIX}(aws-managed)"
                else:
                    ref = meta.get("Arn", key)
            self._key_refs[key] = ref
        return self._key_refs[key]

    # ------------------------------------------------------------------ S3

    def _s3(self, call: str, bucket: str, missing: str) -> dict[str, Any] | None:
        """One S3 read; None when the configuration `missing` does not exist."""
        try:
            with aws_errors(f"read bucket {bucket} (s3:{call})"):
                return getattr(self.c.s3, _snake(call))(Bucket=bucket)
        except ClientError as e:
            if error_code(e) == missing:
                return None
            raise

    def _bucket(self, r: LiveResource) -> None:
        name = r.name
        outputs = {"id": name, "arn": r.arn, "bucket": name}
        self._declare(BUCKET, name, {"bucket": name, "tags": dict(r.tags)}, outputs, live=r)
        of_bucket = {"bucket": name}

        sse = self._s3(
            "GetBucketEncryption", name, "ServerSideEncryptionConfigurationNotFoundError"
        )
        if sse is not None:
            rules = []
            for rule in (sse.get("ServerSideEncryptionConfiguration") or {}).get("Rules") or []:
                default = rule.get("ApplyServerSideEncryptionByDefault") or {}
                rules.append(
                    {
                        "applyServerSideEncryptionByDefault": {
                            "sseAlgorithm": default.get("SSEAlgorithm"),
                            "kmsMasterKeyId": self._key_ref(default.get("KMSMasterKeyID")),
                        },
                        "bucketKeyEnabled": bool(rule.get("BucketKeyEnabled")),
                    }
                )
            self._declare(BUCKET_SSE, f"{name}-encryption", {**of_bucket, "rules": rules})

        block = self._s3("GetPublicAccessBlock", name, "NoSuchPublicAccessBlockConfiguration")
        if block is not None:
            settings = block.get("PublicAccessBlockConfiguration") or {}
            flags = {k[0].lower() + k[1:]: bool(v) for k, v in settings.items()}
            self._declare(BUCKET_PAB, f"{name}-public-access-block", {**of_bucket, **flags})

        policy = self._s3("GetBucketPolicy", name, "NoSuchBucketPolicy")
        if policy and policy.get("Policy"):
            self._declare(
                BUCKET_POLICY, f"{name}-policy", {**of_bucket, "policy": policy["Policy"]}
            )

        logging = (self._s3("GetBucketLogging", name, "NoSuchBucket") or {}).get("LoggingEnabled")
        if logging and logging.get("TargetBucket"):
            self._declare(
                BUCKET_LOGGING,
                f"{name}-logging",
                {
                    **of_bucket,
                    "targetBucket": logging["TargetBucket"],
                    "targetPrefix": logging.get("TargetPrefix", ""),
                },
            )

        versioning = self._s3("GetBucketVersioning", name, "NoSuchBucket") or {}
        if versioning.get("Status"):
            self._declare(
                BUCKET_VERSIONING,
                f"{name}-versioning",
                {**of_bucket, "versioningConfiguration": {"status": versioning["Status"]}},
            )

    # ------------------------------------------------------------------ KMS

    def _key(self, r: LiveResource) -> None:
        meta = self._describe_key(r.arn)
        if meta is None or meta.get("KeyState") in ("PendingDeletion", "PendingReplicaDeletion"):
            return
        if meta.get("KeyManager") not in (None, "CUSTOMER"):
            return  # AWS managed keys are AWS's to rotate; they carry no stack tags anyway
        with aws_errors(f"read rotation of KMS key {r.name} (kms:GetKeyRotationStatus)"):
            rotation = self.c.kms.get_key_rotation_status(KeyId=r.arn)
        with aws_errors(f"read the key policy of {r.name} (kms:GetKeyPolicy)"):
            policy = self.c.kms.get_key_policy(KeyId=r.arn, PolicyName="default").get("Policy")
        inputs = {
            "description": meta.get("Description", ""),
            "customerMasterKeySpec": meta.get("KeySpec")
            or meta.get("CustomerMasterKeySpec")
            or "SYMMETRIC_DEFAULT",
            "keyUsage": meta.get("KeyUsage") or "ENCRYPT_DECRYPT",
            "customKeyStoreId": meta.get("CustomKeyStoreId"),
            "enableKeyRotation": bool(rotation.get("KeyRotationEnabled")),
            "policy": policy,
            "tags": dict(r.tags),
        }
        self._declare(KMS_KEY, r.name, inputs, {"id": meta["KeyId"], "arn": r.arn}, live=r)

    # ------------------------------------------------------------------ EKS

    def _cluster(self, r: LiveResource) -> None:
        with aws_errors(f"describe EKS cluster {r.name} (eks:DescribeCluster)"):
            cluster = self.c.eks.describe_cluster(name=r.name)["cluster"]
        vpc = cluster.get("resourcesVpcConfig") or {}
        public = bool(vpc.get("endpointPublicAccess", False))
        vpc_config: dict[str, Any] = {
            "endpointPublicAccess": public,
            "endpointPrivateAccess": bool(vpc.get("endpointPrivateAccess", False)),
        }
        if public:  # EKS reports 0.0.0.0/0 when no allowlist is set
            vpc_config["publicAccessCidrs"] = list(vpc.get("publicAccessCidrs") or ["0.0.0.0/0"])
        encryption = [
            {"resources": list(e.get("resources") or []), "provider": dict(e.get("provider") or {})}
            for e in cluster.get("encryptionConfig") or []
        ]
        enabled: list[str] = []
        for entry in (cluster.get("logging") or {}).get("clusterLogging") or []:
            if entry.get("enabled"):
                enabled += [t for t in entry.get("types") or [] if t not in enabled]
        inputs = {
            "name": r.name,
            "version": cluster.get("version"),
            "vpcConfig": vpc_config,
            "encryptionConfig": encryption[0] if len(encryption) == 1 else encryption,
            "enabledClusterLogTypes": enabled,
            "tags": dict(r.tags),
        }
        self._declare(EKS_CLUSTER, r.name, inputs, {"id": r.name, "arn": r.arn}, live=r)

    # ------------------------------------------------------------------ EC2

    def _launch_template(self, r: LiveResource) -> None:
        """One resource per distinct version of $Latest and $Default: either may launch nodes."""
        with aws_errors(f"read launch template {r.name} (ec2:DescribeLaunchTemplateVersions)"):
            versions = self.c.ec2.describe_launch_template_versions(
                LaunchTemplateId=r.arn, Versions=["$Latest", "$Default"]
            )["LaunchTemplateVersions"]
        seen: set[int] = set()
        for version in versions:
            number = version.get("VersionNumber")
            if number in seen:
                continue
            seen.add(number)
            data = version.get("LaunchTemplateData") or {}
            metadata = data.get("MetadataOptions") or {}
            mappings = []
            for m in data.get("BlockDeviceMappings") or []:
                mapping: dict[str, Any] = {"deviceName": m.get("DeviceName")}
                if "Ebs" in m:
                    ebs = m["Ebs"]
                    mapping["ebs"] = {
                        "encrypted": "true" if ebs.get("Encrypted") else "false",
                        "kmsKeyId": self._key_ref(ebs.get("KmsKeyId")),
                        "volumeSize": ebs.get("VolumeSize"),
                        "volumeType": ebs.get("VolumeType"),
                    }
                mappings.append(mapping)
            interfaces = [
                {
                    "associatePublicIpAddress": "true"
                    if i.get("AssociatePublicIpAddress")
                    else "false"
                }
                for i in data.get("NetworkInterfaces") or []
            ]
            inputs = {
                "name": r.name,
                "metadataOptions": {
                    "httpTokens": metadata.get("HttpTokens", "optional"),
                    "httpEndpoint": metadata.get("HttpEndpoint", "enabled"),
                    "httpPutResponseHopLimit": metadata.get("HttpPutResponseHopLimit"),
                },
                "blockDeviceMappings": mappings,
                "networkInterfaces": interfaces,
                "tags": dict(r.tags),
            }
            self._declare(
                LAUNCH_TEMPLATE,
                f"{r.name} version {number}",
                inputs,
                {"id": r.arn, "latestVersion": number},
                live=r,
            )

    # ------------------------------------------------------------------ FSx

    def _file_system(self, r: LiveResource) -> None:
        with aws_errors(f"describe FSx file system {r.name} (fsx:DescribeFileSystems)"):
            systems = self.c.fsx.describe_file_systems(FileSystemIds=[r.name])["FileSystems"]
        if not systems:
            return
        fs = systems[0]
        lustre = fs.get("LustreConfiguration") or {}
        inputs = {
            "deploymentType": lustre.get("DeploymentType"),
            "storageCapacity": fs.get("StorageCapacity"),
            "kmsKeyId": self._key_ref(fs.get("KmsKeyId")),
            "tags": dict(r.tags),
        }
        self._declare(LUSTRE, r.name, inputs, {"id": r.name, "arn": r.arn}, live=r)


def _snake(operation: str) -> str:
    out = ""
    for ch in operation:
        out += ("_" + ch.lower()) if ch.isupper() and out else ch.lower()
    return out


# ----------------------------------------------------------------------------- rendering


def render_table(report: AuditReport, console: Any) -> None:
    from rich.markup import escape  # names and notes are text, not markup

    kinds = Counter(r.kind for r in report.resources)
    console.print(
        f"[bold]llmcloud audit[/] [cyan]{escape(report.project)} / {escape(report.stack)}[/] "
        f"({report.region}): "
        + (", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no resources")
        + " checked",
        highlight=False,
    )
    if report.findings:
        console.print(findings_table(report.findings, "Drift"))
    for note in report.notes:
        console.print(f"[dim]{escape(note)}[/]")
    if report.drift:
        console.print(
            f"[red bold]DRIFT[/]: {len(report.drift)} finding(s) against the policy rules"
        )
    else:
        console.print("[green bold]CLEAN[/]: the live resources match the policy rules")


def render_sarif(
    report: AuditReport, rules: Iterable[dict[str, Any]] = (), location: str = ""
) -> str:
    """SARIF 2.1.0 in the shape of `llmcloud plan --format sarif`: one result per finding,
    located in the stack file, with the live ARN as the logical location."""
    return sarif.document(
        automation_id=f"llmcloud-audit/{report.stack}/",
        location=location,
        findings=report.findings,
        rules=rules,
        version=sarif.llmcloud_version(),
        stack_name=f"{report.project}/{report.stack}",
    )
