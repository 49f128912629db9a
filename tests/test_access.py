"""Cluster access: EKS access entries, namespaces with Pod Security, quotas and limits, and
NetworkPolicies judged by what traffic they let through; bad access config exits 2."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from typer.testing import CliRunner

from infra.cli import app
from infra.config import ConfigError, parse_stack_config
from infra.plan.engine import Plan
from infra.plan.k8s import Manifest, manifests, validate_manifests
from tests.conftest import write_project

ADMIN = "arn:aws:iam::111122223333:role/platform-admin"
VIEWER = "arn:aws:iam::111122223333:user/alice"
VPC = "10.10.0.0/16"
NAMESPACES = [
    {"name": "training", "purpose": "training", "gpu_quota": 16, "cpu_quota": "256"},
    {
        "name": "serving",
        "purpose": "serving",
        "gpu_quota": 4,
        "memory_quota": "512Gi",
        "allow_from_namespaces": ["training"],
    },
    {"name": "etl", "purpose": "data", "pod_security": "baseline", "metrics_ports": []},
]


def config(**security: Any) -> dict[str, Any]:
    return {
        "llmcloud:environment": "dev",
        "llmcloud:network": {"availability_zones": ["us-east-1a", "us-east-1b"]},
        "llmcloud:security": {
            "cluster_admin_arns": [ADMIN],
            "cluster_readonly_arns": [VIEWER],
            "namespaces": NAMESPACES,
            **security,
        },
    }


PROGRAM = f"""
import pulumi
import pulumi_kubernetes as k8s
from infra.security.access import ClusterAccess, ClusterAccessArgs
from infra.config import config_from_pulumi
from infra.context import make_context

