"""KMS keys: rotation, deletion window, aliases, and key policies that grant only what each
consumer needs (checked on the prod and dev plans)."""

from __future__ import annotations

import json

import pytest

from infra.plan.engine import Plan, Resource
from infra.security.keys import KEY_ADMIN_ACTIONS, KEY_USE_ACTIONS, PURPOSES

ACCOUNT = "123456789012"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"


def keys(plan: Plan) -> dict[str, Resource]:
    return {k.name.removesuffix("-key"): k for k in plan.by_type("aws:kms/key:Key")}


def statements(key: Resource) -> dict[str, dict]:
    return {s["Sid"]: s for s in json.loads(key.inputs["policy"])["Statement"]}


def test_prod_has_one_key_per_purpose(prod_plan):
    assert sorted(keys(prod_plan)) == sorted(PURPOSES)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_key_rotates_yearly_with_the_configured_deletion_window(stack, stack_report):
    report = stack_report(stack)
    window = report.config.security.kms_deletion_window_days
    for key in report.plan.by_type("aws:kms/key:Key"):
        assert key.inputs["enableKeyRotation"] is True, key.urn
        assert key.inputs["rotationPeriodInDays"] == 365, key.urn
        assert key.inputs["deletionWindowInDays"] == window, key.urn
        assert key.inputs["customerMasterKeySpec"] == "SYMMETRIC_DEFAULT"


def test_every_key_has_its_alias(prod_plan):
    aliases = {
        a.inputs["targetKeyId"]: a.inputs["name"] for a in prod_plan.by_type("aws:kms/alias:Alias")
    }
    for purpose, key in keys(prod_plan).items():
        assert aliases[key.outputs["keyId"]] == f"alias/llm-prod-{purpose}"


def test_only_the_account_root_gets_every_kms_action(prod_plan):
    for key in prod_plan.by_type("aws:kms/key:Key"):
        for sid, s in statements(key).items():
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            if "kms:*" in actions:
                assert s["Principal"] == {"AWS": ROOT}, (key.name, sid)
            assert s["Principal"] != "*" and s["Principal"] != {"AWS": "*"}, (key.name, sid)


def test_key_administrators_administer_but_cannot_use_the_keys(prod_plan, stack_report):
    admins = stack_report("prod").config.security.key_admin_arns
    assert admins
    for key in prod_plan.by_type("aws:kms/key:Key"):
        s = statements(key)["KeyAdministrators"]
        assert s["Principal"] == {"AWS": admins}
        assert s["Action"] == KEY_ADMIN_ACTIONS
        assert not set(s["Action"]) & {"kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"}


def test_cloudtrail_may_use_the_logs_key_only_for_this_stacks_trail(prod_plan):
    (trail,) = prod_plan.by_type("aws:cloudtrail/trail:Trail")
    logs = statements(keys(prod_plan)["logs"])
    encrypt, describe = logs["CloudTrailEncryptsItsLogs"], logs["CloudTrailDescribesTheKey"]
    assert encrypt["Principal"] == describe["Principal"] == {"Service": "cloudtrail.amazonaws.com"}
    assert encrypt["Action"] == "kms:GenerateDataKey*"
    assert encrypt["Condition"]["StringEquals"] == {"aws:SourceArn": trail.outputs["arn"]}
    assert encrypt["Condition"]["StringLike"] == {
        "kms:EncryptionContext:aws:cloudtrail:arn": f"arn:aws:cloudtrail:*:{ACCOUNT}:trail/*"
    }
    # DescribeKey carries no encryption context: a context condition would deny it and
    # CloudTrail would refuse the key when the trail is created.
    assert describe["Action"] == "kms:DescribeKey"
    assert describe["Condition"] == {"StringEquals": {"aws:SourceArn": trail.outputs["arn"]}}


def test_the_logs_bucket_the_logs_key_and_the_trail_agree_on_the_trail(prod_plan):
    (trail,) = prod_plan.by_type("aws:cloudtrail/trail:Trail")
    assert trail.inputs["name"] == "llm-prod-trail"
    assert trail.inputs["kmsKeyId"] == keys(prod_plan)["logs"].outputs["arn"]
    bucket_policies = [
        json.loads(p.inputs["policy"])
        for p in prod_plan.by_type("aws:s3/bucketPolicy:BucketPolicy")
    ]
    cloudtrail_conditions = [
        s["Condition"]["StringEquals"]["aws:SourceArn"]
        for doc in bucket_policies
        for s in doc["Statement"]
        if s.get("Principal") == {"Service": "cloudtrail.amazonaws.com"}
    ]
    assert cloudtrail_conditions and set(cloudtrail_conditions) == {trail.outputs["arn"]}


