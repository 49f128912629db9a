"""Each rule of the policy pack on small Pulumi programs planned through the real program path
(the SDK under mocks): one resource that passes and one that violates, per rule."""

from __future__ import annotations

import textwrap
from datetime import date

import pytest

from infra.plan.engine import Plan, evaluate
from infra.plan.policy_runner import evaluate_policies
from policies.rules.base import PolicySettings, Waiver, resource_name

PRELUDE = """
import json
import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

provider = aws.Provider(
    "aws",
    region="us-east-1",
    default_tags=aws.ProviderDefaultTagsArgs(tags={"team": "ml", "cost-center": "research"}),
)
opts = pulumi.ResourceOptions(provider=provider)
key = aws.kms.Key("key", enable_key_rotation=True, opts=opts)
"""


def flagged(plan: Plan, rule: str, settings: PolicySettings | None = None) -> dict[str, str]:
    """resource name -> messages of the findings of one rule ("(stack)" for stack findings)."""
    out: dict[str, str] = {}
    for v in evaluate_policies(plan, settings or PolicySettings(), only=[rule]):
        name = resource_name(v.urn) if v.urn else "(stack)"
        out[name] = (out.get(name, "") + "\n" + v.message).strip()
    return out


@pytest.fixture(scope="module")
def plan_once(tmp_path_factory):
    """Plan a program once per module (several rules read the same area program)."""
    cache: dict[str, Plan] = {}

    def run(source: str) -> Plan:
        if source not in cache:
            project = tmp_path_factory.mktemp("program")
            (project / "Pulumi.yaml").write_text("name: demo\nruntime: python\n")
            (project / "__main__.py").write_text(textwrap.dedent(source))
            (project / "Pulumi.dev.yaml").write_text("config:\n  aws:region: us-east-1\n")
            cache[source] = evaluate(project, "dev")
        return cache[source]

    return run


# ----------------------------------------------------------------------------- S3

S3_PROGRAM = (
    PRELUDE
    + """
def deny_http(bucket):
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [bucket.arn, pulumi.Output.concat(bucket.arn, "/*")],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})

def complete(name, algorithm="aws:kms", key_id=key.arn, versioned="Enabled", logged=True,
             blocked=True, tls=True):
    bucket = aws.s3.Bucket(name, opts=opts)
    sse = {"sse_algorithm": algorithm}
    if key_id is not None:
        sse["kms_master_key_id"] = key_id
    aws.s3.BucketServerSideEncryptionConfiguration(
        f"{name}-sse", bucket=bucket.id,
        rules=[{"apply_server_side_encryption_by_default": sse}], opts=opts)
    aws.s3.BucketPublicAccessBlock(
        f"{name}-pab", bucket=bucket.id, block_public_acls=True, block_public_policy=blocked,
        ignore_public_acls=True, restrict_public_buckets=True, opts=opts)
    if tls:
        aws.s3.BucketPolicy(f"{name}-policy", bucket=bucket.id, policy=deny_http(bucket), opts=opts)
    else:
        aws.s3.BucketPolicy(f"{name}-policy", bucket=bucket.id, policy=bucket.arn.apply(
            lambda arn: json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                "Action": "s3:GetObject", "Resource": arn + "/*"}]})), opts=opts)
    if versioned:
        aws.s3.BucketVersioning(f"{name}-versioning", bucket=bucket.id,
            versioning_configuration={"status": versioned}, opts=opts)
    if logged:
        aws.s3.BucketLogging(f"{name}-logging", bucket=bucket.id, target_bucket=logs.id,
            target_prefix=f"{name}/", opts=opts)
    return bucket

logs = complete("logs", algorithm="AES256", key_id=None, versioned=None, logged=False)
complete("good")
complete("sse-s3", algorithm="AES256", key_id=None)
complete("aws-managed-key", key_id=None)
complete("half-blocked", blocked=False)
complete("no-tls", tls=False)
complete("suspended", versioned="Suspended")
complete("unlogged", logged=False)
aws.s3.Bucket("bare", opts=opts)
"""
)


@pytest.fixture
def s3_plan(plan_once) -> Plan:
    return plan_once(S3_PROGRAM)


def test_s3_kms_encryption_requires_a_customer_key_except_on_log_buckets(s3_plan):
    found = flagged(s3_plan, "s3-bucket-kms-encryption")
    assert set(found) == {"sse-s3", "aws-managed-key", "bare"}
    assert "'AES256'" in found["sse-s3"]
    assert "AWS managed key" in found["aws-managed-key"]
    assert "no default encryption" in found["bare"]


