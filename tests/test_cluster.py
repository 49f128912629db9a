"""The EKS control plane: private endpoint in prod, secrets encrypted with our key, API-only
authentication, encrypted control-plane logs, the OIDC provider, managed add-ons with their
pod roles, the Kubernetes provider; and the config errors of the cluster section."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from infra.cli import app
from infra.plan.engine import Plan, Resource, evaluate

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = "aws:eks/cluster:Cluster"
ADDON = "aws:eks/addon:Addon"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
ASSOCIATION = "aws:eks/podIdentityAssociation:PodIdentityAssociation"


def cluster(plan: Plan) -> Resource:
    (eks,) = plan.by_type(CLUSTER)
    return eks


def named(plan: Plan, token: str, name: str) -> Resource:
    (found,) = [r for r in plan.by_type(token) if r.name == name]
    return found


def addon(plan: Plan, name: str) -> Resource:
    return named(plan, ADDON, f"cluster-{name}")


def test_prod_endpoint_is_private(prod_plan):
    vpc = cluster(prod_plan).inputs["vpcConfig"]
    assert vpc["endpointPrivateAccess"] is True
    assert vpc["endpointPublicAccess"] is False
    assert "publicAccessCidrs" not in vpc


def test_dev_endpoint_is_public_only_to_its_allowlist(dev_plan):
    vpc = cluster(dev_plan).inputs["vpcConfig"]
    assert vpc["endpointPublicAccess"] is True
    assert vpc["publicAccessCidrs"] == ["203.0.113.0/24"]
    assert vpc["endpointPrivateAccess"] is True


def test_control_plane_runs_in_the_private_subnets(prod_plan):
    vpc = cluster(prod_plan).inputs["vpcConfig"]
    assert sorted(vpc["subnetIds"]) == sorted(prod_plan.outputs["private_subnet_ids"])


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_secrets_are_encrypted_with_our_cluster_key(stack_report, stack):
    plan = stack_report(stack).plan
    encryption = cluster(plan).inputs["encryptionConfig"]
    assert encryption["resources"] == ["secrets"]
    assert encryption["provider"]["keyArn"] == plan.outputs["kms_key_arns"]["cluster"]


def test_authentication_is_access_entries_only_without_creator_admin(prod_plan):
    access = cluster(prod_plan).inputs["accessConfig"]
    assert access == {"authenticationMode": "API", "bootstrapClusterCreatorAdminPermissions": False}


def test_version_upgrade_policy_and_deletion_protection(prod_plan, dev_plan):
    prod = cluster(prod_plan).inputs
    assert prod["version"] == "1.35" == prod_plan.outputs["cluster_version"]
    assert prod["upgradePolicy"] == {"supportType": "STANDARD"}
    assert prod["deletionProtection"] is True
    assert cluster(dev_plan).inputs["deletionProtection"] is False
    assert prod["bootstrapSelfManagedAddons"] is False


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_control_plane_logs_go_to_an_encrypted_log_group_created_first(stack_report, stack):
    report = stack_report(stack)
    plan, config = report.plan, report.config
    eks = cluster(plan)
    assert {"api", "audit", "authenticator"} <= set(eks.inputs["enabledClusterLogTypes"])
    assert eks.inputs["enabledClusterLogTypes"] == list(config.cluster.log_types)
    group = named(plan, "aws:cloudwatch/logGroup:LogGroup", "cluster-control-plane-logs")
    assert group.inputs["name"] == f"/aws/eks/{eks.inputs['name']}/cluster"
    assert group.inputs["kmsKeyId"] == plan.outputs["kms_key_arns"]["logs"]
    assert group.inputs["retentionInDays"] == config.cluster.log_retention_days
    assert group.urn in eks.dependencies


def test_oidc_provider_trusts_the_cluster_issuer_for_sts(prod_plan):
    (oidc,) = prod_plan.by_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    issuer = cluster(prod_plan).outputs["identities"][0]["oidcs"][0]["issuer"]
    assert oidc.inputs["url"] == issuer
    assert oidc.inputs["clientIdLists"] == ["sts.amazonaws.com"]
    assert prod_plan.outputs["oidc_provider_arn"] == oidc.outputs["arn"]


def test_outputs_other_components_read(prod_plan):
    eks = cluster(prod_plan)
    assert prod_plan.outputs["cluster_name"] == eks.inputs["name"] == "llm-prod-eks"
    assert prod_plan.outputs["cluster_arn"] == eks.outputs["arn"]
    assert (
        prod_plan.outputs["node_security_group_id"]
        == eks.outputs["vpcConfig"]["clusterSecurityGroupId"]
    )


def test_managed_addons_with_prefix_delegation(prod_plan):
    names = {r.inputs["addonName"] for r in prod_plan.by_type(ADDON)}
    assert {
        "vpc-cni",
        "coredns",
        "kube-proxy",
        "eks-pod-identity-agent",
        "aws-ebs-csi-driver",
        "aws-fsx-csi-driver",
    } <= names
    cni = json.loads(addon(prod_plan, "vpc-cni").inputs["configurationValues"])
    assert cni["env"]["ENABLE_PREFIX_DELEGATION"] == "true"
    for r in prod_plan.by_type(ADDON):
        assert r.inputs["addonVersion"]  # pinned to the cluster version's default


def test_addons_needing_nodes_wait_for_the_system_node_group(prod_plan):
    system = named(prod_plan, "aws:eks/nodeGroup:NodeGroup", "cluster-system-node-group").urn
    for name in ("coredns", "aws-ebs-csi-driver", "aws-fsx-csi-driver"):
        assert system in addon(prod_plan, name).dependencies, name
    for name in ("vpc-cni", "kube-proxy", "eks-pod-identity-agent"):
        assert system not in addon(prod_plan, name).dependencies, name


def role_policies(plan: Plan, prefix: str) -> tuple[list[dict], list[str]]:
    statements = [
        s
        for r in plan.by_type(ROLE_POLICY)
        if r.name == f"{prefix}-policy"
        for s in json.loads(r.inputs["policy"])["Statement"]
    ]
    managed = [r.inputs["policyArn"] for r in plan.by_type(ATTACHMENT) if r.name.startswith(prefix)]
    return statements, managed


def test_vpc_cni_permissions_sit_on_the_aws_node_pod_role(prod_plan):
    statements, managed = role_policies(prod_plan, "cluster-vpc-cni")
    assert managed == ["arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy"]
    assert statements == []
    association = named(prod_plan, ASSOCIATION, "cluster-vpc-cni-association").inputs
    assert (association["namespace"], association["serviceAccount"]) == ("kube-system", "aws-node")


def test_ebs_csi_role_may_use_our_ebs_key_only_for_aws_resources(prod_plan):
    statements, managed = role_policies(prod_plan, "cluster-aws-ebs-csi-driver")
    assert managed == ["arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"]
    ebs_key = prod_plan.outputs["kms_key_arns"]["ebs"]
    grants = next(s for s in statements if "kms:CreateGrant" in s["Action"])
    assert grants["Resource"] == ebs_key
    assert grants["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
    use = next(s for s in statements if "kms:GenerateDataKeyWithoutPlaintext" in s["Action"])
    assert use["Resource"] == ebs_key
    assert {"kms:Decrypt", "kms:DescribeKey"} <= set(use["Action"])


def test_fsx_csi_role_only_describes_file_systems(prod_plan):
    statements, managed = role_policies(prod_plan, "cluster-aws-fsx-csi-driver")
    assert managed == []  # not AmazonFSxFullAccess
    actions = {a for s in statements for a in s["Action"]}
    assert actions == {"fsx:DescribeFileSystems"}


def test_pod_identity_is_the_default_for_addon_roles(prod_plan):
    accounts = {
        (r.inputs["namespace"], r.inputs["serviceAccount"])
        for r in prod_plan.by_type(ASSOCIATION)
        if r.name.startswith("cluster-")
    }
    assert accounts == {
        ("kube-system", "aws-node"),
        ("kube-system", "cluster-autoscaler"),
        ("kube-system", "ebs-csi-controller-sa"),
        ("kube-system", "fsx-csi-controller-sa"),
    }
    assert all("serviceAccountRoleArn" not in r.inputs for r in prod_plan.by_type(ADDON))


def test_kubernetes_provider_authenticates_with_aws_eks_get_token(prod_plan):
    (provider,) = prod_plan.by_type("pulumi:providers:kubernetes")
    kubeconfig = json.loads(provider.inputs["kubeconfig"])
    eks = cluster(prod_plan)
    assert kubeconfig["clusters"][0]["cluster"]["server"] == eks.outputs["endpoint"]
    assert (
        kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]
        == eks.outputs["certificateAuthority"]["data"]
    )
    user = kubeconfig["users"][0]["user"]
    assert "token" not in user  # no credentials in the state
    args = user["exec"]["args"]
    assert args[:2] == ["eks", "get-token"]
    assert args[args.index("--cluster-name") + 1] == "llm-prod-eks"
    assert args[args.index("--region") + 1] == "us-east-2"
    k8s_resources = [r for r in prod_plan.resources if r.type.startswith("kubernetes:")]
    assert k8s_resources and all(r.provider == provider.urn for r in k8s_resources)


def test_irsa_mode_sets_addon_roles_on_the_addons_instead_of_associations(project_root):
    raw = yaml.safe_load((project_root / "stacks" / "Pulumi.dev.yaml").read_text())["config"]
    security = {**raw["llmcloud:security"], "pod_identity": "irsa"}
    plan = evaluate(project_root, "dev", config_overrides={"llmcloud:security": security})
    assert not [r for r in plan.by_type(ASSOCIATION) if r.name.startswith("cluster-")]
    roles = {r.name: r for r in plan.by_type("aws:iam/role:Role")}
    issuer = cluster(plan).outputs["identities"][0]["oidcs"][0]["issuer"]
    for name, account in (("vpc-cni", "aws-node"), ("aws-ebs-csi-driver", "ebs-csi-controller-sa")):
        role = roles[f"cluster-{name}-role"]
        assert addon(plan, name).inputs["serviceAccountRoleArn"] == role.outputs["arn"]
        trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
        host = issuer.removeprefix("https://")
        assert trust["Condition"]["StringEquals"][f"{host}:sub"] == (
            f"system:serviceaccount:kube-system:{account}"
        )


# ----------------------------------------------------------------------------- config errors


def test_plan_exits_2_with_a_clear_message_for_spot_on_a_capacity_block(tmp_path):
    project = tmp_path / "repo"
    project.mkdir()
    shutil.copy(ROOT / "Pulumi.yaml", project)
    shutil.copy(ROOT / "__main__.py", project)
    shutil.copytree(ROOT / "stacks", project / "stacks")
    stack_file = project / "stacks" / "Pulumi.prod.yaml"
    data = yaml.safe_load(stack_file.read_text())
    groups = copy.deepcopy(data["config"]["llmcloud:cluster"]["gpu_node_groups"])
    block = next(g for g in groups if g["name"] == "h200-block")
    block["capacity"]["type"] = "spot"
    data["config"]["llmcloud:cluster"]["gpu_node_groups"] = groups
    stack_file.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["plan", "--project", str(project), "--stack", "prod"])
    assert result.exit_code == 2
    assert (
        "llmcloud:cluster.gpu_node_groups[1].capacity.reservation_id = 'cr-0a1b2c3d4e5f60718': "
        "spot instances cannot run in a capacity reservation or Capacity Block"
    ) in " ".join(result.output.split())
    assert "Traceback" not in result.output


# ----------------------------------------------------------------------------- network policy, autoscaler

RELEASE = "kubernetes:helm.sh/v3:Release"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"


def test_vpc_cni_runs_its_network_policy_agent(prod_plan, dev_plan):
    """EKS user guide, network policies: `{"enableNetworkPolicy": "true"}` in the vpc-cni
    add-on's configuration (v1.14.0+, EKS 1.25+), or NetworkPolicies are stored, not enforced."""
    for plan in (prod_plan, dev_plan):
        (cni,) = [a for a in plan.by_type(ADDON) if a.inputs["addonName"] == "vpc-cni"]
        config = json.loads(cni.inputs["configurationValues"])
        assert config["enableNetworkPolicy"] == "true"
        assert config["env"]["ENABLE_PREFIX_DELEGATION"] == "true"


