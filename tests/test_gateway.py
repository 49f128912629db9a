"""The model gateway as the stacks plan it: Kubernetes objects against the upstream schemas,
routes against the serving Services, team keys, the audit wiring, the NetworkPolicies of both
hops, the config checks and the three gateway rules on plans with a defect put back."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from infra.config import ConfigError, parse_stack_config
from infra.plan.engine import Plan, Resource, evaluate
from infra.plan.k8s import manifests, validate_manifests
from infra.plan.policy_runner import evaluate_policies
from policies.rules.base import PolicySettings
from tests.conftest import ROOT, STACKS, copy_project_with, mutated
from workloads.gateway import config as gwconfig
from workloads.gateway.server import GatewayConfig

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
SECRET = "aws:secretsmanager/secret:Secret"
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
PASSWORD = "random:index/randomPassword:RandomPassword"


def gateway_children(plan: Plan) -> list[Resource]:
    (component,) = plan.by_type("llmcloud:workloads:Gateway")
    out, todo = [], [component.urn]
    while todo:
        for child in plan.children(todo.pop()):
            out.append(child)
            todo.append(child.urn)
    return out


def k8s_object(plan: Plan, token: str, name: str, namespace: str = "gateway") -> dict[str, Any]:
    (found,) = [
        r.inputs
        for r in plan.by_type(token)
        if r.inputs["metadata"]["name"] == name and r.inputs["metadata"]["namespace"] == namespace
    ]
    return found


def vllm_deployment(plan: Plan) -> dict[str, Any]:
    (found,) = [
        r.inputs
        for r in plan.by_type(DEPLOYMENT)
        if r.inputs["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name")
        == "vllm"
    ]
    return found


def rendered(plan: Plan) -> GatewayConfig:
    data = k8s_object(plan, CONFIG_MAP, "gateway-config")["data"]["config.json"]
    return GatewayConfig.parse(json.loads(data))  # the gateway program's own parser


def raw_config(stack: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]


# --------------------------------------------------------------------------- planned objects


@pytest.mark.parametrize("stack", STACKS)
def test_gateway_objects_validate_against_the_kubernetes_schemas(stack, stack_report):
    plan = stack_report(stack).plan
    urns = {r.urn for r in gateway_children(plan)}
    items = [m for m in manifests(plan) if m.urn in urns]
    kinds = {m.kind for m in items}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "NetworkPolicy"} <= kinds
    assert validate_manifests(items, "1.35") == []


def test_each_served_model_routes_to_its_service_with_its_vllm_key(prod_plan):
    config = rendered(prod_plan)
    (route,) = config.routes.values()
    service = next(
        r.inputs
        for r in prod_plan.by_type(SERVICE)
        if r.inputs["metadata"]["namespace"] == "serving"
    )
    name, ns = service["metadata"]["name"], service["metadata"]["namespace"]
    port = service["spec"]["ports"][0]["port"]
    assert route.model == "meta-llama/Llama-3.1-70B-Instruct"
    assert route.base_url == f"http://{name}.{ns}.svc.cluster.local:{port}"
    # the gateway container gets that endpoint's key from its own Secret, by the route's name
    pod = k8s_object(prod_plan, DEPLOYMENT, "gateway")["spec"]["template"]["spec"]
    gateway = next(c for c in pod["containers"] if c["name"] == "gateway")
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in gateway["env"] if "valueFrom" in e}
    assert refs[route.api_key_env] == {"name": "gateway-upstream-keys", "key": route.api_key_env}


def test_each_pod_enforces_its_share_of_a_team_limit(prod_plan):
    teams = {t.name: t for t in rendered(prod_plan).teams}
    # prod: 3 replicas; research 600 rpm, 2M tpm, 500M tokens/day
    assert (teams["research"].rpm, teams["research"].tpm) == (200, 666667)
    assert teams["research"].tokens_per_day == 166666667
    assert teams["product"].models == frozenset({"meta-llama/Llama-3.1-70B-Instruct"})


def test_team_keys_live_in_secrets_manager_under_the_secrets_key_and_only_digests_in_the_cluster(
    stack_report,
):
    report = stack_report("prod")
    plan = report.plan
    secrets = {r.inputs["name"]: r.inputs for r in plan.by_type(SECRET)}
    cluster_key = report.to_json()["outputs"]["kms_key_arns"]["cluster"]
    for team in ("research", "product"):
        assert secrets[f"llm-prod/gateway/teams/{team}"]["kmsKeyId"] == cluster_key
    digests = {t.name: t.key_sha256 for t in rendered(plan).teams}
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in digests.values())
    assert digests["research"] != digests["product"]
    config_text = json.dumps([r.inputs for r in gateway_children(plan) if r.type == CONFIG_MAP])
    for version in plan.by_type(SECRET_VERSION):
        key = version.inputs.get("secretString")
        if isinstance(key, str) and key != "[secret]":
            assert key not in config_text


def test_revoking_one_team_touches_no_other_teams_resources(tmp_path, dev_plan):
    def add_ops(raw: dict[str, Any]) -> None:
        teams = raw["llmcloud:gateway"]["teams"]
        teams.append({**teams[0], "name": "ops"})

    project = copy_project_with(tmp_path / "p", "dev", add_ops)
    (project / ".venv").symlink_to(ROOT / ".venv")  # Pulumi.yaml's virtualenv: this one
    with_ops = evaluate(project, "dev")

    def team_resources(plan: Plan, team: str) -> dict[str, str]:
        return {
            r.urn: json.dumps(r.inputs, sort_keys=True)
            for r in gateway_children(plan)
            if r.type in (SECRET, SECRET_VERSION, PASSWORD) and f"-key-{team}" in r.name
        }

    # dev ships research alone: removing ops from `with_ops` gives dev back
    assert team_resources(with_ops, "research") == team_resources(dev_plan, "research")
    assert len(team_resources(with_ops, "ops")) == 3 and not team_resources(dev_plan, "ops")
    before = {t.name: t for t in rendered(with_ops).teams}
    after = {t.name: t for t in rendered(dev_plan).teams}
    assert set(before) - set(after) == {"ops"} and before["research"] == after["research"]


def test_audit_records_ship_to_the_logs_key_group_the_pod_role_may_write(stack_report):
    report = stack_report("prod")
    plan = report.plan
    (group,) = [r for r in gateway_children(plan) if r.type == "aws:cloudwatch/logGroup:LogGroup"]
    assert group.inputs["kmsKeyId"] == report.to_json()["outputs"]["kms_key_arns"]["logs"]
    assert group.inputs["retentionInDays"] == 365
    name = group.inputs["name"]
    conf = k8s_object(plan, CONFIG_MAP, "gateway-program")["data"]["fluent-bit.conf"]
    assert (
        f"log_group_name    {name}" in conf and f"Path              {gwconfig.AUDIT_FILE}" in conf
    )
    assert rendered(plan).audit_file == gwconfig.AUDIT_FILE and not rendered(plan).log_prompts
    (policy,) = [r for r in gateway_children(plan) if r.type == "aws:iam/rolePolicy:RolePolicy"]
    statements = {st["Sid"]: st for st in json.loads(policy.inputs["policy"])["Statement"]}
    assert set(statements) == {"WriteAuditRecords", "CopyAuditToLogsBucket"}
    statement = statements["WriteAuditRecords"]
    assert all(res.split(":log-group:")[1].startswith(name) for res in statement["Resource"])
    # the second copy: the logs bucket, under its own prefix only
    (logs_bucket,) = [
        r.inputs["bucket"]
        for r in plan.by_type("aws:s3/bucket:Bucket")
        if r.inputs["bucket"] == report.to_json()["outputs"]["bucket_names"]["logs"]
    ]
    assert f"bucket            {logs_bucket}" in conf
    assert f"s3_key_format     /{gwconfig.AUDIT_S3_PREFIX}/%Y/%m/%d/" in conf
    assert statements["CopyAuditToLogsBucket"]["Action"] == ["s3:PutObject"]
    assert statements["CopyAuditToLogsBucket"]["Resource"] == [
        f"arn:aws:s3:::{logs_bucket}/{gwconfig.AUDIT_S3_PREFIX}/*"
    ]
    assert set(statement["Action"]) == {
        "logs:CreateLogStream",
        "logs:DescribeLogStreams",
        "logs:PutLogEvents",
    }
    # the shipper reads the file the gateway writes: one volume, mounted in both containers
    pod = k8s_object(plan, DEPLOYMENT, "gateway")["spec"]["template"]["spec"]
    mounts = [
        {m["name"]: m["mountPath"] for m in c["volumeMounts"]}["audit"] for c in pod["containers"]
    ]
    assert mounts == [gwconfig.AUDIT_DIR, gwconfig.AUDIT_DIR]


def test_the_listener_is_tls_only_with_the_configured_certificate(prod_plan):
    service = k8s_object(prod_plan, SERVICE, "gateway")
    annotations = service["metadata"]["annotations"]
    prefix = "service.beta.kubernetes.io/aws-load-balancer-"
    assert (
        annotations[f"{prefix}ssl-cert"]
        == raw_config("prod")["llmcloud:gateway"]["certificate_arn"]
    )
    assert annotations[f"{prefix}ssl-ports"] == "443"
    assert [p["port"] for p in service["spec"]["ports"]] == [443]
    assert service["spec"]["loadBalancerSourceRanges"] == ["10.30.0.0/16", "10.40.0.0/16"]


def test_a_domain_without_a_certificate_gets_a_dns_validated_acm_certificate(stack_report):
    report = stack_report("dev")
    (cert,) = report.plan.by_type("aws:acm/certificate:Certificate")
    assert cert.inputs == {"domainName": "llm.dev.example.com", "validationMethod": "DNS"}
    outputs = report.to_json()["outputs"]
    assert outputs["gateway_url"] == "https://llm.dev.example.com/v1"
    assert outputs["gateway_load_balancer"].endswith(".elb.us-east-1.amazonaws.com")
    assert outputs["gateway_certificate_validation"]  # the records to create
    # prod brings its own certificate: nothing to validate
    assert "gateway_certificate_validation" not in stack_report("prod").to_json()["outputs"]


def test_vllm_pods_admit_the_gateway_pods_and_the_gateway_reaches_only_them(prod_plan):
    vllm_labels = vllm_deployment(prod_plan)["spec"]["template"]["metadata"]["labels"]
    gateway_labels = k8s_object(prod_plan, DEPLOYMENT, "gateway")["spec"]["template"]["metadata"][
        "labels"
    ]
    admit = k8s_object(prod_plan, NETPOL, "llama-70b-from-gateway", namespace="serving")["spec"]
    assert admit["podSelector"]["matchLabels"].items() <= vllm_labels.items()
    (rule,) = admit["ingress"]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "gateway"}
    assert peer["podSelector"]["matchLabels"].items() <= gateway_labels.items()
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    own = k8s_object(prod_plan, NETPOL, "gateway")["spec"]
    assert [p["ipBlock"]["cidr"] for p in own["ingress"][0]["from"]] == ["10.30.0.0/16"]
    (to_endpoints,) = [e for e in own["egress"] if e["ports"] == rule["ports"]]
    assert [t["podSelector"]["matchLabels"] for t in to_endpoints["to"]] == [
        admit["podSelector"]["matchLabels"]
    ]


# --------------------------------------------------------------------------- config checks


def _parse(stack: str, change: Callable[[dict[str, Any]], None]):
    raw = copy.deepcopy(raw_config(stack))
    change(raw)
    return parse_stack_config(raw, project="llmcloud", stack=stack)


def test_a_team_model_that_no_endpoint_serves_is_refused_with_its_key():
    def typo(raw):
        raw["llmcloud:gateway"]["teams"][0]["models"] = ["meta-llama/Llama-3.1-70B"]

    with pytest.raises(ConfigError, match=r"gateway.teams\[0\].models\[0\].*not a served model"):
        gwconfig.check(_parse("prod", typo))


def test_the_gateway_namespace_must_be_a_gateway_namespace():
    def serving_ns(raw):
        raw["llmcloud:gateway"]["namespace"] = "serving"

    with pytest.raises(ConfigError, match=r"gateway.namespace = 'serving'.*purpose: gateway"):
        gwconfig.check(_parse("prod", serving_ns))


def test_a_gateway_without_certificate_or_domain_is_refused():
    def plain(raw):
        raw["llmcloud:gateway"].pop("certificate_arn")
        raw["llmcloud:gateway"].pop("domain")

    with pytest.raises(ConfigError, match=r"llmcloud:gateway.*TLS only"):
        _parse("prod", plain)


# --------------------------------------------------------------------------- rules


def findings(plan: Plan, rule: str, environment: str = "prod") -> list[Any]:
    return evaluate_policies(plan, PolicySettings(environment=environment), only=[rule])


@pytest.mark.parametrize("stack", STACKS)
def test_the_shipped_stacks_pass_the_gateway_rules(stack, stack_report):
    plan = stack_report(stack).plan
    for rule in ("serving-through-gateway", "gateway-listener-tls", "gateway-team-limits"):
        assert findings(plan, rule) == [], rule


def test_an_endpoint_opened_to_another_namespace_or_range_is_reachable_around_the_gateway(
    prod_plan,
):
    def open_up(r: Resource) -> Resource:
        if r.type == NETPOL and r.inputs["metadata"]["name"] == "llama-70b":
            r.inputs["spec"]["ingress"].append(
                {"from": [{"ipBlock": {"cidr": "10.40.0.0/16"}}], "ports": [{"port": 8000}]}
            )
        if r.type == NETPOL and r.inputs["metadata"]["name"] == "allow-from-namespaces":
            peer = r.inputs["spec"]["ingress"][0]["from"][0]
            peer["namespaceSelector"]["matchLabels"] = {"kubernetes.io/metadata.name": "training"}
        return r

    messages = [v.message for v in findings(mutated(prod_plan, open_up), "serving-through-gateway")]
    assert any("admits address range 10.40.0.0/16" in m for m in messages)
    assert any("allow-from-namespaces" in m and "namespace(s) training" in m for m in messages)


def test_an_endpoint_with_its_own_load_balancer_or_no_gateway_is_flagged(prod_plan):
    def own_nlb(r: Resource) -> Resource:
        if r.type == SERVICE and r.inputs["metadata"]["namespace"] == "serving":
            r.inputs["spec"]["type"] = "LoadBalancer"
        return r

    (v,) = findings(mutated(prod_plan, own_nlb), "serving-through-gateway")
    assert "own LoadBalancer Service" in v.message and v.enforcement == "mandatory"

    def no_gateway(r: Resource) -> Resource | None:
        labels = ((r.inputs.get("spec") or {}).get("template") or {}).get("metadata", {})
        if r.type == DEPLOYMENT and "llmcloud-gateway" in json.dumps(labels):
            return None
        return r

    (v,) = findings(mutated(prod_plan, no_gateway), "serving-through-gateway")
    assert "no model gateway in front of it" in v.message


def test_a_plain_http_port_on_the_gateway_is_flagged(prod_plan):
    def plain_port(r: Resource) -> Resource:
        if r.type == SERVICE and r.inputs["metadata"]["name"] == "gateway":
            r.inputs["spec"]["ports"].append({"name": "http", "port": 80, "targetPort": "http"})
        return r

    (v,) = findings(mutated(prod_plan, plain_port), "gateway-listener-tls")
    assert "port 80 without TLS" in v.message


def test_a_team_without_limits_fails_prod_and_is_advisory_elsewhere(prod_plan):
    def unlimited(r: Resource) -> Resource:
        if r.type == CONFIG_MAP and r.inputs["metadata"]["name"] == "gateway-config":
            annotations = r.inputs["metadata"]["annotations"]
            teams = json.loads(annotations["llmcloud.io/teams"])
            teams[1]["tpm"] = None
            annotations["llmcloud.io/teams"] = json.dumps(teams)
        return r

    plan = mutated(prod_plan, unlimited)
    (v,) = findings(plan, "gateway-team-limits", "prod")
    assert "'product' has no tpm limit" in v.message and v.enforcement == "mandatory"
    (v,) = findings(plan, "gateway-team-limits", "staging")
    assert v.enforcement == "advisory"


def test_a_new_gateway_program_rolls_the_pods(prod_plan):
    import hashlib

    from workloads.gateway.component import PROGRAM, PROGRAM_ANNOTATION

    program = k8s_object(prod_plan, CONFIG_MAP, "gateway-program")["data"]
    template = k8s_object(prod_plan, DEPLOYMENT, "gateway")["spec"]["template"]
    assert program["server.py"] == PROGRAM.read_text()
    digest = hashlib.sha256((program["server.py"] + program["fluent-bit.conf"]).encode())
    assert template["metadata"]["annotations"][PROGRAM_ANNOTATION] == digest.hexdigest()


def test_plan_exits_2_naming_the_key_of_a_team_model_nobody_serves(tmp_path):
    from typer.testing import CliRunner

    from infra.cli import app

    def typo(raw: dict[str, Any]) -> None:
        raw["llmcloud:gateway"]["teams"][0]["models"] = ["Qwen/Qwen2.5-1.5B"]

    project = copy_project_with(tmp_path / "p", "dev", typo)
    (project / ".venv").symlink_to(ROOT / ".venv")
    result = CliRunner().invoke(app, ["plan", "--stack", "dev", "--project", str(project)])
    assert result.exit_code == 2
    assert "llmcloud:gateway.teams[0].models[0] = 'Qwen/Qwen2.5-1.5B': not a served model" in (
        result.output
    )
    assert "Traceback" not in result.output


def test_the_usage_query_is_saved_with_the_audit_log_group_and_shown_in_the_readme(prod_plan):
    (query,) = prod_plan.by_type("aws:cloudwatch/queryDefinition:QueryDefinition")
    assert query.inputs["queryString"] == gwconfig.USAGE_QUERY
    assert query.inputs["logGroupNames"] == ["/llmcloud/llm-prod/gateway/access"]
    readme = (ROOT / "README.md").read_text()
    assert "\n".join("    " + line for line in gwconfig.USAGE_QUERY.splitlines()) in readme