def test_s3_public_access_block_needs_all_four_settings(s3_plan):
    found = flagged(s3_plan, "s3-public-access-block")
    assert set(found) == {"half-blocked", "bare"}
    assert "blockPublicPolicy" in found["half-blocked"]


def test_s3_account_level_public_access_block_covers_every_bucket(plan_program):
    plan = plan_program(
        PRELUDE
        + """
aws.s3.AccountPublicAccessBlock("account", block_public_acls=True, block_public_policy=True,
    ignore_public_acls=True, restrict_public_buckets=True, opts=opts)
aws.s3.Bucket("bare", opts=opts)
"""
    )
    assert flagged(plan, "s3-public-access-block") == {}


def test_s3_tls_only_needs_a_deny_on_insecure_transport(s3_plan):
    assert set(flagged(s3_plan, "s3-tls-only")) == {"no-tls", "bare"}


def test_s3_versioning_on_data_buckets_not_log_buckets(s3_plan):
    assert set(flagged(s3_plan, "s3-versioning")) == {"suspended", "bare"}


def test_s3_access_logging_on_data_buckets_not_log_buckets(s3_plan):
    assert set(flagged(s3_plan, "s3-access-logging")) == {"unlogged", "bare"}


def test_s3_inline_bucket_arguments_count(plan_program):
    plan = plan_program(
        PRELUDE
        + """
aws.s3.Bucket("inline", versioning={"enabled": True},
    server_side_encryption_configuration={"rule": {"apply_server_side_encryption_by_default": {
        "sse_algorithm": "aws:kms", "kms_master_key_id": key.arn}}}, opts=opts)
"""
    )
    assert flagged(plan, "s3-versioning") == {}
    assert flagged(plan, "s3-bucket-kms-encryption") == {}


# ----------------------------------------------------------------------------- KMS

KMS_PROGRAM = (
    PRELUDE
    + """
def key_policy(principal):
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "Root", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "Other", "Effect": "Allow", "Principal": {"AWS": principal},
         "Action": "kms:*", "Resource": "*"}]})

aws.kms.Key("no-rotation", enable_key_rotation=False, opts=opts)
aws.kms.Key("signing", customer_master_key_spec="ECC_NIST_P256", key_usage="SIGN_VERIFY", opts=opts)
aws.kms.Key("admin-grant", enable_key_rotation=True,
    policy=key_policy("arn:aws:iam::123456789012:role/security-admin"), opts=opts)
aws.kms.Key("workload-grant", enable_key_rotation=True,
    policy=key_policy("arn:aws:iam::123456789012:role/trainer"), opts=opts)
aws.kms.Key("use-only", enable_key_rotation=True, policy=json.dumps({"Statement": [
    {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:role/trainer"},
     "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*"}]}), opts=opts)
"""
)


def test_kms_key_rotation_on_symmetric_keys(plan_once):
    found = flagged(plan_once(KMS_PROGRAM), "kms-key-rotation")
    assert set(found) == {"no-rotation"}  # "key" rotates; asymmetric "signing" cannot


def test_kms_wildcard_grant_only_to_root_and_configured_admins(plan_once):
    plan = plan_once(KMS_PROGRAM)
    settings = PolicySettings(key_admin_arns=("arn:aws:iam::123456789012:role/security-admin",))
    found = flagged(plan, "kms-no-wildcard-grants", settings)
    assert set(found) == {"workload-grant"}
    assert "role/trainer" in found["workload-grant"]
    # without the admin in config, the admin's kms:* is a finding too
    assert set(flagged(plan, "kms-no-wildcard-grants")) == {"admin-grant", "workload-grant"}


# ----------------------------------------------------------------------------- EKS

EKS_PROGRAM = (
    PRELUDE
    + """
common = dict(role_arn="arn:aws:iam::123456789012:role/eks", opts=opts)
aws.eks.Cluster("good", version="1.33",
    vpc_config={"subnet_ids": ["subnet-1", "subnet-2"], "endpoint_private_access": True,
                "endpoint_public_access": False},
    encryption_config={"resources": ["secrets"], "provider": {"key_arn": key.arn}},
    enabled_cluster_log_types=["api", "audit", "authenticator"], **common)
aws.eks.Cluster("defaults", vpc_config={"subnet_ids": ["subnet-1", "subnet-2"]}, **common)
aws.eks.Cluster("allowlisted", version="1.28",
    vpc_config={"subnet_ids": ["subnet-1", "subnet-2"], "endpoint_private_access": True,
                "endpoint_public_access": True, "public_access_cidrs": ["203.0.113.0/24"]},
    enabled_cluster_log_types=["api"], **common)
"""
)


