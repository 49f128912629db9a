"""`llmcloud plan` on Pulumi programs written the way people write them outside this project:
computed outputs read in `apply`, lookups feeding other resources, awsx and pulumi-eks
components. None of them is llmcloud's own program."""

from __future__ import annotations

import base64
import json

import pytest

SERVICE_HOSTNAME = """
import pulumi, pulumi_kubernetes as k8s
app = k8s.apps.v1.Deployment("app", spec={
    "selector": {"matchLabels": {"app": "web"}},
    "template": {"metadata": {"labels": {"app": "web"}},
                 "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}})
svc = k8s.core.v1.Service("web", spec={"type": "LoadBalancer", "selector": {"app": "web"},
                                        "ports": [{"port": 80}]})
pulumi.export("url", svc.status.apply(lambda s: f"http://{s.load_balancer.ingress[0].hostname}"))
pulumi.export("name", app.metadata.apply(lambda m: m.name))
pulumi.export("ready", app.status.apply(lambda s: s.ready_replicas))
"""


def test_a_load_balancer_services_hostname_is_there_for_apply(plan_program):
    plan = plan_program(SERVICE_HOSTNAME)
    # The ingress of a LoadBalancer Service on EKS is the ELB's DNS name in the stack's region.
    assert plan.outputs["url"].startswith("http://")
    assert plan.outputs["url"].endswith(".elb.us-east-1.amazonaws.com")
    assert plan.outputs["name"]
    assert isinstance(plan.outputs["ready"], int)


LOOKUPS = """
import base64, json
import pulumi, pulumi_aws as aws
vpc = aws.ec2.get_vpc(default=True)
subnets = aws.ec2.get_subnets(filters=[{"name": "vpc-id", "values": [vpc.id]}])
sg = aws.ec2.SecurityGroup("web", vpc_id=vpc.id, ingress=[{
    "protocol": "tcp", "from_port": 80, "to_port": 80, "cidr_blocks": [vpc.cidr_block]}])
lb = aws.lb.LoadBalancer("web", subnets=subnets.ids, security_groups=[sg.id])
ami = aws.ec2.get_ami(most_recent=True, owners=["amazon"],
                      filters=[{"name": "name", "values": ["al2023-ami-*"]}])
aws.ec2.Instance("web", ami=ami.id, instance_type="t3.micro", subnet_id=subnets.ids[0],
                 vpc_security_group_ids=[sg.id])
creds = aws.ecr.get_credentials(registry_id="210987654321")
user, password = base64.b64decode(creds.authorization_token).decode().split(":")
pulumi.export("registry", creds.proxy_endpoint)
pulumi.export("user", user)
pulumi.export("dns", lb.dns_name)
pulumi.export("zone", lb.zone_id)
"""


def test_lookups_answer_their_declared_types_and_feed_other_resources(plan_program):
    plan = plan_program(LOOKUPS, {"aws:region": "eu-west-1"})
    sg = plan.by_type("aws:ec2/securityGroup:SecurityGroup")[0]
    lb = plan.by_type("aws:lb/loadBalancer:LoadBalancer")[0]
    instance = plan.by_type("aws:ec2/instance:Instance")[0]
    assert sg.inputs["vpcId"].startswith("vpc-")
    assert sg.inputs["ingress"][0]["cidrBlocks"][0].count("/") == 1
    assert lb.inputs["subnets"] and all(s.startswith("subnet-") for s in lb.inputs["subnets"])
    assert instance.inputs["ami"].startswith("ami-")
    assert instance.inputs["subnetId"] == lb.inputs["subnets"][0]
    # ECR's token is base64("AWS:<password>"), its endpoint the registry's in the region.
    assert plan.outputs["user"] == "AWS"
    assert plan.outputs["registry"] == "https://210987654321.dkr.ecr.eu-west-1.amazonaws.com"
    assert plan.outputs["dns"].endswith(".eu-west-1.elb.amazonaws.com")
    assert plan.outputs["zone"]
    synthesized = {n["token"] for n in plan.notices if n["kind"] == "lookup"}
    assert {
        "aws:ec2/getVpc:getVpc",
        "aws:ec2/getSubnets:getSubnets",
        "aws:ec2/getAmi:getAmi",
        "aws:ecr/getCredentials:getCredentials",
    } <= synthesized


