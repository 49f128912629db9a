"""S3 rules. pulumi-aws v7 declares a bucket's encryption, public access block, policy,
versioning and logging as separate resources, so each rule is a stack policy that finds a
bucket's companions (the deprecated inline `Bucket` arguments are honoured too).

Buckets that receive S3 server access logs are held to what log delivery allows: S3 cannot
deliver access logs into an SSE-KMS bucket (SSE-S3 is accepted there), and a log bucket is
neither required to log itself nor to be versioned.
"""

from __future__ import annotations

from typing import Any

from policies.rules.base import (
    PolicySettings,
    Reporter,
    RuleInfo,
    RuleStackPolicy,
    StackView,
    as_list,
    cis_aws,
    fsbp,
    get,
    is_unknown,
    json_document,
    statements,
    truthy,
)

BUCKET_TYPES = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
SSE_TYPES = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
)
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
ACCOUNT_PUBLIC_ACCESS_BLOCK = "aws:s3/accountPublicAccessBlock:AccountPublicAccessBlock"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
VERSIONING_TYPES = (
    "aws:s3/bucketVersioning:BucketVersioning",
    "aws:s3/bucketVersioningV2:BucketVersioningV2",
)
LOGGING_TYPES = ("aws:s3/bucketLogging:BucketLogging", "aws:s3/bucketLoggingV2:BucketLoggingV2")
BLOCK_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
KMS_ALGORITHMS = ("aws:kms", "aws:kms:dsse")

KMS_ENCRYPTION = RuleInfo(
    id="s3-bucket-kms-encryption",
    title="S3 buckets use SSE-KMS with a customer managed key",
    description="Every S3 bucket encrypts objects by default with SSE-KMS under a customer managed "
    "KMS key (access-log destination buckets: SSE-S3, the only encryption log delivery accepts).",
    severity="high",
    remediation="Add an aws.s3.BucketServerSideEncryptionConfiguration for the bucket with "
    "sse_algorithm='aws:kms' and kms_master_key_id=<the platform's data key ARN> "
    "(bucket_key_enabled=True keeps KMS costs down).",
    controls=(fsbp("S3.17"),),
    kind="stack",
)
PUBLIC_ACCESS = RuleInfo(
    id="s3-public-access-block",
    title="S3 buckets block all public access",
    description="Every S3 bucket has a public access block with all four settings on (or the "
    "account-level block is declared in the stack).",
    severity="critical",
    remediation="Add an aws.s3.BucketPublicAccessBlock for the bucket with block_public_acls, "
    "block_public_policy, ignore_public_acls and restrict_public_buckets all True.",
    controls=(cis_aws("2.1.4"), fsbp("S3.8")),
    kind="stack",
)
TLS_ONLY = RuleInfo(
    id="s3-tls-only",
    title="S3 bucket policies deny requests without TLS",
    description="Every S3 bucket has a bucket policy that denies s3:* when aws:SecureTransport is "
    "false.",
    severity="high",
    remediation="Add a statement to the bucket's aws.s3.BucketPolicy: Effect Deny, Principal *, "
    "Action s3:*, Resource [bucket ARN, bucket ARN/*], Condition "
    '{"Bool": {"aws:SecureTransport": "false"}}.',
    controls=(cis_aws("2.1.1"), fsbp("S3.5")),
    kind="stack",
)
VERSIONING = RuleInfo(
    id="s3-versioning",
    title="S3 data buckets are versioned",
    description="Every S3 bucket that holds data (all but access-log destinations) has "
    "versioning enabled, so an overwrite or delete can be rolled back.",
    severity="medium",
    remediation="Add an aws.s3.BucketVersioning for the bucket with "
    "versioning_configuration.status='Enabled' (expire noncurrent versions with a lifecycle "
    "rule to bound the cost).",
    controls=(fsbp("S3.14"),),
    kind="stack",
)
ACCESS_LOGGING = RuleInfo(
    id="s3-access-logging",
    title="S3 data buckets log server access",
    description="Every S3 bucket that holds data (all but access-log destinations) sends server "
    "access logs to a log bucket.",
    severity="medium",
    remediation="Add an aws.s3.BucketLogging for the bucket with target_bucket=<the log bucket> "
    "and a target_prefix per bucket.",
    controls=(fsbp("S3.9"),),
    kind="stack",
)