@pytest.fixture
def eks_plan(plan_once) -> Plan:
    return plan_once(EKS_PROGRAM)


def test_eks_secrets_encryption(eks_plan):
    assert set(flagged(eks_plan, "eks-secrets-encryption")) == {"defaults", "allowlisted"}


def test_eks_private_endpoint_flags_public_and_allowlisted_endpoints(eks_plan):
    found = flagged(eks_plan, "eks-private-endpoint")
    assert set(found) == {"defaults", "allowlisted"}
    assert "open to the internet" in found["defaults"]  # AWS defaults: public, no private
    assert "private endpoint access off" in found["defaults"]
    assert "restricted to 203.0.113.0/24" in found["allowlisted"]


def test_eks_control_plane_logging_needs_api_audit_authenticator(eks_plan):
    found = flagged(eks_plan, "eks-control-plane-logging")
    assert set(found) == {"defaults", "allowlisted"}
    assert "audit, authenticator" in found["allowlisted"]


def test_eks_supported_version(eks_plan):
    found = flagged(eks_plan, "eks-supported-version")
    assert set(found) == {"defaults", "allowlisted"}
    assert "1.28" in found["allowlisted"]
    assert "pins no Kubernetes version" in found["defaults"]


# ----------------------------------------------------------------------------- EC2

EC2_PROGRAM = (
    PRELUDE
    + """
aws.ec2.LaunchTemplate("good",
    metadata_options={"http_tokens": "required", "http_put_response_hop_limit": 1},
    block_device_mappings=[{"device_name": "/dev/xvda", "ebs": {
        "encrypted": "true", "kms_key_id": key.arn, "volume_size": 200, "volume_type": "gp3"}}],
    network_interfaces=[{"associate_public_ip_address": "false", "device_index": 0}], opts=opts)
aws.ec2.LaunchTemplate("bad",
    metadata_options={"http_tokens": "optional"},
    block_device_mappings=[{"device_name": "/dev/xvda", "ebs": {"encrypted": "false"}}],
    network_interfaces=[{"associate_public_ip_address": "true", "device_index": 0}], opts=opts)
aws.ec2.LaunchTemplate("unmapped", metadata_options={"http_tokens": "required"}, opts=opts)
aws.ec2.Instance("public", ami="ami-123", instance_type="m7i.large",
    associate_public_ip_address=True, metadata_options={"http_tokens": "required"},
    root_block_device={"encrypted": True, "kms_key_id": key.arn}, opts=opts)
aws.ebs.Volume("aws-key", availability_zone="us-east-1a", size=10, encrypted=True, opts=opts)
aws.ebs.Volume("cmk", availability_zone="us-east-1a", size=10, encrypted=True,
    kms_key_id=key.arn, opts=opts)
"""
)


@pytest.fixture
def ec2_plan(plan_once) -> Plan:
    return plan_once(EC2_PROGRAM)


def test_imdsv2_required_on_launch_templates_and_instances(ec2_plan):
    found = flagged(ec2_plan, "ec2-imdsv2-required")
    assert set(found) == {"bad"}
    assert "'optional'" in found["bad"]


def test_ebs_encrypted_with_customer_key(ec2_plan):
    found = flagged(ec2_plan, "ebs-encrypted")
    assert set(found) == {"bad", "unmapped", "aws-key"}
    assert "/dev/xvda is not encrypted" in found["bad"]
    assert "maps no EBS volume" in found["unmapped"]
    assert "AWS managed" in found["aws-key"]


def test_no_public_ip_on_nodes(ec2_plan):
    assert set(flagged(ec2_plan, "ec2-no-public-ip")) == {"bad", "public"}


def test_node_group_without_launch_template_has_unencrypted_root_volumes(plan_program):
    plan = plan_program(
        PRELUDE
        + """
aws.eks.NodeGroup("disk-size-only", cluster_name="c", node_role_arn="arn:aws:iam::1:role/n",
    subnet_ids=["subnet-1"], instance_types=["m7i.large"], disk_size=50,
    scaling_config={"min_size": 1, "max_size": 2, "desired_size": 1}, opts=opts)
lt = aws.ec2.LaunchTemplate("lt", metadata_options={"http_tokens": "required"},
    block_device_mappings=[{"device_name": "/dev/xvda",
        "ebs": {"encrypted": "true", "kms_key_id": key.arn}}], opts=opts)
aws.eks.NodeGroup("templated", cluster_name="c", node_role_arn="arn:aws:iam::1:role/n",
    subnet_ids=["subnet-1"], instance_types=["m7i.large"],
    launch_template={"id": lt.id, "version": lt.latest_version.apply(str)},
    scaling_config={"min_size": 1, "max_size": 2, "desired_size": 1}, opts=opts)
"""
    )
    assert set(flagged(plan, "ebs-encrypted")) == {"disk-size-only"}