def test_without_cloudtrail_the_logs_key_does_not_admit_it(dev_plan):
    assert not dev_plan.by_type("aws:cloudtrail/trail:Trail")
    logs = json.loads(keys(dev_plan)["logs"].inputs["policy"])["Statement"]
    assert not [s for s in logs if s.get("Principal") == {"Service": "cloudtrail.amazonaws.com"}]


def test_cloudwatch_logs_may_use_the_logs_key_only_for_this_accounts_log_groups(prod_plan):
    s = statements(keys(prod_plan)["logs"])["CloudWatchLogsEncryptsItsLogGroups"]
    assert s["Principal"] == {"Service": "logs.us-east-2.amazonaws.com"}
    assert s["Condition"] == {
        "ArnLike": {
            "kms:EncryptionContext:aws:logs:arn": f"arn:aws:logs:us-east-2:{ACCOUNT}:log-group:*"
        }
    }


def test_only_the_logs_key_admits_aws_services(prod_plan):
    for purpose, key in keys(prod_plan).items():
        services = [
            s["Principal"]["Service"]
            for s in statements(key).values()
            if "Service" in s.get("Principal", {})
        ]
        assert bool(services) == (purpose == "logs"), (purpose, services)


def test_node_volumes_key_admits_the_auto_scaling_role_for_aws_resources_only(prod_plan):
    ebs = statements(keys(prod_plan)["ebs"])
    asg = (
        f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/autoscaling.amazonaws.com/"
        "AWSServiceRoleForAutoScaling"
    )
    assert ebs["AutoScalingLaunchesEncryptedNodeVolumes"]["Principal"] == {"AWS": asg}
    assert ebs["AutoScalingLaunchesEncryptedNodeVolumes"]["Action"] == KEY_USE_ACTIONS
    grant = ebs["AutoScalingAttachesPersistentVolumes"]
    assert grant["Action"] == "kms:CreateGrant"
    assert grant["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
    for purpose in ("cluster", "data", "logs"):
        assert "AutoScalingLaunchesEncryptedNodeVolumes" not in statements(keys(prod_plan)[purpose])


# --------------------------------------------------------------------------- fresh accounts


def test_the_service_linked_roles_the_key_policies_name_are_created_first(prod_plan):
    roles = {
        r.inputs["awsServiceName"]: r
        for r in prod_plan.by_type("aws:iam/serviceLinkedRole:ServiceLinkedRole")
    }
    # prod has no spot groups: no Spot role
    assert sorted(roles) == [
        "autoscaling.amazonaws.com",
        "eks-nodegroup.amazonaws.com",
        "elasticloadbalancing.amazonaws.com",
    ]
    ebs = keys(prod_plan)["ebs"]
    # the key waits for them: KMS refuses a policy naming a principal that does not exist
    assert {r.urn for r in roles.values()} <= set(ebs.dependencies)
    named = {
        s["Principal"]["AWS"]
        for s in json.loads(ebs.inputs["policy"])["Statement"]
        if "aws-service-role" in str(s["Principal"].get("AWS", ""))
    }
    assert named == {
        f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/autoscaling.amazonaws.com/"
        "AWSServiceRoleForAutoScaling"
    }
    assert roles["autoscaling.amazonaws.com"].inputs["awsServiceName"] in next(iter(named))


def test_no_service_linked_roles_when_the_account_baseline_owns_them(project_root):
    from infra.config import read_stack_file, stack_file
    from infra.plan.engine import evaluate

    security = read_stack_file(stack_file(project_root, "staging"))["llmcloud:security"]
    plan = evaluate(
        project_root,
        "staging",
        config_overrides={"llmcloud:security": {**security, "create_service_linked_roles": False}},
    )
    assert plan.by_type("aws:iam/serviceLinkedRole:ServiceLinkedRole") == []
    assert statements(keys(plan)["ebs"])["AutoScalingLaunchesEncryptedNodeVolumes"]