class Buckets:
    """The buckets of a stack and their companion resources."""

    def __init__(self, view: StackView) -> None:
        self.view = view
        self.buckets = list(view.of_type(*BUCKET_TYPES))
        self._children: dict[tuple[str, tuple[str, ...]], dict[str, list[Any]]] = {}
        self.log_targets = self._log_targets()

    def props(self, resource: Any) -> dict[str, Any]:
        return self.view.props[resource.urn]

    def children(self, types: tuple[str, ...], prop: str = "bucket") -> dict[str, list[Any]]:
        """bucket urn -> companion resources of `types` whose `prop` names that bucket."""
        key = (prop, types)
        if key not in self._children:
            out: dict[str, list[Any]] = {b.urn: [] for b in self.buckets}
            for child in self.view.of_type(*types):
                for bucket in self.view.linked(child, prop, self.buckets, "bucket"):
                    out[bucket.urn].append(child)
            self._children[key] = out
        return self._children[key]

    def _log_targets(self) -> set[str]:
        targets = {
            bucket_urn
            for bucket_urn, loggings in self.children(LOGGING_TYPES, "targetBucket").items()
            if loggings
        }
        names = {
            get(self.props(b), "logging", "targetBucket")
            for b in self.buckets
            if get(self.props(b), "logging", "targetBucket")
        }
        for b in self.buckets:
            for logging in as_list(self.props(b).get("loggings")):
                if isinstance(logging, dict) and logging.get("targetBucket"):
                    names.add(logging["targetBucket"])
        for b in self.buckets:
            props = self.props(b)
            if props.get("bucket") in names or props.get("id") in names:
                targets.add(b.urn)
        return targets

    def is_log_target(self, bucket: Any) -> bool:
        return bucket.urn in self.log_targets


def _sse_defaults(buckets: Buckets, bucket: Any) -> list[dict[str, Any]]:
    """Every applyServerSideEncryptionByDefault block that applies to the bucket."""
    out: list[dict[str, Any]] = []
    for config in buckets.children(SSE_TYPES)[bucket.urn]:
        for rule in as_list(buckets.props(config).get("rules")):
            default = get(rule, "applyServerSideEncryptionByDefault")
            if isinstance(default, dict):
                out.append(default)
    props = buckets.props(bucket)
    inline = get(
        props, "serverSideEncryptionConfiguration", "rule", "applyServerSideEncryptionByDefault"
    )
    if isinstance(inline, dict):
        out.append(inline)
    for config in as_list(props.get("serverSideEncryptionConfigurations")):
        for rule in as_list(get(config, "rules")):
            default = get(rule, "applyServerSideEncryptionByDefault")
            if isinstance(default, dict):
                out.append(default)
    return out


def _customer_key(key_id: Any) -> bool:
    if key_id is None or key_id == "":
        return False
    if is_unknown(key_id):
        return True  # an Output of a key declared in the program: known after create
    return "alias/aws/" not in str(key_id)


def check_kms_encryption(args: Any, report: Reporter, settings: PolicySettings) -> None:
    buckets = Buckets(StackView.of(args))
    for bucket in buckets.buckets:
        defaults = _sse_defaults(buckets, bucket)
        name = bucket.name
        if not defaults:
            report(
                f"bucket {name!r} has no default encryption configuration: objects are "
                "encrypted with an S3-owned key only",
                bucket.urn,
            )
            continue
        for default in defaults:
            algorithm = default.get("sseAlgorithm")
            if is_unknown(algorithm):
                continue
            if buckets.is_log_target(bucket) and algorithm == "AES256":
                continue
            if algorithm not in KMS_ALGORITHMS:
                report(
                    f"bucket {name!r} encrypts with {algorithm!r}, not SSE-KMS under a customer "
                    "managed key",
                    bucket.urn,
                )
            elif not _customer_key(default.get("kmsMasterKeyId")):
                report(
                    f"bucket {name!r} uses SSE-KMS with the AWS managed key (no "
                    "kms_master_key_id, or alias/aws/s3): its use cannot be restricted by a key "
                    "policy",
                    bucket.urn,
                )


