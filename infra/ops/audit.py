"""`llmcloud audit`: is what is deployed still what we declared? Read-only drift checks of
the live account against the policy pack's rule ids.

Resources are found by the tags every llmcloud resource carries (the AWS provider's default
tags `llmcloud:stack` and `llmcloud:project`): through the Resource Groups Tagging API for
S3 buckets and KMS keys, and by listing EKS clusters, launch templates and FSx file systems
with their tags (moto's tagging API does not return those; the real one would, and the
listing works against both). Every call is a Describe/Get/List: audit changes nothing.

Rules checked live, with the ids of `policies/`:
s3-bucket-kms-encryption, s3-public-access-block, s3-tls-only, kms-key-rotation,
eks-private-endpoint, eks-secrets-encryption, eks-control-plane-logging,
ec2-imdsv2-required, ebs-encrypted, fsx-kms-encryption.
"""

from __future__ import annotations

import fnmatch
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from botocore.exceptions import ClientError

from infra.config import REQUIRED_CONTROL_PLANE_LOGS, StackConfig
from infra.ops.awsclient import aws_errors, error_code
from infra.reporting import sarif

STACK_TAG, PROJECT_TAG = "llmcloud:stack", "llmcloud:project"
AUDITED_RULES = (
    "s3-bucket-kms-encryption",
    "s3-public-access-block",
    "s3-tls-only",
    "kms-key-rotation",
    "eks-private-endpoint",
    "eks-secrets-encryption",
    "eks-control-plane-logging",
    "ec2-imdsv2-required",
    "ebs-encrypted",
    "fsx-kms-encryption",
)
KMS_ALGORITHMS = ("aws:kms", "aws:kms:dsse")
PUBLIC_ACCESS_FLAGS = (
    "BlockPublicAcls",
    "IgnorePublicAcls",
    "BlockPublicPolicy",
    "RestrictPublicBuckets",
)
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


@dataclass(frozen=True)
class LiveResource:
    """A deployed resource of the stack: its ARN, kind and name."""

    arn: str
    kind: str  # "s3-bucket" | "kms-key" | "eks-cluster" | "launch-template" | "fsx-file-system"
    name: str


@dataclass(frozen=True)
class AuditFinding:
    rule: str
    resource: LiveResource
    message: str
    severity: str = "medium"
    waived: bool = False
    waiver_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "policy": self.rule,
            "resource": self.resource.arn,
            "kind": self.resource.kind,
            "name": self.resource.name,
            "message": self.message,
            "severity": self.severity,
            "waived": self.waived,
        }
        if self.waived:
            out["waiver"] = {"reason": self.waiver_reason}
        return out


