"""The S3 data lake: datasets, checkpoints and models buckets, and the logs bucket that
receives their server access logs (and CloudTrail's log files).

Each concern is its own pulumi-aws v7 resource (`Bucket` plus encryption, public-access
block, ownership, versioning, policy, logging, lifecycle), so every one shows in the plan
and the policy pack can check it.

Data buckets are SSE-KMS with the platform's data key and S3 Bucket Keys (one KMS call per
bucket-key period instead of one per object: cheaper and no KMS throttling when a training
job reads thousands of shards). The logs bucket is SSE-S3 (AES256): S3 server access log
delivery does not support SSE-KMS on the destination bucket. CloudTrail still encrypts its
own log files with the logs key (SSE-KMS per object), which a bucket whose default is SSE-S3
accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.config import ConfigError, StorageConfig
from infra.context import Context, policy_document

DATA_PURPOSES = ("datasets", "checkpoints", "models")
PURPOSES = (*DATA_PURPOSES, "logs")

# Where in the logs bucket each data bucket's access logs land: `s3-access/<purpose>/`.
ACCESS_LOG_PREFIX = "s3-access"
# A deleted or overwritten log object stays recoverable this long (the logs bucket is
# versioned so that nobody can quietly rewrite an audit trail).
LOG_NONCURRENT_DAYS = 30

# S3 bucket names: 3-63 lowercase letters, digits and hyphens; our names are
# `<prefix>-<purpose>-<12-digit account id>`, so the prefix must be a valid head.
_PREFIX_RULE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_RESERVED_HEADS = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_NAME_MAX = 63
_ACCOUNT_ID_LEN = 12


@dataclass(frozen=True)
class BucketRef:
    """A bucket as its users see it: its name (for s3:// URIs) and ARN (for IAM)."""

    name: pulumi.Input[str]
    arn: pulumi.Input[str]

    @classmethod
    def of(cls, bucket: Any) -> BucketRef:
        """From an `aws.s3.Bucket` (or anything with `.bucket` and `.arn`)."""
        return cls(name=bucket.bucket, arn=bucket.arn)


def check_bucket_prefix(prefix: str) -> None:
    """Raise ConfigError if `<prefix>-<purpose>-<account id>` cannot be an S3 bucket name."""
    longest = len(prefix) + len("-checkpoints-") + _ACCOUNT_ID_LEN
    if not _PREFIX_RULE.match(prefix) or prefix.startswith(_RESERVED_HEADS):
        problem = (
            "lowercase letters, digits and hyphens only, starting and ending with a letter or "
            "digit, not starting with " + ", ".join(_RESERVED_HEADS)
        )
    elif longest > _BUCKET_NAME_MAX:
        problem = f"too long: bucket names would be {longest} characters (S3 allows 63)"
    else:
        return
    raise ConfigError(
        f"llmcloud:name_prefix (or the stack name when it is unset) = {prefix!r}: bucket "
        f"names are <prefix>-<purpose>-<account id>, so the prefix must be {problem}"
    )


@dataclass(frozen=True)
class DataLakeArgs:
    config: StorageConfig
    data_key_arn: pulumi.Input[str]
    # CloudTrail may write to the logs bucket (the Trail itself is the security component's).
    cloudtrail: bool


class DataLake(pulumi.ComponentResource):
    """Buckets `datasets`, `checkpoints`, `models` (SSE-KMS with the data key) and `logs`."""

    datasets: aws.s3.Bucket
    checkpoints: aws.s3.Bucket
    models: aws.s3.Bucket
    logs: aws.s3.Bucket
    bucket_arns: dict[str, pulumi.Output[str]]
    bucket_names: dict[str, pulumi.Output[str]]
    logs_bucket_policy: aws.s3.BucketPolicy
    trail_arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: DataLakeArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ):
        check_bucket_prefix(ctx.prefix)
        super().__init__("llmcloud:storage:DataLake", name, None, opts)
        self._ctx = ctx
        self._args = args
        cfg = args.config
        # The Trail the security component creates; its ARN is known before it exists, so
        # the bucket policy can name it (aws:SourceArn) without a dependency cycle.
        self.trail_arn = ctx.arn("cloudtrail", f"trail/{ctx.prefix}-trail")

        buckets = {purpose: self._bucket(purpose) for purpose in PURPOSES}
        self.datasets = buckets["datasets"]
        self.checkpoints = buckets["checkpoints"]
        self.models = buckets["models"]
        self.logs = buckets["logs"]
        self.bucket_arns = {p: b.arn for p, b in buckets.items()}
        self.bucket_names = {p: b.bucket for p, b in buckets.items()}

        blocks = {p: self._public_access_block(p, b) for p, b in buckets.items()}
        for purpose, bucket in buckets.items():
            self._ownership(purpose, bucket)
            self._encryption(purpose, bucket)
            self._versioning(purpose, bucket)
            self._lifecycle(purpose, bucket, cfg)

        self.logs_bucket_policy = aws.s3.BucketPolicy(
            "logs-policy",
            bucket=self.logs.id,
            policy=policy_document(self._logs_statements()),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[blocks["logs"]]),
        )
        for purpose in DATA_PURPOSES:
            bucket = buckets[purpose]
            aws.s3.BucketPolicy(
                f"{purpose}-policy",
                bucket=bucket.id,
                policy=policy_document(self._data_statements(bucket)),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[blocks[purpose]]),
            )
            aws.s3.BucketLogging(
                f"{purpose}-logging",
                bucket=bucket.id,
                target_bucket=self.logs.id,
                target_prefix=f"{ACCESS_LOG_PREFIX}/{purpose}/",
                # Date-partitioned keys, so Athena can prune by day.
                target_object_key_format=aws.s3.BucketLoggingTargetObjectKeyFormatArgs(
                    partitioned_prefix=aws.s3.BucketLoggingTargetObjectKeyFormatPartitionedPrefixArgs(
                        partition_date_source="EventTime"
                    )
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.logs_bucket_policy]),
            )

        self.register_outputs(
            {
                **{f"{p}_bucket": b.bucket for p, b in buckets.items()},
                **{f"{p}_bucket_arn": b.arn for p, b in buckets.items()},
            }
        )

    # ------------------------------------------------------------------ per bucket

    def _child(self) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self)

    def _bucket(self, purpose: str) -> aws.s3.Bucket:
        ctx = self._ctx
        name = f"{ctx.prefix}-{purpose}-{ctx.account_id}"
        return aws.s3.Bucket(
            f"{purpose}-bucket",
            bucket=name,
            force_destroy=self._args.config.force_destroy,
            tags={"Name": f"{ctx.prefix}-{purpose}", "llmcloud:bucket-purpose": purpose},
            opts=self._child(),
        )

    def _public_access_block(
        self, purpose: str, bucket: aws.s3.Bucket
    ) -> aws.s3.BucketPublicAccessBlock:
        return aws.s3.BucketPublicAccessBlock(
            f"{purpose}-public-access-block",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=self._child(),
        )

    def _ownership(self, purpose: str, bucket: aws.s3.Bucket) -> None:
        # ACLs off: the bucket owner owns every object, access is by policy only.
        aws.s3.BucketOwnershipControls(
            f"{purpose}-ownership",
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=self._child(),
        )

    def _encryption(self, purpose: str, bucket: aws.s3.Bucket) -> None:
        if purpose == "logs":
            # Server access log delivery cannot write to an SSE-KMS destination: SSE-S3.
            default = aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                sse_algorithm="AES256"
            )
            rule = aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=default
            )
        else:
            default = aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                sse_algorithm="aws:kms", kms_master_key_id=self._args.data_key_arn
            )
            rule = aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=default, bucket_key_enabled=True
            )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{purpose}-encryption", bucket=bucket.id, rules=[rule], opts=self._child()
        )

    def _versioning(self, purpose: str, bucket: aws.s3.Bucket) -> None:
        # Every bucket is versioned: models and datasets so a bad upload can be rolled back,
        # checkpoints so a resumed job never loses the last good one (old versions expire),
        # logs so the audit trail cannot be silently rewritten.
        aws.s3.BucketVersioning(
            f"{purpose}-versioning",
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(
                status="Enabled"
            ),
            opts=self._child(),
        )

    def _lifecycle(self, purpose: str, bucket: aws.s3.Bucket, cfg: StorageConfig) -> None:
        everything = aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix="")
        rules = [
            aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="abort-incomplete-multipart-uploads",
                status="Enabled",
                filter=everything,
                abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                    days_after_initiation=cfg.abort_multipart_days
                ),
            )
        ]
        if purpose == "checkpoints":
            rules.append(
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-noncurrent-checkpoints",
                    status="Enabled",
                    filter=everything,
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=cfg.checkpoint_noncurrent_days
                    ),
                    # Delete markers left alone once their versions are gone.
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(
                        expired_object_delete_marker=True
                    ),
                )
            )
        if purpose in DATA_PURPOSES and cfg.intelligent_tiering_days is not None:
            rules.append(
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="intelligent-tiering",
                    status="Enabled",
                    filter=everything,
                    transitions=[
                        aws.s3.BucketLifecycleConfigurationRuleTransitionArgs(
                            days=cfg.intelligent_tiering_days,
                            storage_class="INTELLIGENT_TIERING",
                        )
                    ],
                )
            )
        if purpose == "logs":
            rules.append(
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-logs",
                    status="Enabled",
                    filter=everything,
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(
                        days=cfg.access_log_retention_days
                    ),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=LOG_NONCURRENT_DAYS
                    ),
                )
            )
        aws.s3.BucketLifecycleConfiguration(
            f"{purpose}-lifecycle", bucket=bucket.id, rules=rules, opts=self._child()
        )

    # ------------------------------------------------------------------ policies

    @staticmethod
    def _deny_insecure_transport(bucket_arn: pulumi.Input[str]) -> dict:
        return {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket_arn, pulumi.Output.concat(bucket_arn, "/*")],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }

    def _data_statements(self, bucket: aws.s3.Bucket) -> list[dict]:
        """TLS only, and no object may be written under another encryption than our key.

        A PUT without encryption headers gets the bucket default (SSE-KMS, our data key), so
        nothing can be stored unencrypted; what must be refused is a request that *asks* for
        something else. Requiring the headers on every PUT would break FSx auto-export and
        multipart UploadPart calls, which never send them and rely on the bucket default.
        """
        objects = pulumi.Output.concat(bucket.arn, "/*")
        key_arn = self._args.data_key_arn
        sse = "s3:x-amz-server-side-encryption"
        sse_key = "s3:x-amz-server-side-encryption-aws-kms-key-id"
        return [
            self._deny_insecure_transport(bucket.arn),
            {
                "Sid": "DenyEncryptionOtherThanKms",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": objects,
                "Condition": {"StringNotEquals": {sse: "aws:kms"}, "Null": {sse: "false"}},
            },
            {
                "Sid": "DenyOtherKmsKeys",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": objects,
                "Condition": {"StringNotEquals": {sse_key: key_arn}, "Null": {sse_key: "false"}},
            },
            {
                # `aws:kms` without a key id means the AWS managed aws/s3 key, not ours.
                "Sid": "DenyAwsManagedKey",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": objects,
                "Condition": {"StringEquals": {sse: "aws:kms"}, "Null": {sse_key: "true"}},
            },
        ]

    def _logs_statements(self) -> list[dict]:
        ctx = self._ctx
        logs = self.logs
        statements = [
            self._deny_insecure_transport(logs.arn),
            {
                "Sid": "S3ServerAccessLogDelivery",
                "Effect": "Allow",
                "Principal": {"Service": "logging.s3.amazonaws.com"},
                "Action": "s3:PutObject",
                "Resource": pulumi.Output.concat(logs.arn, f"/{ACCESS_LOG_PREFIX}/*"),
                "Condition": {
                    "ArnLike": {
                        "aws:SourceArn": [getattr(self, purpose).arn for purpose in DATA_PURPOSES]
                    },
                    "StringEquals": {"aws:SourceAccount": ctx.account_id},
                },
            },
        ]
        if self._args.cloudtrail:
            statements += [
                {
                    "Sid": "CloudTrailAclCheck",
                    "Effect": "Allow",
                    "Principal": {"Service": "cloudtrail.amazonaws.com"},
                    "Action": "s3:GetBucketAcl",
                    "Resource": logs.arn,
                    "Condition": {"StringEquals": {"aws:SourceArn": self.trail_arn}},
                },
                {
                    "Sid": "CloudTrailWrite",
                    "Effect": "Allow",
                    "Principal": {"Service": "cloudtrail.amazonaws.com"},
                    "Action": "s3:PutObject",
                    "Resource": pulumi.Output.concat(logs.arn, "/AWSLogs/", ctx.account_id, "/*"),
                    "Condition": {
                        "StringEquals": {
                            "s3:x-amz-acl": "bucket-owner-full-control",
                            "aws:SourceArn": self.trail_arn,
                        }
                    },
                },
            ]
        return statements
