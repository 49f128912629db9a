"""Rules for the services people put next to a platform (RDS, EC2 instances, load balancer
listeners, Lambda function URLs, ECS task definitions), run by `llmcloud plan` on a program
written the way people write Pulumi outside this project."""

from __future__ import annotations

import json

import pytest

from infra.plan.run import run_plan
from tests.conftest import write_project

RISKY = """
import json
import pulumi, pulumi_aws as aws
aws.rds.Instance("db", engine="postgres", instance_class="db.t3.micro", allocated_storage=20,
                 username="app", password="not-a-real-one", publicly_accessible=True,
                 backup_retention_period=0, skip_final_snapshot=True)
aws.rds.Cluster("aurora", engine="aurora-postgresql", master_username="app",
                master_password="not-a-real-one")
aws.ec2.Instance("bastion", ami="ami-1", instance_type="t3.micro",
                 associate_public_ip_address=True)
lb = aws.lb.LoadBalancer("web", subnets=["subnet-1", "subnet-2"])
aws.lb.Listener("http", load_balancer_arn=lb.arn, port=80, protocol="HTTP",
                default_actions=[{"type": "fixed-response", "fixed_response": {
                    "content_type": "text/plain", "status_code": "200"}}])
aws.lb.Listener("old-tls", load_balancer_arn=lb.arn, port=443, protocol="HTTPS",
                ssl_policy="ELBSecurityPolicy-2016-08", certificate_arn="arn:aws:acm:us-east-1:123456789012:certificate/x",
                default_actions=[{"type": "fixed-response", "fixed_response": {
                    "content_type": "text/plain", "status_code": "200"}}])
role = aws.iam.Role("fn", assume_role_policy="{}")
fn = aws.lambda_.Function("hook", role=role.arn, runtime="python3.13", handler="h.main",
                          code=pulumi.AssetArchive({"h.py": pulumi.StringAsset("def main(e, c): pass")}))
aws.lambda_.FunctionUrl("hook", function_name=fn.name, authorization_type="NONE")
aws.ecs.TaskDefinition("agent", family="agent", network_mode="host",
    container_definitions=json.dumps([{"name": "agent", "image": "agent:1", "privileged": True,
                                       "memory": 256}]))
"""

SAFE = """
import json
import pulumi, pulumi_aws as aws
aws.rds.Instance("db", engine="postgres", instance_class="db.t3.micro", allocated_storage=20,
                 username="app", password="not-a-real-one", storage_encrypted=True,
                 backup_retention_period=7, deletion_protection=True)
lb = aws.lb.LoadBalancer("web", subnets=["subnet-1", "subnet-2"])
aws.lb.Listener("http", load_balancer_arn=lb.arn, port=80, protocol="HTTP",
                default_actions=[{"type": "redirect", "redirect": {
                    "protocol": "HTTPS", "port": "443", "status_code": "HTTP_301"}}])
aws.lb.Listener("https", load_balancer_arn=lb.arn, port=443, protocol="HTTPS",
                ssl_policy="ELBSecurityPolicy-TLS13-1-2-2021-06",
                certificate_arn="arn:aws:acm:us-east-1:123456789012:certificate/x",
                default_actions=[{"type": "fixed-response", "fixed_response": {
                    "content_type": "text/plain", "status_code": "200"}}])
aws.ecs.TaskDefinition("api", family="api", network_mode="awsvpc", cpu="256", memory="512",
    requires_compatibilities=["FARGATE"],
    container_definitions=json.dumps([{"name": "api", "image": "api:1"}]))
"""

SERVICE_RULES = {
    "rds-not-public",
    "rds-storage-encrypted",
    "rds-backups",
    "rds-deletion-protection",
    "lb-listener-tls",
    "lambda-url-auth",
    "ecs-no-privileged",
    "ecs-no-host-network",
}


def _by_rule(report) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in report.violations:
        out.setdefault(v.policy, []).append(v.urn.rsplit("::", 1)[-1] if v.urn else "")
    return out


@pytest.fixture(scope="module")
def risky(tmp_path_factory):
    return run_plan(write_project(tmp_path_factory.mktemp("risky"), RISKY, stack="prod"), "prod")


def test_a_public_unencrypted_database_without_backups_is_found(risky):
    found = _by_rule(risky)
    assert found["rds-not-public"] == ["db"]
    assert sorted(found["rds-storage-encrypted"]) == ["aurora", "db"]
    # db: retention 0; the cluster: unset, the API's 1 day
    assert sorted(found["rds-backups"]) == ["aurora", "db"]
    # the stack is named prod: deletion protection is expected there
    assert sorted(found["rds-deletion-protection"]) == ["aurora", "db"]
    messages = {v.message for v in risky.violations if v.policy == "rds-backups"}
    assert any("backups off" in m for m in messages) and any("1 day(s)" in m for m in messages)


def test_instances_listeners_function_urls_and_tasks_are_checked(risky):
    found = _by_rule(risky)
    assert found["ec2-no-public-ip"] == ["bastion"]
    assert found["ec2-imdsv2-required"] == ["bastion"]
    assert found["ebs-encrypted"] == ["bastion"]
    assert sorted(found["lb-listener-tls"]) == ["http", "old-tls"]
    assert found["lambda-url-auth"] == ["hook"]
    assert found["ecs-no-privileged"] == ["agent"]
    assert found["ecs-no-host-network"] == ["agent"]
    # Severity and enforcement as the other rules: a critical finding is mandatory.
    public = next(v for v in risky.violations if v.policy == "rds-not-public")
    assert (public.severity, public.enforcement) == ("critical", "mandatory")
    assert risky.exit_code == 1


def test_the_safe_configuration_of_each_service_passes(tmp_path):
    report = run_plan(write_project(tmp_path / "safe", SAFE, stack="prod"), "prod")
    assert SERVICE_RULES.isdisjoint(_by_rule(report)), json.dumps(
        [v.to_json() for v in report.violations if v.policy in SERVICE_RULES], indent=1
    )


def test_deletion_protection_is_asked_only_in_production(tmp_path):
    report = run_plan(write_project(tmp_path / "dev", RISKY), "dev")
    assert "rds-deletion-protection" not in _by_rule(report)