@dataclass
class AuditReport:
    project: str
    stack: str
    region: str
    resources: list[LiveResource] = field(default_factory=list)
    findings: list[AuditFinding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def drift(self) -> list[AuditFinding]:
        return [f for f in self.findings if not f.waived]

    @property
    def exit_code(self) -> int:
        """0 clean (waived findings allowed), 1 when the live state drifted from a rule."""
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


def _severities() -> dict[str, str]:
    return {r["id"]: r.get("severity", "medium") for r in rule_metadata()}


def rule_metadata() -> list[dict[str, Any]]:
    """The policy pack's metadata of the audited rules (empty when the pack is unavailable)."""
    try:
        from infra.plan.policy_runner import rule_metadata as pack_metadata

        rules = pack_metadata()
    except ImportError:
        return []
    return [r for r in rules if r.get("id") in AUDITED_RULES]


def run_audit(config: StackConfig, clients: AuditClients, region: str | None = None) -> AuditReport:
    """Find the stack's resources by tag and check each against the audited rules."""
    region = region or config.region
    report = AuditReport(project=config.project, stack=config.stack, region=region)
    auditor = _Auditor(config, clients, report, _severities())
    auditor.discover()
    auditor.check()
    report.findings.sort(key=lambda f: (f.rule, f.resource.arn))
    return report


class _Auditor:
    def __init__(
        self,
        config: StackConfig,
        clients: AuditClients,
        report: AuditReport,
        severities: dict[str, str],
    ) -> None:
        self.config = config
        self.c = clients
        self.report = report
        self.severities = severities
        self.tags = {STACK_TAG: config.stack, PROJECT_TAG: config.project}
        self._keys: dict[str, dict[str, Any] | None] = {}
        self._log_target_names: set[str] = set()
        self.today = date.today()

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
                    if arn.startswith("arn:aws") and ":s3:::" in arn:
                        found.append(LiveResource(arn, "s3-bucket", arn.split(":::", 1)[1]))
                    elif ":kms:" in arn and ":key/" in arn:
                        found.append(LiveResource(arn, "kms-key", arn.rsplit("/", 1)[1]))
        with aws_errors("list EKS clusters (eks:ListClusters, eks:DescribeCluster)"):
            for page in self.c.eks.get_paginator("list_clusters").paginate():
                for name in page.get("clusters", []):
                    cluster = self.c.eks.describe_cluster(name=name)["cluster"]
                    if self._ours(cluster.get("tags") or {}):
                        found.append(LiveResource(cluster["arn"], "eks-cluster", name))
        with aws_errors("list launch templates (ec2:DescribeLaunchTemplates)"):
            tag_filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in self.tags.items()]
            pages = self.c.ec2.get_paginator("describe_launch_templates").paginate(
                Filters=tag_filters
            )
            for page in pages:
                for lt in page.get("LaunchTemplates", []):
                    found.append(
                        LiveResource(
                            lt["LaunchTemplateId"], "launch-template", lt["LaunchTemplateName"]
                        )
                    )
        with aws_errors("list FSx file systems (fsx:DescribeFileSystems)"):
            for page in self.c.fsx.get_paginator("describe_file_systems").paginate():
                for fs in page.get("FileSystems", []):
                    tags = {t["Key"]: t["Value"] for t in fs.get("Tags") or []}
                    if self._ours(tags):
                        arn = fs.get("ResourceARN") or fs["FileSystemId"]
                        found.append(LiveResource(arn, "fsx-file-system", fs["FileSystemId"]))
        self.report.resources = sorted(found, key=lambda r: (r.kind, r.name))

    # ------------------------------------------------------------------ findings

    def _find(self, rule: str, resource: LiveResource, message: str) -> None:
        waiver = self._waiver(rule, resource)
        self.report.findings.append(
            AuditFinding(
                rule=rule,
                resource=resource,
                message=message,
                severity=self.severities.get(rule, "medium"),
                waived=waiver is not None,
                waiver_reason=waiver.reason if waiver else None,
            )
        )

    def _waiver(self, rule: str, resource: LiveResource) -> Any:
        """A live waiver of the stack config whose resource glob matches the live name or ARN."""
        for w in self.config.policies.waivers:
            if w.rule != rule or w.expires < self.today:
                continue
            if fnmatch.fnmatchcase(resource.name, w.resource) or fnmatch.fnmatchcase(
                resource.arn, w.resource
            ):
                return w
        return None

    def check(self) -> None:
        checks: dict[str, Callable[[LiveResource], None]] = {
            "s3-bucket": self._bucket,
            "kms-key": self._key,
            "eks-cluster": self._cluster,
            "launch-template": self._launch_template,
            "fsx-file-system": self._file_system,
        }
        self._log_target_names = self._log_targets()
        for resource in self.report.resources:
            try:
                checks[resource.kind](resource)
            except ClientError as e:
                if error_code(e) not in _GONE:
                    raise
                self.report.notes.append(
                    f"{resource.kind} {resource.name} was deleted while the audit ran; skipped"
                )

    # ------------------------------------------------------------------ S3

    def _s3(self, call: str, bucket: str, missing: str) -> dict[str, Any] | None:
        """One S3 read; None when the configuration `missing` does not exist."""
        try:
            with aws_errors(f"read bucket {bucket} (s3:{call})"):
                method = getattr(self.c.s3, _snake(call))
                return method(Bucket=bucket)
        except ClientError as e:
            if error_code(e) == missing:
                return None
            raise

    def _log_targets(self) -> set[str]:
        """Buckets that receive another stack bucket's server access logs (SSE-S3 allowed)."""
        targets = set()
        for r in self.report.resources:
            if r.kind != "s3-bucket":
                continue
            logging = self._s3("GetBucketLogging", r.name, "NoSuchBucket") or {}
            target = (logging.get("LoggingEnabled") or {}).get("TargetBucket")
            if target:
                targets.add(target)
        return targets

    def _bucket(self, r: LiveResource) -> None:
        sse = self._s3(
            "GetBucketEncryption", r.name, "ServerSideEncryptionConfigurationNotFoundError"
        )
        rules = ((sse or {}).get("ServerSideEncryptionConfiguration") or {}).get("Rules") or []
        algorithms = [
            (rule.get("ApplyServerSideEncryptionByDefault") or {}).get("SSEAlgorithm")
            for rule in rules
        ]
        if r.name in self._log_target_names:
            if not any(a in (*KMS_ALGORITHMS, "AES256") for a in algorithms):
                self._find(
                    "s3-bucket-kms-encryption",
                    r,
                    "access-log bucket has no default encryption (SSE-S3 expected)",
                )
        elif not any(a in KMS_ALGORITHMS for a in algorithms):
            shown = ", ".join(a for a in algorithms if a) or "none"
            self._find(
                "s3-bucket-kms-encryption",
                r,
                f"default encryption is {shown}, not SSE-KMS with the platform's data key",
            )

        block = self._s3("GetPublicAccessBlock", r.name, "NoSuchPublicAccessBlockConfiguration")
        settings = (block or {}).get("PublicAccessBlockConfiguration") or {}
        off = [flag for flag in PUBLIC_ACCESS_FLAGS if not settings.get(flag)]
        if block is None:
            self._find("s3-public-access-block", r, "the bucket's public access block was removed")
        elif off:
            self._find(
                "s3-public-access-block", r, "public access block settings off: " + ", ".join(off)
            )

        policy = self._s3("GetBucketPolicy", r.name, "NoSuchBucketPolicy")
        document = json.loads(policy["Policy"]) if policy and policy.get("Policy") else None
        if document is None:
            self._find("s3-tls-only", r, "the bucket has no bucket policy (no TLS-only deny)")
        elif not _denies_plain_http(document, r.name):
            self._find(
                "s3-tls-only",
                r,
                "the bucket policy has no Deny of s3:* when aws:SecureTransport is false",
            )

    # ------------------------------------------------------------------ KMS

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

    def _key(self, r: LiveResource) -> None:
        meta = self._describe_key(r.arn)
        if meta is None or meta.get("KeyState") in ("PendingDeletion", "PendingReplicaDeletion"):
            return
        if meta.get("KeyManager") != "CUSTOMER" or meta.get("KeySpec", "SYMMETRIC_DEFAULT") != (
            "SYMMETRIC_DEFAULT"
        ):
            return  # automatic rotation exists only for symmetric customer managed keys
        with aws_errors(f"read rotation of KMS key {r.name} (kms:GetKeyRotationStatus)"):
            status = self.c.kms.get_key_rotation_status(KeyId=r.arn)
        if not status.get("KeyRotationEnabled"):
            self._find("kms-key-rotation", r, "automatic key rotation is off")

    def _customer_key(self, key: str | None) -> bool:
        if not key:
            return False
        meta = self._describe_key(key)
        return bool(meta) and meta.get("KeyManager") == "CUSTOMER"

    # ------------------------------------------------------------------ EKS

    def _cluster(self, r: LiveResource) -> None:
        with aws_errors(f"describe EKS cluster {r.name} (eks:DescribeCluster)"):
            cluster = self.c.eks.describe_cluster(name=r.name)["cluster"]
        vpc = cluster.get("resourcesVpcConfig") or {}
        declared = self.config.cluster
        if vpc.get("endpointPublicAccess"):
            cidrs = set(vpc.get("publicAccessCidrs") or [])
            allowed = {str(c) for c in declared.public_access_cidrs}
            if self.config.environment == "prod" or not declared.endpoint_public_access:
                self._find(
                    "eks-private-endpoint",
                    r,
                    "the API endpoint is public; the stack declares it private",
                )
            elif cidrs - allowed:
                self._find(
                    "eks-private-endpoint",
                    r,
                    "the public endpoint allows "
                    + ", ".join(sorted(cidrs - allowed))
                    + " beyond the declared public_access_cidrs",
                )
        if not vpc.get("endpointPrivateAccess", False):
            self._find("eks-private-endpoint", r, "private endpoint access is off")

        encrypted = [
            e
            for e in cluster.get("encryptionConfig") or []
            if "secrets" in (e.get("resources") or []) and (e.get("provider") or {}).get("keyArn")
        ]
        if not encrypted:
            self._find(
                "eks-secrets-encryption",
                r,
                "Kubernetes secrets are not envelope-encrypted with KMS",
            )

        enabled: set[str] = set()
        for entry in (cluster.get("logging") or {}).get("clusterLogging") or []:
            if entry.get("enabled"):
                enabled.update(entry.get("types") or [])
        wanted = set(declared.log_types) | set(REQUIRED_CONTROL_PLANE_LOGS)
        missing = sorted(wanted - enabled)
        if missing:
            self._find(
                "eks-control-plane-logging",
                r,
                "control plane log types off: " + ", ".join(missing),
            )

    # ------------------------------------------------------------------ EC2

    def _launch_template(self, r: LiveResource) -> None:
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
            label = f"version {number}"
            metadata = data.get("MetadataOptions") or {}
            if (
                metadata.get("HttpEndpoint") != "disabled"
                and metadata.get("HttpTokens") != "required"
            ):
                self._find(
                    "ec2-imdsv2-required",
                    r,
                    f"{label}: instance metadata allows IMDSv1 (HttpTokens "
                    f"{metadata.get('HttpTokens') or 'optional'})",
                )
            mappings = [m for m in data.get("BlockDeviceMappings") or [] if "Ebs" in m]
            if not mappings:
                self._find(
                    "ebs-encrypted",
                    r,
                    f"{label}: no EBS block device mapping, so the root volume is not "
                    "encrypted with the platform's key",
                )
            for m in mappings:
                ebs = m["Ebs"]
                device = m.get("DeviceName", "?")
                if not ebs.get("Encrypted"):
                    self._find("ebs-encrypted", r, f"{label}: {device} is not encrypted")
                elif not self._customer_key(ebs.get("KmsKeyId")):
                    self._find(
                        "ebs-encrypted",
                        r,
                        f"{label}: {device} is not encrypted with a customer managed key",
                    )

    # ------------------------------------------------------------------ FSx

    def _file_system(self, r: LiveResource) -> None:
        with aws_errors(f"describe FSx file system {r.name} (fsx:DescribeFileSystems)"):
            systems = self.c.fsx.describe_file_systems(FileSystemIds=[r.name])["FileSystems"]
        if not systems:
            return
        fs = systems[0]
        deployment = (fs.get("LustreConfiguration") or {}).get("DeploymentType", "")
        if deployment.startswith("SCRATCH"):
            self._find(
                "fsx-kms-encryption", r, f"{deployment} cannot use a customer managed KMS key"
            )
        elif not self._customer_key(fs.get("KmsKeyId")):
            self._find(
                "fsx-kms-encryption",
                r,
                "encrypted with the AWS managed key, not a customer managed one"
                if fs.get("KmsKeyId")
                else "no KMS key",
            )