def test_output_only_fields_nested_in_given_inputs_are_filled(plan_program):
    program = """
import pulumi, pulumi_aws as aws
role = aws.iam.Role("eks", assume_role_policy="{}")
cluster = aws.eks.Cluster("c", role_arn=role.arn, vpc_config={"subnet_ids": ["subnet-1"]},
                          tags={"team": "ml"})
pulumi.export("sg", cluster.vpc_config.cluster_security_group_id)
pulumi.export("issuer", cluster.identities[0].oidcs[0].issuer)
pulumi.export("tags_all", cluster.tags_all)
pulumi.export("role", role.arn)
"""
    plan = plan_program(program, {"aws:region": "us-west-2"})
    assert plan.outputs["sg"].startswith("sg-")
    assert plan.outputs["issuer"].startswith("https://oidc.eks.us-west-2.amazonaws.com/id/")
    assert plan.outputs["tags_all"] == {"team": "ml"}
    assert plan.outputs["role"].startswith("arn:aws:iam::123456789012:role/eks-")
    # The recorded inputs stay what the program gave: nothing synthesized leaks into them.
    cluster = plan.by_type("aws:eks/cluster:Cluster")[0]
    assert cluster.inputs["vpcConfig"] == {"subnetIds": ["subnet-1"]}


AWSX_VPC = """
import pulumi, pulumi_awsx as awsx
vpc = awsx.ec2.Vpc("vpc", cidr_block="10.0.0.0/16", number_of_availability_zones=2,
    nat_gateways=awsx.ec2.NatGatewayConfigurationArgs(strategy=awsx.ec2.NatGatewayStrategy.SINGLE))
pulumi.export("vpc_id", vpc.vpc_id)
pulumi.export("private", vpc.private_subnet_ids)
pulumi.export("private_ids", vpc.private_subnets.apply(lambda subnets: [s.id for s in subnets]))
pulumi.export("nat", vpc.nat_gateways.apply(lambda gws: [g.id for g in gws]))
pulumi.export("vpc_ref_id", vpc.vpc.id)
"""


def test_an_awsx_vpc_is_planned_with_its_outputs_and_named_as_not_evaluated(plan_program):
    pytest.importorskip("pulumi_awsx")
    plan = plan_program(AWSX_VPC)
    component = plan.by_type("awsx:ec2:Vpc")[0]
    assert component.remote
    assert component.inputs["natGateways"] == {"strategy": "Single"}  # recorded as given
    # Resource references the SDK resolves: subnet ids agree with the subnet objects, and
    # the component spreads over the zones it was given.
    assert plan.outputs["vpc_id"].startswith("vpc-")
    assert plan.outputs["vpc_id"] == plan.outputs["vpc_ref_id"]
    assert plan.outputs["private"] == plan.outputs["private_ids"]
    assert len(plan.outputs["private"]) == 2
    assert plan.outputs["nat"][0].startswith("nat-")
    (notice,) = [n for n in plan.notices if n["kind"] == "remote-component"]
    assert notice["urn"] == component.urn
    assert "children not evaluated offline" in notice["message"]
    # Its children are no planned resources (the plan does not invent their inputs).
    assert not plan.by_type("aws:ec2/vpc:Vpc")


EKS_CLUSTER = """
import json
import pulumi, pulumi_eks as eks, pulumi_kubernetes as k8s
cluster = eks.Cluster("ml", instance_type="m5.large", desired_capacity=2, min_size=1,
                      max_size=3)
provider = k8s.Provider("k8s", kubeconfig=cluster.kubeconfig.apply(json.dumps))
k8s.core.v1.Namespace("ml", opts=pulumi.ResourceOptions(provider=provider))
pulumi.export("server", cluster.kubeconfig.apply(lambda k: k["clusters"][0]["cluster"]["server"]))
pulumi.export("endpoint", cluster.eks_cluster.endpoint)
pulumi.export("roles", cluster.instance_roles.apply(lambda roles: [r.arn for r in roles]))
pulumi.export("oidc", cluster.core.oidc_provider.arn)
"""


def test_a_pulumi_eks_cluster_has_a_kubeconfig_for_its_own_endpoint(plan_program):
    pytest.importorskip("pulumi_eks")
    plan = plan_program(EKS_CLUSTER, {"aws:region": "us-west-2"})
    assert plan.outputs["server"] == plan.outputs["endpoint"]
    assert plan.outputs["endpoint"].endswith(".us-west-2.eks.amazonaws.com")
    assert plan.outputs["roles"][0].startswith("arn:aws:iam::123456789012:role/")
    assert plan.outputs["oidc"].startswith(
        "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-west-2.amazonaws.com/id/"
    )
    provider = plan.by_type("pulumi:providers:kubernetes")[0]
    kubeconfig = json.loads(provider.inputs["kubeconfig"])
    user = kubeconfig["users"][0]["user"]["exec"]
    assert user["command"] == "aws" and user["args"][:2] == ["eks", "get-token"]
    assert base64.b64decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"])
    assert any(n["kind"] == "remote-component" for n in plan.notices)