def autoscaler_release(plan: Plan) -> Resource:
    (release,) = [r for r in plan.by_type(RELEASE) if r.inputs.get("name") == "cluster-autoscaler"]
    return release


def test_cluster_autoscaler_is_pinned_and_runs_on_the_system_nodes(prod_plan, stack_report):
    from infra.cluster.autoscaler import image_tags

    release = autoscaler_release(prod_plan).inputs
    assert (release["chart"], release["version"]) == ("cluster-autoscaler", "9.59.0")
    assert release["repositoryOpts"]["repo"] == "https://kubernetes.github.io/autoscaler"
    values = release["values"]
    assert values["autoDiscovery"]["clusterName"] == "llm-prod-eks"
    assert values["awsRegion"] == "us-east-2"  # pods cannot reach IMDS
    assert values["nodeSelector"] == {"llmcloud.io/node-group": "system"}
    version = stack_report("prod").config.cluster.version
    assert values["image"]["tag"] == image_tags()[version]  # the cluster's minor
    assert values["image"]["tag"].startswith(f"v{version}.")
    args = values["extraArgs"]
    assert args["expander"] == "priority,least-waste"
    assert args["scale-down-unneeded-time"] == "30m"


def test_priority_expander_prefers_reserved_then_on_demand_then_spot(prod_plan, dev_plan):
    """The priority expander matches ASG names (EKS: eks-<node group>-<uuid>) by regex; the
    highest weight that fits a pending pod wins."""

    def weights(plan: Plan) -> dict[str, int]:
        table = autoscaler_release(plan).inputs["values"]["expanderPriorities"]
        out = {}
        for group in plan.by_type("aws:eks/nodeGroup:NodeGroup"):
            asg = group.outputs["resources"][0]["autoscalingGroups"][0]["name"]
            (weight,) = [
                int(w) for w, patterns in table.items() if any(re.match(p, asg) for p in patterns)
            ]
            out[group.name.removesuffix("-node-group")] = weight
        return out

    assert weights(prod_plan) == {
        "cluster-system": 20,
        "gpu-h100": 20,
        "gpu-a100": 20,
        "gpu-l40s": 20,
        "gpu-h200-block": 30,  # Capacity Block
        "gpu-h200-odcr": 30,  # ODCR
    }
    assert weights(dev_plan) == {"cluster-system": 20, "gpu-h100": 20, "gpu-l4": 10}  # spot last