def _snake(operation: str) -> str:
    out = ""
    for ch in operation:
        out += ("_" + ch.lower()) if ch.isupper() and out else ch.lower()
    return out


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _denies_plain_http(document: dict[str, Any], bucket: str) -> bool:
    """A statement denies every principal every S3 action on the bucket's objects when
    aws:SecureTransport is false."""
    arns = {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}
    for st in _as_list(document.get("Statement")):
        if st.get("Effect") != "Deny":
            continue
        principal = st.get("Principal")
        if principal != "*" and _as_list((principal or {}).get("AWS")) != ["*"]:
            continue
        actions = _as_list(st.get("Action"))
        if not any(a in ("s3:*", "*") for a in actions):
            continue
        resources = set(_as_list(st.get("Resource")))
        if not (resources & (arns | {"*"})) and not any(
            fnmatch.fnmatchcase(arn, res) for res in resources for arn in arns
        ):
            continue
        condition = st.get("Condition") or {}
        for operator in ("Bool", "BoolIfExists"):
            value = (condition.get(operator) or {}).get("aws:SecureTransport")
            if str(_as_list(value)[0] if _as_list(value) else "").lower() == "false":
                return True
    return False


# ----------------------------------------------------------------------------- rendering


def render_table(report: AuditReport, console: Any) -> None:
    from rich.table import Table

    kinds = Counter(r.kind for r in report.resources)
    console.print(
        f"[bold]llmcloud audit[/] [cyan]{report.project} / {report.stack}[/] ({report.region}): "
        + (", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no resources")
        + " checked",
        highlight=False,
    )
    if report.findings:
        table = Table(title="Drift", header_style="bold", show_lines=False)
        for column in ("policy", "severity", "resource", "finding"):
            table.add_column(column, overflow="fold")
        for f in report.findings:
            style = (
                "dim" if f.waived else ("red" if f.severity in ("high", "critical") else "yellow")
            )
            message = f"{f.message} (waived: {f.waiver_reason})" if f.waived else f.message
            table.add_row(
                f.rule, f.severity, f"{f.resource.kind} {f.resource.name}", message, style=style
            )
        console.print(table)
    for note in report.notes:
        console.print(f"[dim]{note}[/]")
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
    levels = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}
    findings = [
        sarif.Finding(
            rule=f.rule,
            level=levels.get(f.severity, "warning"),
            text=f.message,
            name=f"{f.resource.kind} {f.resource.name}",
            fully_qualified_name=f.resource.arn,
            properties={"severity": f.severity},
            suppression=f.waiver_reason or "" if f.waived else None,
        )
        for f in report.findings
    ]
    return sarif.document(
        automation_id=f"llmcloud-audit/{report.stack}/",
        location=location,
        findings=findings,
        rules=rules,
        version=sarif.llmcloud_version(),
    )