APPLY_BUG = """
import pulumi, pulumi_aws as aws
from helpers import port_of

bucket = aws.s3.Bucket("site")
pulumi.export("first", bucket.bucket.apply(port_of))
# fails too, one step later: the report names the first failure
pulumi.export("second", bucket.bucket.apply(str.upper).apply(lambda name: name["no"]))
"""
HELPERS = """
def port_of(name):
    return int(name.rsplit("-", 1)[1])
"""


def test_an_error_in_an_apply_callback_names_the_programs_file_line_and_text(tmp_path):
    from typer.testing import CliRunner

    from infra.cli import app
    from tests.conftest import write_project

    project = write_project(tmp_path / "p", APPLY_BUG)
    (project / "helpers.py").write_text(HELPERS.lstrip())
    runner = CliRunner()
    result = runner.invoke(app, ["plan", "--project", str(project)])
    assert result.exit_code == 2
    # The first failure, at the program's own frame (a module of the project), not the SDK's.
    assert "the program raised ValueError: invalid literal for int()" in result.output
    assert 'at helpers.py:2: return int(name.rsplit("-", 1)[1])' in result.output
    assert "TypeError" not in result.output and "Traceback" not in result.output
    assert "--debug" in result.output
    debug = runner.invoke(app, ["plan", "--project", str(project), "--debug"])
    assert debug.exit_code == 2
    assert "Traceback (most recent call last)" in debug.output
    assert "raised in an Output.apply callback" in debug.output
    assert f'File "{project / "helpers.py"}", line 2, in port_of' in debug.output


def test_rules_that_would_check_a_remote_components_children_are_named(tmp_path):
    pytest.importorskip("pulumi_eks")
    from infra.plan.run import run_plan
    from tests.conftest import write_project

    report = run_plan(write_project(tmp_path / "p", EKS_CLUSTER), "dev")
    (notice,) = [n for n in report.to_json()["notices"] if n["kind"] == "remote-component"]
    assert "aws:eks/cluster:Cluster" in notice["child_types"]
    # The EKS rules never saw the cluster pulumi-eks creates: the report says so.
    assert "eks-private-endpoint" in notice["rules_not_checked"]
    assert "eks-private-endpoint" in notice["message"]
    assert not any(v.policy == "eks-private-endpoint" for v in report.violations)


# ------------------------------------------------------------------ secrets
# A stack file encrypted the way the Pulumi CLI's passphrase provider writes one
# (pulumi/pulumi pkg/secrets/passphrase/manager.go, sdk/go/common/resource/config/crypt.go),
# with `cryptography` directly, independent of the plan's own decrypter.

PASSPHRASE = "correct horse battery staple"
SECRETS_PROGRAM = """
import json
import pulumi, pulumi_aws as aws
config = pulumi.Config()
db = json.loads(config.require("db"))
key = config.require_secret("deployKey")
pulumi.export("user", db["user"])
pulumi.export("key_header", key.apply(lambda k: k.splitlines()[0]))
secret = aws.secretsmanager.Secret("db")
# read without require_secret (the SDK only warns): the value must not reach the plan in clear
aws.secretsmanager.SecretVersion("db", secret_id=secret.id, secret_string=config.require("db"))
"""


def _encrypted_stack(salt: bytes, values: dict[str, str]) -> dict:
    import os

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    key = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=1_000_000).derive(
        PASSPHRASE.encode()
    )

    def encrypt(text: str) -> str:
        nonce = os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, text.encode(), None)
        return f"v1:{base64.b64encode(nonce).decode()}:{base64.b64encode(sealed).decode()}"

    return {
        "encryptionsalt": f"v1:{base64.b64encode(salt).decode()}:{encrypt('pulumi')}",
        "config": {"aws:region": "us-east-1"}
        | {k: {"secure": encrypt(v)} for k, v in values.items()},
    }


@pytest.fixture(scope="module")
def encrypted_stack() -> dict:
    return _encrypted_stack(
        b"8bytesal",
        {
            "demo:db": json.dumps({"user": "app", "password": "s3cret"}),
            "demo:deployKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n",
        },
    )


def _secret_project(tmp_path, stack_doc: dict):
    import yaml

    from tests.conftest import write_project

    project = write_project(tmp_path / "p", SECRETS_PROGRAM)
    (project / "stacks" / "Pulumi.dev.yaml").write_text(yaml.safe_dump(stack_doc))
    return project