# ----------------------------------------------------------------------------- security groups

SG_PROGRAM = (
    PRELUDE
    + """
vpc = aws.ec2.Vpc("vpc", cidr_block="10.0.0.0/16", opts=opts)
aws.ec2.SecurityGroup("inline-private", vpc_id=vpc.id, ingress=[{"protocol": "tcp",
    "from_port": 443, "to_port": 443, "cidr_blocks": ["10.0.0.0/16"]}], opts=opts)
aws.ec2.SecurityGroup("inline-ssh", vpc_id=vpc.id, ingress=[{"protocol": "tcp",
    "from_port": 22, "to_port": 22, "cidr_blocks": ["0.0.0.0/0"]}], opts=opts)
lb = aws.ec2.SecurityGroup("lb", vpc_id=vpc.id, opts=opts)
aws.vpc.SecurityGroupIngressRule("lb-https", security_group_id=lb.id, ip_protocol="tcp",
    from_port=443, to_port=443, cidr_ipv4="0.0.0.0/0", opts=opts)
aws.vpc.SecurityGroupIngressRule("lb-everything", security_group_id=lb.id, ip_protocol="-1",
    cidr_ipv6="::/0", opts=opts)
aws.ec2.SecurityGroupRule("legacy-rdp", type="ingress", security_group_id=lb.id,
    protocol="tcp", from_port=3389, to_port=3389, cidr_blocks=["0.0.0.0/0"], opts=opts)
aws.ec2.SecurityGroupRule("legacy-egress", type="egress", security_group_id=lb.id,
    protocol="-1", from_port=0, to_port=0, cidr_blocks=["0.0.0.0/0"], opts=opts)
"""
)


def test_sg_no_open_ingress_in_every_declaration_style(plan_once):
    found = flagged(plan_once(SG_PROGRAM), "sg-no-open-ingress")
    assert set(found) == {"inline-ssh", "lb-https", "lb-everything", "legacy-rdp"}
    assert "tcp 22" in found["inline-ssh"]
    assert "all protocols" in found["lb-everything"]


def test_sg_load_balancer_ports_may_be_open_when_configured(plan_once):
    settings = PolicySettings(public_ingress_ports=(443,))
    found = flagged(plan_once(SG_PROGRAM), "sg-no-open-ingress", settings)
    assert "lb-https" not in found
    assert {"inline-ssh", "lb-everything", "legacy-rdp"} <= set(found)


# ----------------------------------------------------------------------------- IAM

IAM_PROGRAM = (
    PRELUDE
    + """
def trust(principal):
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}]})

def doc(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})

pod = aws.iam.Role("pod-role", assume_role_policy=trust({"Service": "pods.eks.amazonaws.com"}),
    opts=opts)
deploy = aws.iam.Role("deploy-role", assume_role_policy=trust(
    {"Federated": "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"}),
    opts=opts)
aws.iam.RolePolicy("scoped", role=pod.name, policy=doc(
    {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::data/*"},
    {"Effect": "Allow", "Action": ["ec2:Describe*", "ecr:GetAuthorizationToken"], "Resource": "*"},
    {"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*",
     "Condition": {"StringEquals": {"aws:RequestTag/team": "ml"}}}), opts=opts)
aws.iam.RolePolicy("wild", role=pod.name, policy=doc(
    {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}), opts=opts)
aws.iam.Policy("not-action", policy=doc(
    {"Effect": "Allow", "NotAction": "iam:*", "Resource": "arn:aws:s3:::data"}), opts=opts)
aws.iam.RolePolicy("write-everywhere", role=pod.name, policy=doc(
    {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": "*"}), opts=opts)
aws.iam.RolePolicyAttachment("pod-admin", role=pod.name,
    policy_arn="arn:aws:iam::aws:policy/AdministratorAccess", opts=opts)
aws.iam.RolePolicyAttachment("pod-readonly", role=pod.name,
    policy_arn="arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess", opts=opts)
aws.iam.RolePolicyAttachment("deploy-admin", role=deploy.name,
    policy_arn="arn:aws:iam::aws:policy/AdministratorAccess", opts=opts)
aws.iam.Role("node-poweruser", assume_role_policy=trust({"Service": "ec2.amazonaws.com"}),
    managed_policy_arns=["arn:aws:iam::aws:policy/PowerUserAccess"], opts=opts)
"""
)