def test_cluster_autoscaler_writes_only_to_this_clusters_groups(prod_plan):
    """kubernetes/autoscaler cloudprovider/aws/README.md, full-features policy: its first block
    (Describe calls) cannot be scoped; the writes are scoped here by the cluster's tag."""
    (policy,) = [
        p for p in prod_plan.by_type(ROLE_POLICY) if p.name.startswith("cluster-autoscaler-")
    ]
    statements = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}
    upstream_reads = {
        "autoscaling:DescribeAutoScalingGroups",
        "autoscaling:DescribeAutoScalingInstances",
        "autoscaling:DescribeLaunchConfigurations",
        "autoscaling:DescribeScalingActivities",
        "ec2:DescribeImages",
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeLaunchTemplateVersions",
        "ec2:GetInstanceTypesFromInstanceRequirements",
    }
    on_any = [s for s in statements.values() if s["Resource"] == "*"]
    assert [set(s["Action"]) for s in on_any] == [upstream_reads]
    scale = statements["ScaleThisClustersGroups"]
    assert set(scale["Action"]) == {
        "autoscaling:SetDesiredCapacity",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
    }
    assert scale["Resource"].startswith("arn:aws:autoscaling:us-east-2:")
    assert scale["Condition"] == {
        "StringEquals": {"aws:ResourceTag/k8s.io/cluster-autoscaler/llm-prod-eks": "owned"}
    }
    nodegroups = statements["ReadThisClustersNodeGroups"]
    assert nodegroups["Resource"].endswith(":nodegroup/llm-prod-eks/*/*")


def test_training_pods_are_never_evicted_by_scale_down_and_zero_groups_are_not_awaited(
    prod_plan, dev_plan
):
    for plan in (prod_plan, dev_plan):
        for job in plan.by_type("kubernetes:batch/v1:Job"):
            annotations = job.inputs["spec"]["template"]["metadata"]["annotations"]
            assert annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    # dev's endpoint is on l4 (starts at 0 nodes): `pulumi up` does not wait for its pods
    (dev_svc,) = [
        d
        for d in dev_plan.by_type("kubernetes:apps/v1:Deployment")
        if d.inputs["metadata"]["namespace"] == "serving"  # not the gateway's
    ]
    assert dev_svc.inputs["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}
    # prod's runs on l40s with 2 nodes from the start: awaited, with its startup window
    (prod_svc,) = [
        d
        for d in prod_plan.by_type("kubernetes:apps/v1:Deployment")
        if d.inputs["metadata"]["namespace"] == "serving"  # not the gateway's
    ]
    assert "pulumi.com/timeoutSeconds" in prod_svc.inputs["metadata"]["annotations"]