def test_secrets_of_a_passphrase_stack_are_decrypted_as_the_cli_does(
    tmp_path, monkeypatch, encrypted_stack
):
    from infra.plan.engine import evaluate

    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", PASSPHRASE)
    plan = evaluate(_secret_project(tmp_path, encrypted_stack), "dev")
    assert plan.outputs["user"] == "app"
    assert plan.outputs["key_header"] == "[secret]"  # still a secret output, masked in the report
    assert "key_header" in plan.secret_outputs
    assert not [n for n in plan.notices if n["kind"] == "secret"]
    version = plan.by_type("aws:secretsmanager/secretVersion:SecretVersion")[0]
    assert version.inputs["secretString"] == "[secret]"
    assert "s3cret" not in json.dumps([r.to_json() for r in plan.resources])


def test_the_passphrase_file_works_and_a_wrong_passphrase_is_a_clear_error(
    tmp_path, monkeypatch, encrypted_stack
):
    from infra.plan.engine import PlanError, evaluate

    project = _secret_project(tmp_path, encrypted_stack)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    (tmp_path / "phrase").write_text(PASSPHRASE + "\n")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE_FILE", str(tmp_path / "phrase"))
    assert evaluate(project, "dev").outputs["user"] == "app"
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "wrong")
    with pytest.raises(PlanError, match=r"Pulumi\.dev\.yaml: incorrect passphrase"):
        evaluate(project, "dev")


def test_without_a_passphrase_the_placeholder_stays_and_each_key_is_named(
    tmp_path, monkeypatch, encrypted_stack
):
    from infra.plan.engine import evaluate

    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    project = _secret_project(tmp_path, encrypted_stack)
    # The program parses the secret, so it fails on the placeholder; PULUMI_CONFIG supplies
    # the value, as it would to the program under the CLI.
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"demo:db": '{"user": "env"}'}))
    plan = evaluate(project, "dev")
    assert plan.outputs["user"] == "env"
    secrets = [n for n in plan.notices if n["kind"] == "secret"]
    assert [n["key"] for n in secrets] == ["demo:deployKey"]
    assert "PULUMI_CONFIG_PASSPHRASE" in secrets[0]["message"]


# ------------------------------------------------------------------ a foreign project's policy settings

WEBSITE = """
import pulumi, pulumi_aws as aws
bucket = aws.s3.Bucket("site", tags={"owner": "web"})
aws.s3.BucketPublicAccessBlock("site", bucket=bucket.id, block_public_acls=False,
    block_public_policy=False, ignore_public_acls=False, restrict_public_buckets=False)
aws.s3.BucketObject("index", bucket=bucket.id, content="hi", key="index.html")
aws.ec2.SecurityGroup("ssh", ingress=[{"protocol": "tcp", "from_port": 22, "to_port": 22,
                                       "cidr_blocks": ["0.0.0.0/0"]}])
"""


def _findings(report) -> dict[str, str]:
    return {v.policy: v.enforcement for v in report.violations}


def test_a_foreign_project_gets_each_rules_default_and_no_required_tags(tmp_path):
    from infra.plan.run import run_plan
    from tests.conftest import write_project

    report = run_plan(write_project(tmp_path / "p", WEBSITE), "dev")
    found = _findings(report)
    assert "tags-required" not in found  # llmcloud's team / cost-center are not demanded
    # Each rule's own default: high and critical findings mandatory, the others advisory.
    assert found["s3-public-access-block"] == "mandatory"  # critical
    assert found["s3-versioning"] == "advisory"  # medium
    assert report.exit_code == 1


