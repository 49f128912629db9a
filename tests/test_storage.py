"""The S3 data lake as each stack plans it: every bucket encrypted with the right key,
private, TLS-only, versioned, logged to the logs bucket, with lifecycle rules from config."""

from __future__ import annotations

import json

import pytest

from infra.config import ConfigError
from infra.plan.engine import Plan, PlanError, Resource
from infra.storage.lake import DATA_PURPOSES, PURPOSES, check_bucket_prefix

ACCOUNT = "123456789012"


def bucket(plan: Plan, purpose: str) -> Resource:
    return next(r for r in plan.by_type("aws:s3/bucket:Bucket") if r.name == f"{purpose}-bucket")


def bucket_name(plan: Plan, purpose: str) -> str:
    return bucket(plan, purpose).outputs["bucket"]


def attached(plan: Plan, token: str, purpose: str) -> Resource:
    """The one resource of `token` configuring the bucket of `purpose`."""
    name = bucket_name(plan, purpose)
    (found,) = [r for r in plan.by_type(token) if r.inputs["bucket"] == name]
    return found


def policy(plan: Plan, purpose: str) -> dict[str, dict]:
    doc = json.loads(attached(plan, "aws:s3/bucketPolicy:BucketPolicy", purpose).inputs["policy"])
    return {s["Sid"]: s for s in doc["Statement"]}


def data_key_arn(plan: Plan) -> str:
    return next(k for k in plan.by_type("aws:kms/key:Key") if k.name == "data-key").outputs["arn"]


def test_buckets_are_named_prefix_purpose_account_and_exported(prod_plan):
    names = {p: bucket_name(prod_plan, p) for p in PURPOSES}
    assert names == {p: f"llm-prod-{p}-{ACCOUNT}" for p in PURPOSES}
    assert prod_plan.outputs["bucket_names"] == names
    (component,) = prod_plan.by_type("llmcloud:storage:DataLake")
    assert all(bucket(prod_plan, p).parent == component.urn for p in PURPOSES)


@pytest.mark.parametrize("purpose", DATA_PURPOSES)
def test_data_buckets_use_sse_kms_with_the_data_key_and_bucket_keys(prod_plan, purpose):
    enc = attached(
        prod_plan,
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        purpose,
    )
    (rule,) = enc.inputs["rules"]
    default = rule["applyServerSideEncryptionByDefault"]
    assert default["sseAlgorithm"] == "aws:kms"
    assert default["kmsMasterKeyId"] == data_key_arn(prod_plan)
    assert rule["bucketKeyEnabled"] is True


def test_logs_bucket_uses_sse_s3_because_access_log_delivery_cannot_use_kms(prod_plan):
    enc = attached(
        prod_plan,
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "logs",
    )
    (rule,) = enc.inputs["rules"]
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}


@pytest.mark.parametrize("purpose", PURPOSES)
def test_every_bucket_blocks_public_access_and_disables_acls(prod_plan, purpose):
    block = attached(prod_plan, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", purpose)
    for flag in (
        "blockPublicAcls",
        "blockPublicPolicy",
        "ignorePublicAcls",
        "restrictPublicBuckets",
    ):
        assert block.inputs[flag] is True, flag
    ownership = attached(
        prod_plan, "aws:s3/bucketOwnershipControls:BucketOwnershipControls", purpose
    )
    assert ownership.inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}