@pytest.fixture
def iam_plan(plan_once) -> Plan:
    return plan_once(IAM_PROGRAM)


def test_iam_no_wildcard_actions(iam_plan):
    found = flagged(iam_plan, "iam-no-wildcard-actions")
    assert set(found) == {"wild", "not-action"}
    assert "s3:*" in found["wild"]


def test_iam_no_write_on_wildcard_resources(iam_plan):
    found = flagged(iam_plan, "iam-no-write-on-wildcard-resources")
    # reads on "*" and tag-scoped writes pass
    assert set(found) == {"wild", "write-everywhere"}
    assert "s3:PutObject" in found["write-everywhere"]
    assert "s3:GetObject" not in found["write-everywhere"]


def test_iam_no_admin_on_workload_roles(iam_plan):
    found = flagged(iam_plan, "iam-no-admin-on-workloads")
    # the GitHub-OIDC deploy role is not a workload; the pod and node roles are
    assert set(found) == {"pod-admin", "node-poweruser"}
    assert "AdministratorAccess" in found["pod-admin"]


def test_kms_key_policies_are_not_judged_as_iam_wildcards(iam_plan):
    assert "key" not in flagged(iam_plan, "iam-no-write-on-wildcard-resources")


# ----------------------------------------------------------------------------- FSx and VPC

FSX_PROGRAM = (
    PRELUDE
    + """
vpc = aws.ec2.Vpc("vpc", cidr_block="10.0.0.0/16", opts=opts)
role = "arn:aws:iam::123456789012:role/flow-logs"
aws.ec2.FlowLog("vpc-flow-log", vpc_id=vpc.id, traffic_type="ALL", iam_role_arn=role,
    log_destination="arn:aws:logs:us-east-1:123456789012:log-group:flow", opts=opts)
other = aws.ec2.Vpc("unlogged-vpc", cidr_block="10.1.0.0/16", opts=opts)
aws.ec2.FlowLog("accept-only", vpc_id=other.id, traffic_type="ACCEPT", iam_role_arn=role,
    log_destination="arn:aws:logs:us-east-1:123456789012:log-group:flow", opts=opts)

lustre_sg = aws.ec2.SecurityGroup("lustre-sg", vpc_id=vpc.id, opts=opts)
aws.vpc.SecurityGroupIngressRule("lnet", security_group_id=lustre_sg.id, ip_protocol="tcp",
    from_port=988, to_port=988, referenced_security_group_id=lustre_sg.id, opts=opts)
aws.vpc.SecurityGroupIngressRule("clients", security_group_id=lustre_sg.id, ip_protocol="tcp",
    from_port=1018, to_port=1023, cidr_ipv4="10.0.0.0/16", opts=opts)
wide_sg = aws.ec2.SecurityGroup("wide-sg", vpc_id=vpc.id, ingress=[{"protocol": "tcp",
    "from_port": 988, "to_port": 988, "cidr_blocks": ["10.0.0.0/16"]}], opts=opts)
aws.vpc.SecurityGroupIngressRule("ssh", security_group_id=wide_sg.id, ip_protocol="tcp",
    from_port=22, to_port=22, cidr_ipv4="10.0.0.0/16", opts=opts)

common = dict(storage_capacity=1200, subnet_ids="subnet-1", per_unit_storage_throughput=125,
              opts=opts)
aws.fsx.LustreFileSystem("good-fs", deployment_type="PERSISTENT_2", kms_key_id=key.arn,
    security_group_ids=[lustre_sg.id], **common)
aws.fsx.LustreFileSystem("wide-fs", deployment_type="PERSISTENT_2",
    security_group_ids=[wide_sg.id], **common)
aws.fsx.LustreFileSystem("scratch-fs", deployment_type="SCRATCH_2", storage_capacity=1200,
    subnet_ids="subnet-1", opts=opts)
"""
)


@pytest.fixture
def fsx_plan(plan_once) -> Plan:
    return plan_once(FSX_PROGRAM)


def test_fsx_kms_encryption(fsx_plan):
    found = flagged(fsx_plan, "fsx-kms-encryption")
    assert set(found) == {"wide-fs", "scratch-fs"}
    assert "SCRATCH_2" in found["scratch-fs"]