def test_a_policy_pack_config_sets_levels_all_and_rule_properties(tmp_path):
    from typer.testing import CliRunner

    from infra.cli import app
    from tests.conftest import write_project

    project = write_project(tmp_path / "p", WEBSITE)
    config = tmp_path / "policy-config.json"
    config.write_text(
        json.dumps(
            {
                "all": "advisory",
                "sg-no-open-ingress": {"enforcementLevel": "mandatory"},
                "s3-versioning": "disabled",
                "tags-required": {"requiredTags": ["owner", "env"]},
            }
        )
    )
    out = tmp_path / "plan.json"
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["plan", "--project", str(project), "--policy-config", str(config), "--format", "json",
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # the one rule left mandatory fires
    doc = json.loads(out.read_text())
    found = {v["policy"]: v for v in doc["violations"] if v["policy"] != "tags-required"}
    assert found.pop("sg-no-open-ingress")["enforcement"] == "mandatory"
    assert "s3-versioning" not in found
    assert {v["enforcement"] for v in found.values()} == {"advisory"}
    # The rule's own config property: the bucket has `owner` but not `env`.
    tags = {
        v["urn"].rsplit("::", 1)[-1] + " " + v["urn"].split("$")[-1].split("::")[0]: v["message"]
        for v in doc["violations"]
        if v["policy"] == "tags-required"
    }
    assert "tag(s) env " in tags["site aws:s3/bucket:Bucket"]
    assert "tag(s) owner, env " in tags["ssh aws:ec2/securityGroup:SecurityGroup"]

    config.write_text(json.dumps({"s3-versionning": "advisory"}))
    bad = runner.invoke(app, ["plan", "--project", str(project), "--policy-config", str(config)])
    assert bad.exit_code == 2
    assert "'s3-versionning' is not a rule of the llmcloud pack; did you mean 's3-versioning'" in (
        bad.output
    )
    config.write_text(json.dumps({"all": "strict"}))
    bad = runner.invoke(app, ["plan", "--project", str(project), "--policy-config", str(config)])
    assert bad.exit_code == 2 and "all = 'strict' is not an enforcement level" in bad.output


def test_llmcloud_policies_in_a_foreign_stack_need_no_other_llmcloud_config(tmp_path):
    from infra.plan.run import run_plan
    from tests.conftest import write_project

    project = write_project(
        tmp_path / "p",
        WEBSITE,
        {"llmcloud:policies": {"enforcement": "advisory", "required_tags": ["env"]}},
    )
    report = run_plan(project, "dev")
    assert set(_findings(report).values()) == {"advisory"}
    assert report.exit_code == 0
    assert any(v.policy == "tags-required" and "env" in v.message for v in report.violations)


# ------------------------------------------------------------------ the project's own virtualenv


def test_a_project_virtualenv_without_llmcloud_is_named_with_how_to_install_it(tmp_path):
    import yaml

    from infra.plan.engine import PlanError, evaluate
    from tests.conftest import write_project

    project = write_project(tmp_path / "p", "import pulumi_random\n")
    (project / "Pulumi.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "demo",
                "runtime": {
                    "name": "python",
                    "options": {"toolchain": "pip", "virtualenv": "venv"},
                },
                "stackConfigDir": "stacks",
            }
        )
    )
    venv = project / "venv"
    # not created yet (`pulumi install` would): planned with this interpreter, and said so
    (notice,) = [n for n in evaluate(project, "dev").notices if n["kind"] == "virtualenv"]
    assert "does not exist yet (`pulumi install` creates it)" in notice["message"]
    site = venv / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    with pytest.raises(PlanError) as info:
        evaluate(project, "dev")
    assert "which has no llmcloud" in str(info.value)
    assert f"{venv}/bin/pip install " in str(info.value)
    (site / "llmcloud-0.1.0.dist-info").mkdir()
    with pytest.raises(PlanError, match=r"run that environment's llmcloud.*venv/bin/llmcloud plan"):
        evaluate(project, "dev")


def test_table_and_markdown_show_the_region_and_the_offline_notices(tmp_path):
    from rich.console import Console

    from infra.plan.report import render_markdown, render_table
    from infra.plan.run import run_plan
    from tests.conftest import write_project

    program = (
        "import pulumi, pulumi_aws as aws\npulumi.export('vpc', aws.ec2.get_vpc(default=True).id)\n"
    )
    report = run_plan(write_project(tmp_path / "p", program, {"aws:region": "eu-west-1"}), "dev")
    console = Console(record=True, width=200)
    render_table(report, console)
    text = console.export_text()
    assert "region eu-west-1" in text
    assert "offline: 1 × aws:ec2/getVpc:getVpc answered with synthesized data" in text
    assert "aws:ec2/getVpc:getVpc answered with synthesized data" in render_markdown(report)


def test_a_helm_v4_chart_is_planned_and_the_kubernetes_rules_it_hides_are_named(tmp_path):
    from infra.plan.run import run_plan
    from tests.conftest import write_project

    program = """
import pulumi, pulumi_kubernetes as k8s
chart = k8s.helm.v4.Chart("nginx", chart="oci://registry-1.docker.io/bitnamicharts/nginx",
                          version="18.1.0", values={"service": {"type": "ClusterIP"}})
pulumi.export("objects", chart.resources.apply(len))
"""
    report = run_plan(write_project(tmp_path / "p", program), "dev")
    assert report.plan.outputs["objects"] == 0  # an untyped list: nothing invented
    (notice,) = [n for n in report.plan.notices if n["kind"] == "remote-component"]
    assert notice["token"] == "kubernetes:helm.sh/v4:Chart"
    assert {"k8s-no-privileged", "k8s-image-pinned"} <= set(notice["rules_not_checked"])
    assert "any resource of its package" in notice["message"]
