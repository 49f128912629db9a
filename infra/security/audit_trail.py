"""The account's audit trail: who did what, to which AWS API, and to which training data.

One CloudTrail trail, `<prefix>-trail`:
- multi-region, with global service events (IAM, STS), log file validation (a signed
  digest per hour, so tampering with delivered logs is detectable);
- all management events, KMS included (every Decrypt of the data key is an event);
- S3 data events (object reads and writes) on the data-lake buckets, through advanced
  event selectors; never on the log bucket itself, which would log its own deliveries;
- log files encrypted with the logs key (whose policy lets exactly this trail use it) and
  delivered to the log bucket (whose policy, written by storage, names exactly this trail);
- optionally also to a CloudWatch Logs group (KMS-encrypted, retention from config) for
  search and alarms, through a role that may only write that group's streams.

The EKS control-plane audit log is the cluster's; S3 server access logs are storage's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.context import Context, policy_document
from infra.security.keys import trail_name
from infra.security.roles import service_trust


@dataclass(frozen=True)
class AuditTrailArgs:
    log_bucket_name: pulumi.Input[str]
    # The log bucket's policy (it must exist before CloudTrail checks it can write there).
    log_bucket_policy: pulumi.Resource | None
    data_bucket_arns: Sequence[pulumi.Input[str]]
    logs_key_arn: pulumi.Input[str]
    # Where in the bucket: `<prefix>/AWSLogs/<account>/CloudTrail/...`; None for the root.
    s3_key_prefix: str | None = None
    # CloudWatch Logs copy of the trail: retention in days, or None for no copy.
    cloudwatch_retention_days: int | None = 365


class AuditTrail(pulumi.ComponentResource):
    """A multi-region CloudTrail trail with S3 data events on the data lake."""

    trail: aws.cloudtrail.Trail
    log_group: aws.cloudwatch.LogGroup | None
    trail_name: str

    def __init__(
        self,
        name: str,
        args: AuditTrailArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("llmcloud:security:AuditTrail", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.trail_name = trail_name(ctx.prefix)
        depends_on: list[pulumi.Resource] = (
            [args.log_bucket_policy] if args.log_bucket_policy is not None else []
        )
        self.log_group = None
        cloudwatch: dict[str, pulumi.Input[str]] = {}
        if args.cloudwatch_retention_days is not None:
            self.log_group = aws.cloudwatch.LogGroup(
                "trail-logs",
                name=f"/llmcloud/{ctx.prefix}/cloudtrail",
                retention_in_days=args.cloudwatch_retention_days,
                kms_key_id=args.logs_key_arn,
                opts=child,
            )
            # CloudTrail's CloudWatch Logs delivery does not send aws:SourceAccount; a
            # condition on it would stop delivery.
            role = aws.iam.Role(
                "trail-logs-role",
                description=f"CloudTrail {self.trail_name} delivery to CloudWatch Logs",
                assume_role_policy=service_trust(
                    "cloudtrail.amazonaws.com", ctx, source_account=False
                ),
                opts=child,
            )
            delivery = aws.iam.RolePolicy(
                "trail-logs-delivery",
                role=role.name,
                policy=policy_document(
                    [
                        {
                            "Sid": "WriteTrailLogStreams",
                            "Effect": "Allow",
                            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                            "Resource": pulumi.Output.concat(self.log_group.arn, ":log-stream:*"),
                        }
                    ]
                ),
                opts=child,
            )
            depends_on.append(delivery)
            cloudwatch = {
                "cloud_watch_logs_group_arn": pulumi.Output.concat(self.log_group.arn, ":*"),
                "cloud_watch_logs_role_arn": role.arn,
            }

        selectors = [
            aws.cloudtrail.TrailAdvancedEventSelectorArgs(
                name="Management events, KMS included",
                field_selectors=[
                    aws.cloudtrail.TrailAdvancedEventSelectorFieldSelectorArgs(
                        field="eventCategory", equals=["Management"]
                    )
                ],
            )
        ]
        if args.data_bucket_arns:
            selectors.append(
                aws.cloudtrail.TrailAdvancedEventSelectorArgs(
                    name="S3 object events on the data lake",
                    field_selectors=[
                        aws.cloudtrail.TrailAdvancedEventSelectorFieldSelectorArgs(
                            field="eventCategory", equals=["Data"]
                        ),
                        aws.cloudtrail.TrailAdvancedEventSelectorFieldSelectorArgs(
                            field="resources.type", equals=["AWS::S3::Object"]
                        ),
                        aws.cloudtrail.TrailAdvancedEventSelectorFieldSelectorArgs(
                            field="resources.ARN",
                            starts_withs=[
                                pulumi.Output.concat(arn, "/") for arn in args.data_bucket_arns
                            ],
                        ),
                    ],
                )
            )
        self.trail = aws.cloudtrail.Trail(
            "trail",
            name=self.trail_name,
            s3_bucket_name=args.log_bucket_name,
            s3_key_prefix=args.s3_key_prefix,
            kms_key_id=args.logs_key_arn,
            is_multi_region_trail=True,
            include_global_service_events=True,
            enable_log_file_validation=True,
            enable_logging=True,
            advanced_event_selectors=selectors,
            tags={"Name": self.trail_name},
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
            **cloudwatch,
        )
        self.register_outputs({"trail_arn": self.trail.arn})