def test_fsx_lustre_security_groups_open_only_lustre_ports(fsx_plan):
    found = flagged(fsx_plan, "fsx-lustre-ports-only")
    assert set(found) == {"wide-sg", "scratch-fs"}
    assert "tcp 22" in found["wide-sg"] and "wide-fs" in found["wide-sg"]
    assert "names no security group" in found["scratch-fs"]


def test_vpc_flow_logs_capture_all_or_rejected_traffic(fsx_plan):
    assert set(flagged(fsx_plan, "vpc-flow-logs")) == {"unlogged-vpc"}


# ----------------------------------------------------------------------------- Kubernetes

K8S_PROGRAM = """
import pulumi_kubernetes as k8s

def container(name, image, **extra):
    return {"name": name, "image": image, "resources": {
        "requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}, **extra}

def deployment(name, namespace, labels, containers, **spec):
    return k8s.apps.v1.Deployment(name, metadata={"name": name, "namespace": namespace},
        spec={"selector": {"match_labels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"containers": containers, **spec}}})

deployment("good", "apps", {"app": "good"}, [container("app", "ghcr.io/acme/app:1.2.3")])
deployment("digest", "apps", {"app": "digest"},
    [container("app", "ghcr.io/acme/app@sha256:" + "a" * 64)])
deployment("latest", "apps", {"app": "latest"}, [container("app", "ghcr.io/acme/app:latest")])
deployment("untagged", "apps", {"app": "untagged"}, [container("app", "ghcr.io/acme/app")])
deployment("no-resources", "apps", {"app": "nr"},
    [{"name": "app", "image": "ghcr.io/acme/app:1.2.3"}])
deployment("privileged", "apps", {"app": "priv"}, [container("app", "ghcr.io/acme/app:1.2.3",
    security_context={"privileged": True})])
deployment("host-network", "apps", {"app": "hn"}, [container("app", "ghcr.io/acme/app:1.2.3")],
    host_network=True)
deployment("sys-admin", "apps", {"app": "sa"}, [container("app", "ghcr.io/acme/app:1.2.3",
    security_context={"capabilities": {"add": ["SYS_ADMIN"]}})])
k8s.apps.v1.DaemonSet("aws-node", metadata={"name": "aws-node", "namespace": "kube-system"},
    spec={"selector": {"match_labels": {"k8s-app": "aws-node"}}, "template": {
        "metadata": {"labels": {"k8s-app": "aws-node"}}, "spec": {"host_network": True,
        "containers": [container("aws-node", "602401143452.dkr.ecr.us-east-1.amazonaws.com/amazon-k8s-cni:v1.19.0",
            security_context={"privileged": True})]}}})
k8s.apps.v1.DaemonSet("rogue-agent", metadata={"name": "rogue-agent", "namespace": "apps"},
    spec={"selector": {"match_labels": {"app": "rogue"}}, "template": {
        "metadata": {"labels": {"app": "rogue"}}, "spec": {"host_pid": True,
        "containers": [container("agent", "ghcr.io/acme/agent:1.0",
            security_context={"privileged": True})]}}})

gpu = {"resources": {"requests": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": 8},
                     "limits": {"memory": "64Gi", "nvidia.com/gpu": 8}}}
tolerate = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
def job(name, tolerations):
    return k8s.batch.v1.Job(name, metadata={"name": name, "namespace": "training"}, spec={
        "template": {"metadata": {"labels": {"job": name}}, "spec": {
            "restart_policy": "Never", "tolerations": tolerations,
            "containers": [{"name": "trainer", "image": "ghcr.io/acme/trainer:0.1", **gpu}]}}})
job("tolerating", tolerate)
job("intolerant", [])

def vllm(name, env):
    return deployment(name, "serving", {"app": name}, [container("vllm",
        "vllm/vllm-openai:v0.11.0", env=env)])
vllm("keyed", [{"name": "VLLM_API_KEY", "value_from": {"secret_key_ref": {
    "name": "vllm-api-key", "key": "api-key"}}}])
vllm("literal-key", [{"name": "VLLM_API_KEY", "value": "hunter2"}])
vllm("open", [])
deployment("labelled-serving", "serving", {"app": "custom", "llmcloud.io/workload": "serving"},
    [container("server", "ghcr.io/acme/server:2.0")])

for namespace, selector in (("apps", {}), ("serving", {"match_labels": {"app": "keyed"}})):
    k8s.networking.v1.NetworkPolicy(f"{namespace}-policy", metadata={"namespace": namespace},
        spec={"pod_selector": selector, "policy_types": ["Ingress"]})
"""