def check_public_access_block(args: Any, report: Reporter, settings: PolicySettings) -> None:
    view = StackView.of(args)
    for account_block in view.of_type(ACCOUNT_PUBLIC_ACCESS_BLOCK):
        props = view.props[account_block.urn]
        if all(truthy(props.get(flag)) for flag in BLOCK_FLAGS):
            return
    buckets = Buckets(view)
    blocks = buckets.children((PUBLIC_ACCESS_BLOCK,))
    for bucket in buckets.buckets:
        found = blocks[bucket.urn]
        if not found:
            report(f"bucket {bucket.name!r} has no public access block", bucket.urn)
            continue
        props = buckets.props(found[0])
        off = [flag for flag in BLOCK_FLAGS if not truthy(props.get(flag))]
        if off:
            report(
                f"bucket {bucket.name!r}: public access block leaves {', '.join(off)} off",
                bucket.urn,
            )


def _denies_insecure_transport(statement: dict[str, Any]) -> bool:
    if statement.get("Effect") != "Deny":
        return False
    principal = statement.get("Principal")
    if principal != "*" and not (
        isinstance(principal, dict) and "*" in as_list(principal.get("AWS"))
    ):
        return False
    actions = as_list(statement.get("Action"))
    if not any(a in ("s3:*", "*") for a in actions):
        return False
    for operator, conditions in (statement.get("Condition") or {}).items():
        if operator not in ("Bool", "BoolIfExists") or not isinstance(conditions, dict):
            continue
        for key, value in conditions.items():
            if key.lower() == "aws:securetransport" and any(
                str(v).lower() == "false" for v in as_list(value)
            ):
                return True
    return False


def check_tls_only(args: Any, report: Reporter, settings: PolicySettings) -> None:
    buckets = Buckets(StackView.of(args))
    policies = buckets.children((BUCKET_POLICY,))
    for bucket in buckets.buckets:
        documents = [
            json_document(buckets.props(p).get("policy"), p.name, "policy")
            for p in policies[bucket.urn]
        ]
        inline = buckets.props(bucket).get("policy")
        if inline:
            documents.append(json_document(inline, bucket.name, "policy"))
        if not any(_denies_insecure_transport(s) for d in documents for s in statements(d)):
            report(
                f"bucket {bucket.name!r} has no policy statement denying requests without TLS "
                "(aws:SecureTransport = false)",
                bucket.urn,
            )


def _versioned(buckets: Buckets, bucket: Any) -> bool | None:
    for versioning in buckets.children(VERSIONING_TYPES)[bucket.urn]:
        status = get(buckets.props(versioning), "versioningConfiguration", "status")
        if is_unknown(status) or status == "Enabled":
            return True
    props = buckets.props(bucket)
    if truthy(get(props, "versioning", "enabled", default=False)):
        return True
    return any(truthy(get(v, "enabled", default=False)) for v in as_list(props.get("versionings")))


def check_versioning(args: Any, report: Reporter, settings: PolicySettings) -> None:
    buckets = Buckets(StackView.of(args))
    for bucket in buckets.buckets:
        if buckets.is_log_target(bucket):
            continue
        if not _versioned(buckets, bucket):
            report(
                f"bucket {bucket.name!r} is not versioned: an overwrite or delete is final",
                bucket.urn,
            )


def check_access_logging(args: Any, report: Reporter, settings: PolicySettings) -> None:
    buckets = Buckets(StackView.of(args))
    loggings = buckets.children(LOGGING_TYPES)
    for bucket in buckets.buckets:
        if buckets.is_log_target(bucket):
            continue
        props = buckets.props(bucket)
        logged = any(buckets.props(lg).get("targetBucket") for lg in loggings[bucket.urn])
        logged = logged or bool(get(props, "logging", "targetBucket"))
        logged = logged or any(get(lg, "targetBucket") for lg in as_list(props.get("loggings")))
        if not logged:
            report(f"bucket {bucket.name!r} has no server access logging", bucket.urn)


def policies(settings: PolicySettings) -> list[Any]:
    on_buckets: dict[str, Any] = {"resource_types": BUCKET_TYPES}
    return [
        RuleStackPolicy(KMS_ENCRYPTION, settings, check_kms_encryption, **on_buckets),
        RuleStackPolicy(PUBLIC_ACCESS, settings, check_public_access_block, **on_buckets),
        RuleStackPolicy(TLS_ONLY, settings, check_tls_only, **on_buckets),
        RuleStackPolicy(VERSIONING, settings, check_versioning, **on_buckets),
        RuleStackPolicy(ACCESS_LOGGING, settings, check_access_logging, **on_buckets),
    ]