config = config_from_pulumi()
ctx = make_context(config)
cluster_name = pulumi.Output.from_input("llm-dev-eks")
provider = k8s.Provider("k8s", kubeconfig="{{}}")
security = config.security
access = ClusterAccess(
    "cluster-access",
    ClusterAccessArgs(
        cluster_name=cluster_name,
        admin_arns=security.cluster_admin_arns,
        readonly_arns=security.cluster_readonly_arns,
        namespaces=security.namespaces,
        vpc_cidr="{VPC}",
        kubernetes_version="1.33",
        pod_identity=security.pod_identity == "pod_identity",
    ),
    ctx,
    pulumi.ResourceOptions(providers={{"aws": ctx.aws_provider, "kubernetes": provider}}),
)
pulumi.export("namespaces", {{n: ns.metadata.name for n, ns in access.namespaces.items()}})
"""


@pytest.fixture(scope="module")
def access_plan(tmp_path_factory) -> Plan:
    from infra.plan.engine import evaluate

    project = write_project(tmp_path_factory.mktemp("access") / "p", PROGRAM, config())
    return evaluate(project, "dev")


def objects(plan: Plan, kind: str, namespace: str | None = None) -> list[dict]:
    return [
        m.object
        for m in manifests(plan)
        if m.kind == kind and (namespace is None or m.namespace == namespace)
    ]


# ----------------------------------------------------------------------------- a NetworkPolicy evaluator


def _selects(selector: dict | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _peer_matches(peer: dict, endpoint: dict) -> bool:
    if "ipBlock" in peer:
        if endpoint.get("ip") is None:
            return False
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(endpoint["ip"])
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(c) for c in block.get("except") or []
        )
    if endpoint.get("namespace") is None:
        return False
    if "namespaceSelector" in peer:
        ns_labels = {"kubernetes.io/metadata.name": endpoint["namespace"]}
        if not _selects(peer["namespaceSelector"], ns_labels):
            return False
    elif endpoint["namespace"] != endpoint["policy_namespace"]:
        return False  # a bare podSelector selects pods of the policy's own namespace
    return _selects(peer.get("podSelector"), endpoint.get("labels") or {})


def _port_matches(ports: list[dict] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        low = p.get("port")
        high = p.get("endPort", low)
        if low is None or low <= port <= high:
            return True
    return False


def allowed(
    plan: Plan, namespace: str, direction: str, peer: dict, port: int, protocol: str = "TCP"
) -> bool:
    """Would the namespace's NetworkPolicies let this traffic through? `direction` is
    "Ingress" (from `peer`) or "Egress" (to `peer`); a peer is {"ip": ...} or
    {"namespace": ..., "labels": {...}}."""
    policies = [
        p["spec"]
        for p in objects(plan, "NetworkPolicy", namespace)
        if direction in p["spec"].get("policyTypes", [])
    ]
    assert policies, f"no {direction} policy isolates {namespace}"
    field, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    endpoint = {**peer, "policy_namespace": namespace}
    for spec in policies:
        for rule in spec.get(field) or []:
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(x, endpoint) for x in peers)) and _port_matches(
                rule.get("ports"), port, protocol
            ):
                return True
    return False


KUBE_DNS = {"namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}}
S3_PUBLIC_IP = {"ip": "52.217.0.10"}
IN_VPC = {"ip": "10.10.40.7"}


# ----------------------------------------------------------------------------- access entries


def test_admins_and_viewers_get_cluster_wide_access_entries(access_plan):
    entries = {
        e.inputs["principalArn"]: e for e in access_plan.by_type("aws:eks/accessEntry:AccessEntry")
    }
    assert sorted(entries) == sorted([ADMIN, VIEWER])
    assert all(e.inputs["type"] == "STANDARD" for e in entries.values())
    assert all(e.inputs["clusterName"] == "llm-dev-eks" for e in entries.values())
    policies = {
        a.inputs["principalArn"]: a.inputs
        for a in access_plan.by_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    }
    base = "arn:aws:eks::aws:cluster-access-policy/"
    assert policies[ADMIN]["policyArn"] == base + "AmazonEKSClusterAdminPolicy"
    assert policies[VIEWER]["policyArn"] == base + "AmazonEKSViewPolicy"
    assert all(p["accessScope"] == {"type": "cluster"} for p in policies.values())


# ----------------------------------------------------------------------------- namespaces


def test_kubernetes_objects_match_the_1_33_schemas(access_plan):
    items = manifests(access_plan)
    assert len(items) > 20
    assert validate_manifests(items, "1.33") == []


def test_schema_validation_would_catch_a_misspelled_field(access_plan):
    quota = objects(access_plan, "ResourceQuota", "serving")[0]
    broken = {**quota, "spec": {"hrad": quota["spec"]["hard"]}}
    assert validate_manifests([Manifest(urn="u", object=broken)], "1.33")


def test_namespaces_are_exposed_and_labelled_for_pod_security(access_plan):
    assert access_plan.outputs["namespaces"] == {n["name"]: n["name"] for n in NAMESPACES}
    labels = {
        ns["metadata"]["name"]: ns["metadata"]["labels"] for ns in objects(access_plan, "Namespace")
    }
    assert labels["serving"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["training"]["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["etl"]["pod-security.kubernetes.io/enforce"] == "baseline"  # configured
    for ns in labels.values():
        assert ns["pod-security.kubernetes.io/enforce-version"] == "v1.33"
        assert ns["pod-security.kubernetes.io/warn"] == "restricted"
        assert ns["pod-security.kubernetes.io/audit"] == "restricted"


def test_quotas_cap_gpus_cpu_memory_and_pods_per_namespace(access_plan):
    hard = {
        q["metadata"]["namespace"]: q["spec"]["hard"] for q in objects(access_plan, "ResourceQuota")
    }
    assert hard["training"] == {
        "requests.nvidia.com/gpu": "16",
        "requests.cpu": "256",
        "requests.memory": "4Ti",
        "requests.vpc.amazonaws.com/efa": "0",
        "pods": "500",
    }
    assert hard["serving"]["requests.nvidia.com/gpu"] == "4"
    assert hard["serving"]["requests.memory"] == "512Gi"
    assert hard["etl"]["requests.nvidia.com/gpu"] == "0"


def test_every_container_gets_default_requests_and_limits(access_plan):
    for ns in ("training", "serving", "etl"):
        (limit_range,) = objects(access_plan, "LimitRange", ns)
        (item,) = limit_range["spec"]["limits"]
        assert item["type"] == "Container"
        assert set(item["defaultRequest"]) == set(item["default"]) == {"cpu", "memory"}


# ----------------------------------------------------------------------------- network policies


@pytest.mark.parametrize("namespace", ["training", "serving", "etl"])
def test_everything_not_allowed_is_denied(access_plan, namespace):
    (deny,) = [
        p
        for p in objects(access_plan, "NetworkPolicy", namespace)
        if p["metadata"]["name"] == "default-deny"
    ]
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert not allowed(access_plan, namespace, "Egress", S3_PUBLIC_IP, 80)
    assert not allowed(access_plan, namespace, "Egress", IN_VPC, 22)
    assert not allowed(access_plan, namespace, "Egress", {"ip": "8.8.8.8"}, 53, "UDP")
    assert not allowed(access_plan, namespace, "Egress", {"ip": "169.254.169.254"}, 80)  # IMDS
    assert not allowed(access_plan, namespace, "Ingress", {"namespace": "default"}, 8000)
    assert not allowed(access_plan, namespace, "Ingress", {"ip": "10.10.1.1"}, 8000)


@pytest.mark.parametrize("namespace", ["training", "serving", "etl"])
def test_workloads_reach_dns_aws_apis_pod_identity_and_lustre(access_plan, namespace):
    assert allowed(access_plan, namespace, "Egress", KUBE_DNS, 53, "UDP")
    assert allowed(access_plan, namespace, "Egress", KUBE_DNS, 53, "TCP")
    assert allowed(access_plan, namespace, "Egress", S3_PUBLIC_IP, 443)
    assert allowed(access_plan, namespace, "Egress", {"ip": "169.254.170.23"}, 80)
    assert allowed(access_plan, namespace, "Egress", IN_VPC, 988)
    assert allowed(access_plan, namespace, "Egress", IN_VPC, 1018)
    assert allowed(access_plan, namespace, "Egress", IN_VPC, 1023)
    assert not allowed(access_plan, namespace, "Egress", IN_VPC, 1024)
    assert not allowed(access_plan, namespace, "Egress", {"ip": "192.168.0.5"}, 988)


def test_training_pods_talk_to_each_other_on_any_port(access_plan):
    peer = {"namespace": "training", "labels": {"job": "gpt"}}
    for port in (29500, 43117):  # torchrun rendezvous, an NCCL socket
        assert allowed(access_plan, "training", "Egress", peer, port)
        assert allowed(access_plan, "training", "Ingress", peer, port)
    assert not allowed(access_plan, "training", "Egress", {"namespace": "serving"}, 8000)


def test_serving_admits_only_its_allowed_namespaces_and_metrics_scrapes(access_plan):
    assert allowed(access_plan, "serving", "Ingress", {"namespace": "training"}, 8000)
    assert not allowed(access_plan, "training", "Ingress", {"namespace": "serving"}, 8000)
    assert not allowed(access_plan, "serving", "Ingress", {"namespace": "etl"}, 8000)
    monitoring = {"namespace": "monitoring", "labels": {"app": "prometheus"}}
    assert allowed(access_plan, "serving", "Ingress", monitoring, 8000)
    assert allowed(access_plan, "training", "Ingress", monitoring, 9090)
    assert not allowed(access_plan, "serving", "Ingress", monitoring, 22)
    assert not allowed(access_plan, "etl", "Ingress", monitoring, 8000)  # metrics_ports: []


def test_with_irsa_there_is_no_path_to_the_pod_identity_agent(plan_program):
    plan = plan_program(PROGRAM, config(pod_identity="irsa"))
    assert not allowed(plan, "serving", "Egress", {"ip": "169.254.170.23"}, 80)
    assert allowed(plan, "serving", "Egress", S3_PUBLIC_IP, 443)  # STS, for IRSA


# ----------------------------------------------------------------------------- bad config


def parse(**security: Any):
    raw = {"aws:region": "us-east-1", **config(**security)}
    return parse_stack_config(raw, project="llmcloud", stack="dev")


def test_the_access_config_of_these_tests_is_valid():
    security = parse().security
    assert security.cluster_admin_arns == [ADMIN]
    assert [ns.pod_security_level for ns in security.namespaces] == [
        "baseline",
        "restricted",
        "baseline",
    ]


@pytest.mark.parametrize(
    ("security", "message"),
    [
        (
            {"cluster_admin_arns": ["platform-admin"]},
            "llmcloud:security.cluster_admin_arns[0] = 'platform-admin': must be an IAM role "
            "or user ARN",
        ),
        (
            {"cluster_readonly_arns": [ADMIN]},
            f"llmcloud:security.cluster_readonly_arns[0] = '{ADMIN}': also in cluster_admin_arns",
        ),
        (
            {"key_admin_arns": ["arn:aws:iam::111122223333:group/admins"]},
            "llmcloud:security.key_admin_arns[0]",
        ),
        (
            {"data_stager_arns": ["arn:aws:sts::111122223333:assumed-role/ci/run-1"]},
            "llmcloud:security.data_stager_arns[0]",
        ),
        (
            {
                "namespaces": [
                    {"name": "serving", "purpose": "serving", "allow_from_namespaces": ["research"]}
                ]
            },
            "llmcloud:security.namespaces[0].allow_from_namespaces[0] = 'research': must name a "
            "namespace of security.namespaces (serving)",
        ),
        (
            {"namespaces": [{"name": "kube-system", "purpose": "data"}]},
            "llmcloud:security.namespaces[0].name = 'kube-system': reserved namespace",
        ),
        (
            {"namespaces": [{"name": "etl", "purpose": "data", "memory_quota": "4 TB"}]},
            "llmcloud:security.namespaces[0].memory_quota = '4 TB': a Kubernetes quantity",
        ),
    ],
)
def test_bad_access_config_names_the_key_the_value_and_what_is_allowed(security, message):
    with pytest.raises(ConfigError) as error:
        parse(**security)
    assert message in str(error.value)


def test_a_training_job_in_an_unknown_namespace_is_refused():
    raw = {"aws:region": "us-east-1", **config()}
    raw["llmcloud:cluster"] = {"gpu_node_groups": [{"name": "l4", "gpu": "L4", "max_size": 2}]}
    raw["llmcloud:training"] = [
        {
            "name": "job",
            "node_group": "l4",
            "namespace": "research",
            "image": "r/t:1",
            "use_fsx": False,
        }
    ]
    with pytest.raises(ConfigError, match=r"training\[0\]\.namespace = 'research'"):
        parse_stack_config(raw, project="llmcloud", stack="dev")


def test_llmcloud_plan_exits_2_on_an_admin_principal_that_is_not_an_arn(tmp_path):
    program = "from infra.config import config_from_pulumi\nconfig_from_pulumi()\n"
    project = write_project(tmp_path / "p", program, config(cluster_admin_arns=["platform-admin"]))
    result = CliRunner().invoke(app, ["plan", "--project", str(project), "--stack", "dev"])
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "llmcloud:security.cluster_admin_arns[0] = 'platform-admin'" in message
    assert "must be an IAM role or user ARN" in message
    assert "Traceback" not in result.output


def test_prod_namespaces_access_entries_and_objects_match_config(prod_plan, stack_report):
    config = stack_report("prod").config
    assert len(prod_plan.by_type("llmcloud:security:ClusterAccess")) == 1
    ours = [m for m in manifests(prod_plan) if "llmcloud:security:ClusterAccess$" in m.urn]
    assert len(ours) >= 3 * len(config.security.namespaces)
    assert validate_manifests(ours, config.cluster.version) == []
    names = {ns["metadata"]["name"] for ns in objects(prod_plan, "Namespace")}
    assert {ns.name for ns in config.security.namespaces} <= names
    principals = {
        e.inputs["principalArn"] for e in prod_plan.by_type("aws:eks/accessEntry:AccessEntry")
    }
    expected = set(config.security.cluster_admin_arns) | set(config.security.cluster_readonly_arns)
    expected |= set(config.deploy.deployer_arns)  # whoever runs `pulumi up`
    expected |= set(config.deploy.reader_arns)  # CI previews and drift
    assert principals == expected
    (cluster,) = prod_plan.by_type("aws:eks/cluster:Cluster")
    for entry in prod_plan.by_type("aws:eks/accessEntry:AccessEntry"):
        assert entry.inputs["clusterName"] == cluster.outputs["name"]
    for ns in config.security.namespaces:
        policies = {p["metadata"]["name"] for p in objects(prod_plan, "NetworkPolicy", ns.name)}
        assert {"default-deny", "allow-dns", "allow-same-namespace"} <= policies


def test_namespaces_wait_for_the_admins_access(access_plan):
    associations = {
        a.urn
        for a in access_plan.by_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
        if "admin" in a.name
    }
    for namespace in access_plan.by_type("kubernetes:core/v1:Namespace"):
        assert associations <= set(namespace.dependencies), namespace.urn
