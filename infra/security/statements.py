"""IAM permission statements for the platform's workloads, with exact ARNs.

Pure functions: they return lists of IAM statements (dicts whose values may be Outputs) for
`PodRole(..., PodRoleArgs(statements=...))` or `DataStagerRole`; nothing is declared here.
Every statement names an exact bucket ARN, an exact object prefix and an exact key ARN, and
bucket listing is limited to the prefix by an `s3:prefix` condition.

    from infra.security.statements import training_statements
    PodRole("trainer-gpt-8b", PodRoleArgs(
        cluster_name=cluster.name, namespace="training", service_account="gpt-8b",
        statements=training_statements(
            lake.datasets.arn, "datasets/",
            lake.checkpoints.arn, "checkpoints/gpt-8b/",
            keys.data.arn, region=ctx.region)), ctx, opts)

Prefixes are S3 key prefixes without a leading `/`, ending with `/` ("datasets/",
"checkpoints/gpt-8b/"), or "" for the whole bucket. `region`, where given, adds a
`kms:ViaService` condition so the data key is usable only through S3 in that region.

`statement_problems` is the rule PodRole's guard and the plan's tests apply to every policy:
no `*` actions and no write actions on `*` resources. Which actions count as writes is
`infra.security.actions` (AWS's access levels), the same classifier the policy pack's IAM
rules use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi

# The one read-only classifier, re-exported for the callers of the statement builders.
from infra.security.actions import allowed_on_any_resource
from infra.security.actions import is_read_only as is_read_only

S3_READ_OBJECT_ACTIONS = ["s3:GetObject", "s3:GetObjectVersion"]
S3_WRITE_OBJECT_ACTIONS = ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
S3_DELETE_OBJECT_ACTIONS = ["s3:DeleteObject"]
# SSE-KMS: reading decrypts the object's data key; writing asks for a new one; completing a
# multipart upload decrypts it again.
KMS_READ_ACTIONS = ["kms:Decrypt"]
KMS_WRITE_ACTIONS = ["kms:Decrypt", "kms:GenerateDataKey"]


def check_prefix(prefix: str) -> str:
    """The prefix as given, if it is a key prefix we can scope to (else ValueError)."""
    if prefix.startswith("/") or ".." in prefix or "*" in prefix or "://" in prefix:
        raise ValueError(f"S3 prefix {prefix!r}: no leading '/', no '..', '*' or URL")
    if prefix and not prefix.endswith("/"):
        raise ValueError(f"S3 prefix {prefix!r} must end with '/' (or be '' for the bucket)")
    return prefix


def objects_arn(bucket_arn: pulumi.Input[str], prefix: str) -> pulumi.Output[str]:
    """ARN of every object under `prefix` in the bucket: `<bucket arn>/<prefix>*`."""
    return pulumi.Output.concat(bucket_arn, "/", check_prefix(prefix), "*")


def objects_statement(
    sid: str, actions: Sequence[str], bucket_arn: pulumi.Input[str], prefix: str
) -> dict[str, Any]:
    """`actions` on the objects under `prefix` of one bucket."""
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": list(actions),
        "Resource": objects_arn(bucket_arn, prefix),
    }


def list_statement(sid: str, bucket_arn: pulumi.Input[str], prefix: str) -> dict[str, Any]:
    """ListBucket on one bucket, limited to keys under `prefix` (unless it is the bucket)."""
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": bucket_arn,
    }
    if check_prefix(prefix):
        statement["Condition"] = {"StringLike": {"s3:prefix": [prefix, f"{prefix}*"]}}
    return statement


def kms_statement(
    sid: str, key_arn: pulumi.Input[str], actions: list[str], region: str | None
) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": list(actions),
        "Resource": key_arn,
    }
    if region:
        statement["Condition"] = {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}
    return statement


def training_statements(
    datasets_bucket_arn: pulumi.Input[str],
    datasets_prefix: str,
    checkpoints_bucket_arn: pulumi.Input[str],
    checkpoints_prefix: str,
    data_key_arn: pulumi.Input[str],
    *,
    region: str | None = None,
) -> list[dict[str, Any]]:
    """A training job: read its datasets prefix; read, write and delete (checkpoint
    rotation) its checkpoints prefix; list only those prefixes; use the data key."""
    return [
        objects_statement(
            "ReadDatasets", S3_READ_OBJECT_ACTIONS, datasets_bucket_arn, datasets_prefix
        ),
        list_statement("ListDatasets", datasets_bucket_arn, datasets_prefix),
        objects_statement(
            "ReadWriteCheckpoints",
            S3_READ_OBJECT_ACTIONS + S3_WRITE_OBJECT_ACTIONS + S3_DELETE_OBJECT_ACTIONS,
            checkpoints_bucket_arn,
            checkpoints_prefix,
        ),
        list_statement("ListCheckpoints", checkpoints_bucket_arn, checkpoints_prefix),
        kms_statement("UseDataKey", data_key_arn, KMS_WRITE_ACTIONS, region),
    ]


def serving_statements(
    models_bucket_arn: pulumi.Input[str],
    model_prefix: str,
    data_key_arn: pulumi.Input[str],
    *,
    region: str | None = None,
) -> list[dict[str, Any]]:
    """A serving endpoint: read one model's prefix in the models bucket, nothing else."""
    return [
        objects_statement("ReadModel", S3_READ_OBJECT_ACTIONS, models_bucket_arn, model_prefix),
        list_statement("ListModel", models_bucket_arn, model_prefix),
        kms_statement("DecryptWithDataKey", data_key_arn, KMS_READ_ACTIONS, region),
    ]