@pytest.mark.parametrize("purpose", PURPOSES)
def test_every_bucket_policy_denies_requests_without_tls(prod_plan, purpose):
    deny = policy(prod_plan, purpose)["DenyInsecureTransport"]
    arn = bucket(prod_plan, purpose).outputs["arn"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert deny["Resource"] == [arn, f"{arn}/*"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


@pytest.mark.parametrize("purpose", DATA_PURPOSES)
def test_data_bucket_policies_deny_puts_that_ask_for_another_encryption_or_key(prod_plan, purpose):
    statements = policy(prod_plan, purpose)
    objects = bucket(prod_plan, purpose).outputs["arn"] + "/*"
    sse = "s3:x-amz-server-side-encryption"
    sse_key = "s3:x-amz-server-side-encryption-aws-kms-key-id"
    other = statements["DenyEncryptionOtherThanKms"]
    assert (other["Effect"], other["Action"], other["Resource"]) == (
        "Deny",
        "s3:PutObject",
        objects,
    )
    assert other["Condition"]["StringNotEquals"] == {sse: "aws:kms"}
    wrong_key = statements["DenyOtherKmsKeys"]
    assert wrong_key["Effect"] == "Deny" and wrong_key["Action"] == "s3:PutObject"
    assert wrong_key["Condition"]["StringNotEquals"] == {sse_key: data_key_arn(prod_plan)}
    managed = statements["DenyAwsManagedKey"]
    assert managed["Condition"] == {
        "StringEquals": {sse: "aws:kms"},
        "Null": {sse_key: "true"},
    }
    # A put without headers gets the bucket default (our key): FSx export relies on it.
    assert other["Condition"]["Null"] == {sse: "false"}


@pytest.mark.parametrize("purpose", PURPOSES)
def test_every_bucket_is_versioned(prod_plan, purpose):
    versioning = attached(prod_plan, "aws:s3/bucketVersioning:BucketVersioning", purpose)
    assert versioning.inputs["versioningConfiguration"]["status"] == "Enabled"


@pytest.mark.parametrize("purpose", DATA_PURPOSES)
def test_data_buckets_log_access_to_the_logs_bucket_under_their_own_prefix(prod_plan, purpose):
    logging = attached(prod_plan, "aws:s3/bucketLogging:BucketLogging", purpose)
    assert logging.inputs["targetBucket"] == bucket_name(prod_plan, "logs")
    assert logging.inputs["targetPrefix"] == f"s3-access/{purpose}/"


def test_the_logs_bucket_does_not_log_to_itself(prod_plan):
    targets = [r.inputs["bucket"] for r in prod_plan.by_type("aws:s3/bucketLogging:BucketLogging")]
    assert bucket_name(prod_plan, "logs") not in targets
    assert len(targets) == len(DATA_PURPOSES)


def test_logs_bucket_lets_only_s3_log_delivery_for_our_buckets_write_access_logs(prod_plan):
    delivery = policy(prod_plan, "logs")["S3ServerAccessLogDelivery"]
    assert delivery["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert delivery["Action"] == "s3:PutObject"
    assert delivery["Resource"] == bucket(prod_plan, "logs").outputs["arn"] + "/s3-access/*"
    assert sorted(delivery["Condition"]["ArnLike"]["aws:SourceArn"]) == sorted(
        bucket(prod_plan, p).outputs["arn"] for p in DATA_PURPOSES
    )
    assert delivery["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT}


def test_logs_bucket_admits_our_trail_only_when_cloudtrail_is_on(prod_plan, dev_plan):
    statements = policy(prod_plan, "logs")
    trail = f"arn:aws:cloudtrail:us-east-2:{ACCOUNT}:trail/llm-prod-trail"
    acl, write = statements["CloudTrailAclCheck"], statements["CloudTrailWrite"]
    assert acl["Action"] == "s3:GetBucketAcl"
    assert acl["Condition"] == {"StringEquals": {"aws:SourceArn": trail}}
    assert write["Principal"] == {"Service": "cloudtrail.amazonaws.com"}
    logs_arn = bucket(prod_plan, "logs").outputs["arn"]
    assert write["Resource"] == f"{logs_arn}/AWSLogs/{ACCOUNT}/*"
    assert write["Condition"]["StringEquals"] == {
        "s3:x-amz-acl": "bucket-owner-full-control",
        "aws:SourceArn": trail,
    }
    # dev runs without CloudTrail: nothing for it in the policy.
    assert not any(sid.startswith("CloudTrail") for sid in policy(dev_plan, "logs"))


def lifecycle_rules(plan: Plan, purpose: str) -> dict[str, dict]:
    lifecycle = attached(
        plan, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", purpose
    )
    return {r["id"]: r for r in lifecycle.inputs["rules"]}


@pytest.mark.parametrize("purpose", PURPOSES)
def test_every_bucket_aborts_incomplete_multipart_uploads(prod_plan, purpose):
    rule = lifecycle_rules(prod_plan, purpose)["abort-incomplete-multipart-uploads"]
    assert rule["status"] == "Enabled"
    assert rule["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 7}


def test_old_checkpoint_versions_expire_after_the_configured_days(prod_plan, dev_plan):
    for plan, days in ((prod_plan, 30), (dev_plan, 7)):
        rule = lifecycle_rules(plan, "checkpoints")["expire-noncurrent-checkpoints"]
        assert rule["noncurrentVersionExpiration"] == {"noncurrentDays": days}
    # Model and dataset versions are kept: a rollback needs them.
    for purpose in ("models", "datasets"):
        assert "expire-noncurrent-checkpoints" not in lifecycle_rules(prod_plan, purpose)


def test_intelligent_tiering_only_where_configured(prod_plan, dev_plan):
    for purpose in DATA_PURPOSES:
        rule = lifecycle_rules(prod_plan, purpose)["intelligent-tiering"]
        assert rule["transitions"] == [{"days": 30, "storageClass": "INTELLIGENT_TIERING"}]
        assert "intelligent-tiering" not in lifecycle_rules(dev_plan, purpose)
    assert "intelligent-tiering" not in lifecycle_rules(prod_plan, "logs")


def test_logs_expire_after_the_access_log_retention(prod_plan):
    rule = lifecycle_rules(prod_plan, "logs")["expire-logs"]
    assert rule["expiration"] == {"days": 365}
    assert rule["noncurrentVersionExpiration"]["noncurrentDays"] > 0


def test_force_destroy_only_where_the_stack_asks_for_it(prod_plan, dev_plan):
    assert all(bucket(dev_plan, p).inputs["forceDestroy"] is True for p in PURPOSES)
    assert all(bucket(prod_plan, p).inputs["forceDestroy"] is False for p in PURPOSES)


@pytest.mark.parametrize("prefix", ["LLM-Prod", "llm_prod", "-llm", "llm-", "xn--llm", "x" * 39])
def test_a_prefix_that_cannot_head_a_bucket_name_is_a_config_error(prefix):
    with pytest.raises(ConfigError) as info:
        check_bucket_prefix(prefix)
    assert "llmcloud:name_prefix" in str(info.value) and repr(prefix) in str(info.value)


def test_the_plan_refuses_a_bad_bucket_prefix_before_declaring_buckets(plan_program):
    program = """
        from infra.config import config_from_pulumi
        from infra.context import make_context
        from infra.storage.lake import DataLake, DataLakeArgs

        config = config_from_pulumi()
        ctx = make_context(config)
        DataLake("storage", DataLakeArgs(config.storage, "arn:key", False), ctx, ctx.opts())
    """
    config = {
        "llmcloud:environment": "dev",
        "llmcloud:name_prefix": "ML_Team",
        "llmcloud:network": {"availability_zones": ["us-east-1a", "us-east-1b"]},
    }
    with pytest.raises(PlanError, match=r"llmcloud:name_prefix .*'ML_Team'"):
        plan_program(program, config)