@pytest.fixture
def k8s_plan(plan_once) -> Plan:
    return plan_once(K8S_PROGRAM)


def test_k8s_no_privileged_except_allowlisted_node_agents(k8s_plan):
    found = flagged(k8s_plan, "k8s-no-privileged")
    assert set(found) == {"privileged", "sys-admin", "rogue-agent"}
    assert "SYS_ADMIN" in found["sys-admin"]


def test_k8s_no_host_namespaces_except_allowlisted_node_agents(k8s_plan):
    found = flagged(k8s_plan, "k8s-no-host-namespaces")
    assert set(found) == {"host-network", "rogue-agent"}
    assert "hostPID" in found["rogue-agent"]


def test_k8s_allowlist_extends_through_policy_config(k8s_plan):
    settings = PolicySettings(privileged_allowlist=("apps/rogue-*",))
    found = flagged(k8s_plan, "k8s-no-privileged", settings)
    assert "rogue-agent" not in found and "aws-node" in found


def test_k8s_resources_set_on_every_container(k8s_plan):
    found = flagged(k8s_plan, "k8s-resources-set")
    assert set(found) == {"no-resources"}
    assert "requests.cpu, requests.memory, limits.memory" in found["no-resources"]


def test_k8s_image_pinned_by_tag_or_digest(k8s_plan):
    found = flagged(k8s_plan, "k8s-image-pinned")
    assert set(found) == {"latest", "untagged"}


def test_k8s_gpu_pods_tolerate_the_gpu_taint(k8s_plan):
    assert set(flagged(k8s_plan, "k8s-gpu-toleration")) == {"intolerant"}


def test_k8s_serving_endpoints_take_the_api_key_from_a_secret(k8s_plan):
    found = flagged(k8s_plan, "k8s-serving-api-key")
    assert set(found) == {"literal-key", "open", "labelled-serving"}
    assert "literal value" in found["literal-key"]


def test_k8s_network_policy_selects_every_workload(k8s_plan):
    found = flagged(k8s_plan, "k8s-network-policy")
    # apps/ has a select-all policy; serving/ selects only app=keyed; training/ has none
    assert set(found) == {"literal-key", "open", "labelled-serving", "tolerating", "intolerant"}


def test_k8s_pod_templates_inside_custom_resources_are_checked(plan_program):
    plan = plan_program(
        """
import pulumi_kubernetes as k8s
k8s.apiextensions.CustomResource("jobset", api_version="jobset.x-k8s.io/v1alpha2", kind="JobSet",
    metadata={"name": "train", "namespace": "training"},
    spec={"replicatedJobs": [{"name": "workers", "template": {"spec": {"template": {"spec": {
        "containers": [{"name": "trainer", "image": "ghcr.io/acme/trainer:latest",
                        "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                                      "limits": {"memory": "1Gi"}}}]}}}}}]})
"""
    )
    assert set(flagged(plan, "k8s-image-pinned")) == {"jobset"}


# ----------------------------------------------------------------------------- tags, budget, waivers


def test_tags_required_counts_provider_default_tags(plan_program):
    plan = plan_program(
        PRELUDE
        + """
aws.s3.Bucket("via-provider-defaults", opts=opts)
aws.s3.Bucket("default-provider-untagged")
aws.s3.Bucket("own-tags", tags={"team": "ml", "cost-center": "research"})
aws.s3.Bucket("half-tagged", tags={"team": "ml"})
aws.kms.Alias("alias-not-taggable", name="alias/x", target_key_id=key.key_id, opts=opts)
"""
    )
    found = flagged(plan, "tags-required")
    assert set(found) == {"default-provider-untagged", "half-tagged"}
    assert "cost-center" in found["half-tagged"] and "team" not in found["half-tagged"]


def test_tags_required_reads_default_tags_of_the_default_provider_from_stack_config(plan_program):
    plan = plan_program(
        """
import pulumi_aws as aws
aws.s3.Bucket("tagged-by-stack-config")
""",
        config={"aws:defaultTags": {"tags": {"team": "ml", "cost-center": "research"}}},
    )
    assert flagged(plan, "tags-required") == {}


