"""Customer-managed KMS keys, one per purpose, each with a key policy that grants only what
its consumers need.

Every key: rotation on (yearly), a deletion window from config, an alias. The account root
keeps `kms:*` (AWS's delegation to IAM; without it a key can become unmanageable); the key
administrators named in config get administration but not use; AWS services that cannot be
given IAM policies (CloudWatch Logs, CloudTrail, the Auto Scaling service-linked role that
launches encrypted node volumes) get exactly the operations they perform, scoped by
encryption context or source where KMS supports it. Everyone else (cluster role, pod roles,
the data stager) gets key use through IAM policies naming the exact key ARN, which the
root statement permits. FSx for Lustre's per-file-system S3 role gets grants on the data key
(infra/storage/lustre.py), since its name exists only with the file system.

`"Resource": "*"` in a key policy means "this key"; it is not a wildcard grant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra.context import Context, policy_document
from infra.security.principals import key_policy_principals  # noqa: F401 (re-exported)
from infra.security.service_roles import role_arn as service_linked_role_arn

# The account's audit trail (infra/security/audit_trail.py creates it under exactly this name; the
# log bucket policy and the logs key policy name it).
TRAIL_SUFFIX = "-trail"

PURPOSES = ("cluster", "data", "ebs", "logs")


def trail_name(prefix: str) -> str:
    """Name of the stack's CloudTrail trail: `<prefix>-trail`."""
    return f"{prefix}{TRAIL_SUFFIX}"


def trail_arn(ctx: Context) -> str:
    """ARN of the stack's trail (a multi-region trail lives in its home region)."""
    return ctx.arn("cloudtrail", f"trail/{trail_name(ctx.prefix)}")


def cloudtrail_statements(ctx: Context) -> list[dict]:
    """What CloudTrail needs on the logs key, as AWS documents it: data keys for this
    trail's log files (bound by encryption context and source ARN), and DescribeKey,
    which carries no encryption context and would fail under that condition."""
    account_trails = f"arn:{ctx.partition}:cloudtrail:*:{ctx.account_id}:trail/*"
    return [
        {
            "Sid": "CloudTrailEncryptsItsLogs",
            "Effect": "Allow",
            "Principal": {"Service": "cloudtrail.amazonaws.com"},
            "Action": "kms:GenerateDataKey*",
            "Resource": "*",
            "Condition": {
                "StringEquals": {"aws:SourceArn": trail_arn(ctx)},
                "StringLike": {"kms:EncryptionContext:aws:cloudtrail:arn": account_trails},
            },
        },
        {
            "Sid": "CloudTrailDescribesTheKey",
            "Effect": "Allow",
            "Principal": {"Service": "cloudtrail.amazonaws.com"},
            "Action": "kms:DescribeKey",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:SourceArn": trail_arn(ctx)}},
        },
    ]


KEY_ADMIN_ACTIONS = [
    "kms:Create*",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:RotateKeyOnDemand",
]
KEY_USE_ACTIONS = [
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey*",
    "kms:DescribeKey",
]

_DESCRIPTIONS = {
    "cluster": "EKS secrets envelope encryption",
    "data": "S3 data lake and FSx for Lustre",
    "ebs": "EBS volumes of cluster nodes",
    "logs": "CloudWatch Logs (control plane, flow logs, audit trail) and CloudTrail",
}


@dataclass(frozen=True)
class KeysArgs:
    deletion_window_days: int
    key_admin_arns: list[str]
    # The service-linked roles the key policies name (infra/security/service_roles.py): KMS
    # refuses a policy whose principal does not exist yet.
    service_linked_roles: list[pulumi.Resource] = field(default_factory=list)
    # the stack's CloudTrail trail writes with the logs key: its policy lets CloudTrail in
    cloudtrail: bool = False


class Keys(pulumi.ComponentResource):
    """The platform's KMS keys: `cluster`, `data`, `ebs`, `logs`."""

    cluster: aws.kms.Key
    data: aws.kms.Key
    ebs: aws.kms.Key
    logs: aws.kms.Key

    def __init__(
        self, name: str, args: KeysArgs, ctx: Context, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("llmcloud:security:Keys", name, None, opts)
        self._ctx = ctx
        self._args = args
        for purpose in PURPOSES:
            setattr(self, purpose, self._key(purpose))
        self.register_outputs({f"{p}_key_arn": getattr(self, p).arn for p in PURPOSES})

    def arns(self) -> dict[str, pulumi.Output[str]]:
        return {p: getattr(self, p).arn for p in PURPOSES}

    def _key(self, purpose: str) -> aws.kms.Key:
        ctx = self._ctx
        child = pulumi.ResourceOptions(parent=self)
        key_opts = pulumi.ResourceOptions(
            parent=self,
            depends_on=self._args.service_linked_roles if purpose == "ebs" else [],
        )
        key = aws.kms.Key(
            f"{purpose}-key",
            description=f"{ctx.prefix}: {_DESCRIPTIONS[purpose]}",
            enable_key_rotation=True,
            rotation_period_in_days=365,
            deletion_window_in_days=self._args.deletion_window_days,
            key_usage="ENCRYPT_DECRYPT",
            customer_master_key_spec="SYMMETRIC_DEFAULT",
            policy=policy_document(self._statements(purpose)),
            tags={"Name": f"{ctx.prefix}-{purpose}", "llmcloud:key-purpose": purpose},
            opts=key_opts,
        )
        aws.kms.Alias(
            f"{purpose}-alias",
            name=f"alias/{ctx.prefix}-{purpose}",
            target_key_id=key.key_id,
            opts=child,
        )
        return key

    def _statements(self, purpose: str) -> list[dict]:
        ctx = self._ctx
        root = ctx.arn("iam", "root", region=False)
        statements: list[dict] = [
            {
                "Sid": "AccountRootDelegatesToIam",
                "Effect": "Allow",
                "Principal": {"AWS": root},
                "Action": "kms:*",
                "Resource": "*",
            }
        ]
        if self._args.key_admin_arns:
            statements.append(
                {
                    "Sid": "KeyAdministrators",
                    "Effect": "Allow",
                    "Principal": {"AWS": list(self._args.key_admin_arns)},
                    "Action": KEY_ADMIN_ACTIONS,
                    "Resource": "*",
                }
            )
        if purpose == "logs":
            logs_arn = ctx.arn("logs", "log-group:*")
            statements.append(
                {
                    "Sid": "CloudWatchLogsEncryptsItsLogGroups",
                    "Effect": "Allow",
                    "Principal": {"Service": f"logs.{ctx.region}.amazonaws.com"},
                    "Action": KEY_USE_ACTIONS,
                    "Resource": "*",
                    "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": logs_arn}},
                }
            )
            if self._args.cloudtrail:
                statements.extend(cloudtrail_statements(ctx))
        if purpose == "ebs":
            asg_role = service_linked_role_arn(ctx, "autoscaling.amazonaws.com")
            statements.append(
                {
                    "Sid": "AutoScalingLaunchesEncryptedNodeVolumes",
                    "Effect": "Allow",
                    "Principal": {"AWS": asg_role},
                    "Action": KEY_USE_ACTIONS,
                    "Resource": "*",
                }
            )
            statements.append(
                {
                    "Sid": "AutoScalingAttachesPersistentVolumes",
                    "Effect": "Allow",
                    "Principal": {"AWS": asg_role},
                    "Action": "kms:CreateGrant",
                    "Resource": "*",
                    "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
                }
            )
        return statements