def staging_statements(
    datasets_bucket_arn: pulumi.Input[str],
    datasets_prefix: str,
    data_key_arn: pulumi.Input[str],
    *,
    region: str | None = None,
) -> list[dict[str, Any]]:
    """`llmcloud stage`: write the datasets prefix (multipart uploads, their listing to
    resume), read it back to verify; no deletes: staged data is replaced, never removed."""
    return [
        objects_statement(
            "WriteAndVerifyDatasets",
            S3_WRITE_OBJECT_ACTIONS + S3_READ_OBJECT_ACTIONS,
            datasets_bucket_arn,
            datasets_prefix,
        ),
        list_statement("ListDatasets", datasets_bucket_arn, datasets_prefix),
        {
            "Sid": "FindUnfinishedUploads",
            "Effect": "Allow",
            "Action": "s3:ListBucketMultipartUploads",
            "Resource": datasets_bucket_arn,
        },
        kms_statement("UseDataKey", data_key_arn, KMS_WRITE_ACTIONS, region),
    ]


def ebs_csi_kms_statements(ebs_key_arn: pulumi.Input[str]) -> list[dict[str, Any]]:
    """The EBS CSI controller creates and attaches volumes encrypted with our EBS key: EBS
    needs a grant on the key (only for AWS resources) and the data-key operations."""
    return [
        {
            "Sid": "EbsGrantsOnOurKey",
            "Effect": "Allow",
            "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
            "Resource": ebs_key_arn,
            "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
        },
        {
            "Sid": "EbsEncryptsVolumesWithOurKey",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKeyWithoutPlaintext", "kms:DescribeKey"],
            "Resource": ebs_key_arn,
        },
    ]


# ----------------------------------------------------------------------------- checks


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def statement_problems(statement: dict[str, Any], *, key_policy: bool = False) -> list[str]:
    """What is wrong with one resolved policy statement: a `*` (or `service:*`) action, or
    a write action on `*`. Deny statements restrict and are never a problem. In a KMS key
    policy `Resource: "*"` is the key itself, and `kms:*` is allowed to the account root
    only (AWS's delegation of the key to IAM)."""
    if statement.get("Effect") != "Allow":
        return []
    problems = []
    # Values not known yet (Outputs) are exact ARNs by construction; only strings can be "*".
    actions = [a for a in _as_list(statement.get("Action")) if isinstance(a, str)]
    if "NotAction" in statement:
        problems.append("uses NotAction (allows everything not listed)")
    if "NotResource" in statement:
        problems.append("uses NotResource (allows every resource not listed)")
    for action in actions:
        if action == "*" or action.endswith(":*"):
            principal = statement.get("Principal")
            aws_principals = _as_list(principal.get("AWS")) if isinstance(principal, dict) else []
            root_only = bool(aws_principals) and all(
                str(p).endswith(":root") for p in aws_principals
            )
            if not (key_policy and action == "kms:*" and root_only):
                problems.append(f"allows every action: {action}")
    resources = [r for r in _as_list(statement.get("Resource")) if isinstance(r, str)]
    if "*" in resources and not key_policy:
        writes = [a for a in actions if not allowed_on_any_resource(a)]
        if writes:
            problems.append("allows write actions on every resource: " + ", ".join(writes))
    return problems