GPU_PROGRAM = (
    PRELUDE
    + """
def group(name, itype, max_size):
    aws.eks.NodeGroup(name, cluster_name="c", node_role_arn="arn:aws:iam::1:role/n",
        subnet_ids=["subnet-1"], instance_types=[itype],
        scaling_config={"min_size": 0, "max_size": max_size, "desired_size": 0}, opts=opts)
group("h100", "p5.48xlarge", 2)
group("l4", "g6.xlarge", 4)
group("system", "m7i.large", 3)
"""
)


def test_gpu_budget_counts_catalog_gpus_at_max_scale(plan_once):
    plan = plan_once(GPU_PROGRAM)
    found = flagged(plan, "gpu-budget", PolicySettings(gpu_budget=16))
    assert list(found) == ["demo-dev"]  # the stack resource
    assert "20 GPUs" in found["demo-dev"] and "h100 2×8" in found["demo-dev"]
    assert flagged(plan, "gpu-budget", PolicySettings(gpu_budget=20)) == {}
    assert flagged(plan, "gpu-budget") == {}  # no budget configured


def test_expired_waiver_is_a_finding_and_waives_nothing(plan_once):
    plan = plan_once(GPU_PROGRAM)
    today = date(2026, 6, 1)
    expired = Waiver("gpu-budget", "*", "capacity approved for Q1 only", date(2026, 3, 31))
    live = Waiver("gpu-budget", "*", "Q2 capacity approved by finance", date(2026, 6, 30))
    settings = PolicySettings(gpu_budget=16, waivers=(expired,), today=today)
    found = {v.policy: v for v in evaluate_policies(plan, settings)}
    assert "expired on 2026-03-31" in found["waiver-expired"].message
    assert found["waiver-expired"].blocking
    assert not found["gpu-budget"].waived
    live_settings = settings.with_(waivers=(live,))
    found = {v.policy: v for v in evaluate_policies(plan, live_settings)}
    assert "waiver-expired" not in found
    assert found["gpu-budget"].waived and not found["gpu-budget"].blocking
    assert found["gpu-budget"].waiver_reason == "Q2 capacity approved by finance"


def test_waiver_expiring_today_still_holds():
    waiver = Waiver("s3-tls-only", "logs-*", "migration in progress", date(2026, 6, 1))
    assert not waiver.expired(date(2026, 6, 1))
    assert waiver.expired(date(2026, 6, 2))
    assert waiver.covers("s3-tls-only", "urn:pulumi:dev::p::aws:s3/bucket:Bucket::logs-bucket")
    assert not waiver.covers("s3-versioning", "urn:pulumi:dev::p::aws:s3/bucket:Bucket::logs-b")
    assert not waiver.covers("s3-tls-only", "urn:pulumi:dev::p::aws:s3/bucket:Bucket::data")


# ----------------------------------------------------------------------------- preview


def test_values_unknown_during_preview_count_as_set_or_defer_the_rule():
    """Under `pulumi preview` an Output (a key ARN, a policy document built from ARNs) is not
    known yet: presence checks pass, and rules that need the value defer to `pulumi up`
    (CrossGuard reports "can't run during preview" when a rule raises UnknownValueError)."""
    from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs
    from pulumi_policy.proxy import (
        UNKNOWN_STRING_VALUE,
        UnknownValueError,
        unknown_checking_proxy,
    )

    from policies.rules import build_policies

    policies = {p.name: p for p in build_policies(PolicySettings())}
    options = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])

    def run(rule: str, token: str, props: dict) -> list[str]:
        args = ResourceValidationArgs(
            token,
            unknown_checking_proxy(props),
            f"urn:pulumi:dev::p::{token}::r",
            "r",
            options,
            None,
        )
        found: list[str] = []
        policies[rule].validate(args, lambda message, urn=None: found.append(message))
        return found

    template = {
        "metadataOptions": {"httpTokens": "required"},
        "blockDeviceMappings": [
            {
                "deviceName": "/dev/xvda",
                "ebs": {"encrypted": "true", "kmsKeyId": UNKNOWN_STRING_VALUE},
            }
        ],
    }
    assert run("ebs-encrypted", "aws:ec2/launchTemplate:LaunchTemplate", template) == []
    cluster = {
        "version": "1.33",
        "encryptionConfig": {
            "resources": ["secrets"],
            "provider": {"keyArn": UNKNOWN_STRING_VALUE},
        },
    }
    assert run("eks-secrets-encryption", "aws:eks/cluster:Cluster", cluster) == []
    with pytest.raises(UnknownValueError):
        run(
            "iam-no-wildcard-actions",
            "aws:iam/rolePolicy:RolePolicy",
            {"role": "r", "policy": UNKNOWN_STRING_VALUE},
        )
