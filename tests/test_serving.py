"""VllmService under mocks: a throwaway program builds the component from a stack config
(prod's unless a test changes it) with a fake Kubernetes provider, and the tests read what
the plan recorded."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import pins
from infra.config import parse_stack_config
from infra.plan.engine import Plan, evaluate
from infra.plan.k8s import manifests, validate_manifests
from tests.conftest import write_project
from workloads import pods
from workloads.serving import vllm_cli
from workloads.serving.fit import checkpoint_bytes
from workloads.serving.service import (
    ENGINE_WARMUP_S,
    LOCAL_LOAD_MB_PER_S,
    MIN_STARTUP_WINDOW_S,
    S3_STREAM_MB_PER_S,
)

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "llm-prod-models-abc1234"
KEY_ARN = "arn:aws:kms:us-east-2:123456789012:key/1111-2222"

PROGRAM = """
import json
import pulumi
import pulumi_kubernetes as kubernetes
from infra.config import parse_stack_config
from infra.context import make_context
from workloads.facts import BucketRef, ClusterFacts
from workloads.serving.service import VllmService, VllmServiceArgs

raw = json.loads({raw!r})
config = parse_stack_config(raw, project="llmcloud", stack={stack!r})
ctx = make_context(config)
k8s = kubernetes.Provider("k8s", kubeconfig="{{}}")
irsa = config.security.pod_identity == "irsa"
facts = ClusterFacts(
    cluster_name="llm-eks",
    environment=config.environment,
    datasets=BucketRef("llm-datasets", "arn:aws:s3:::llm-datasets"),
    checkpoints=BucketRef("llm-checkpoints", "arn:aws:s3:::llm-checkpoints"),
    models=BucketRef({bucket!r}, "arn:aws:s3:::" + {bucket!r}),
    data_key_arn={key_arn!r},
    pod_identity=config.security.pod_identity,
    oidc_provider_arn="arn:aws:iam::123456789012:oidc-provider/oidc.eks" if irsa else None,
    oidc_issuer="https://oidc.eks.us-east-2.amazonaws.com/id/ABC" if irsa else None,
)
for svc in config.serving:
    key = config.serving_api_key
    VllmService(
        svc.name,
        VllmServiceArgs(
            serving=svc,
            node_group=config.cluster.node_group(svc.node_group),
            cluster=facts,
            api_key=pulumi.Output.secret(key.get_secret_value()) if key else None,
            keda=config.cluster.addons.keda,
            metrics=config.cluster.addons.metrics,
        ),
        ctx,
        pulumi.ResourceOptions(providers={{"aws": ctx.aws_provider, "kubernetes": k8s}}),
    )
"""


def raw_config(stack: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]


@pytest.fixture(scope="module")
def plan_of(tmp_path_factory):
    """`plan_of(raw, stack)`: plan the component for a raw stack config (cached)."""
    cache: dict[str, Plan] = {}

    def run(raw: dict[str, Any], stack: str = "prod") -> Plan:
        key = json.dumps([raw, stack], sort_keys=True, default=str)
        if key not in cache:
            program = PROGRAM.format(
                raw=json.dumps(raw, default=str), stack=stack, bucket=BUCKET, key_arn=KEY_ARN
            )
            project = write_project(
                tmp_path_factory.mktemp("serving"), program, {"aws:region": "us-east-2"}
            )
            cache[key] = evaluate(project, "dev")
        return cache[key]

    return run


def prod_like(**serving_changes: Any) -> dict[str, Any]:
    """Prod's stack config with KEDA on and the endpoint opened on its own: to training and,
    over an internal NLB, to a client range (prod itself sends callers through the gateway)."""
    raw = copy.deepcopy(raw_config("prod"))
    raw["llmcloud:cluster"]["addons"] = {"metrics": "prometheus", "keda": True}
    raw["llmcloud:serving"][0].update(
        allowed_namespaces=["training"],
        allowed_cidrs=["10.40.0.0/16"],
        load_balancer="internal_nlb",
    )
    raw["llmcloud:serving"][0].update(serving_changes)
    return raw


def _prod_serving():
    return parse_stack_config(prod_like(), project="llmcloud", stack="prod").serving[0]


@pytest.fixture(scope="module")
def prod(plan_of) -> Plan:
    return plan_of(prod_like())


def one(plan: Plan, kind: str) -> dict[str, Any]:
    found = [m.object for m in manifests(plan) if m.kind == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def vllm_container(spec: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in spec["containers"] if c["name"] == "vllm")


def flag(container: dict[str, Any], name: str) -> str:
    args = container["args"]
    return args[args.index(name) + 1]


def selects(selector: dict[str, str], pod_labels: dict[str, str]) -> bool:
    return all(pod_labels.get(k) == v for k, v in selector.items())


def role_policy(plan: Plan) -> dict[str, Any]:
    (policy,) = [r for r in plan.resources if r.type == "aws:iam/rolePolicy:RolePolicy"]
    return json.loads(policy.inputs["policy"])


def core_objects_valid(plan: Plan) -> list[str]:
    """Schema errors of every core object. A Secret's data is masked in the plan (the SDK
    makes it a secret), so it is validated with a stand-in of the same shape."""
    items = manifests(plan)
    for item in items:
        if item.kind == "Secret" and item.object.get("stringData") == "[secret]":
            item.object["stringData"] = {"api-key": "stand-in"}
    return validate_manifests(items, "1.33")


# --------------------------------------------------------------------------- prod, one node


def test_component_groups_its_resources(prod):
    (component,) = [r for r in prod.resources if r.type == "llmcloud:workloads:VllmService"]
    children = {r.type for r in prod.children(component.urn)}
    assert {
        "kubernetes:apps/v1:Deployment",
        "kubernetes:core/v1:Service",
        "kubernetes:core/v1:Secret",
        "kubernetes:core/v1:ServiceAccount",
        "kubernetes:networking.k8s.io/v1:NetworkPolicy",
        "kubernetes:policy/v1:PodDisruptionBudget",
        "llmcloud:security:PodRole",
    } <= children


def test_gpu_limit_equals_tensor_parallel_size(prod):
    container = vllm_container(pod_spec(one(prod, "Deployment")))
    tp = flag(container, "--tensor-parallel-size")
    assert tp == "4"  # llama-70b: gpus_per_replica 4 on 4-GPU g6e.12xlarge
    assert container["resources"]["limits"]["nvidia.com/gpu"] == tp
    assert container["resources"]["requests"]["nvidia.com/gpu"] == tp
    assert "--pipeline-parallel-size" not in container["args"]


def test_vllm_flags_come_from_the_config(prod):
    container = vllm_container(pod_spec(one(prod, "Deployment")))
    assert container["image"] == pins.image("vllm")
    assert flag(container, "--served-model-name") == "meta-llama/Llama-3.1-70B-Instruct"
    assert flag(container, "--max-model-len") == "8192"
    assert flag(container, "--max-num-seqs") == "256"
    assert flag(container, "--gpu-memory-utilization") == "0.9"
    assert flag(container, "--quantization") == "fp8"
    assert container["command"] == ["vllm", "serve"]
    assert container["args"][0] == "/models/llama-70b"  # positional; init_sync: the local copy
    assert "--model" not in container["args"]


def test_startup_probe_allows_the_model_load_time(prod, plan_of):
    svc_bytes = checkpoint_bytes(_prod_serving())
    container = vllm_container(pod_spec(one(prod, "Deployment")))
    probe = container["startupProbe"]
    window_s = probe["periodSeconds"] * probe["failureThreshold"]
    load_s = svc_bytes / (LOCAL_LOAD_MB_PER_S * 1e6)
    assert probe["httpGet"]["path"] == "/health"
    assert window_s >= load_s + ENGINE_WARMUP_S and window_s >= MIN_STARTUP_WINDOW_S
    assert window_s >= 15 * 60  # a 70B model: minutes, not seconds
    for name in ("readinessProbe", "livenessProbe"):
        assert container[name]["httpGet"]["path"] == "/health"

    # streaming from S3 is slower than reading the NVMe copy: the window grows with it
    streamed = vllm_container(pod_spec(one(plan_of(prod_like(loader="s3_streamer")), "Deployment")))
    streamed_window = streamed["startupProbe"]["failureThreshold"] * 10
    assert streamed_window >= svc_bytes / (S3_STREAM_MB_PER_S * 1e6) + ENGINE_WARMUP_S
    assert streamed_window > window_s


def test_model_is_synced_from_its_prefix_by_an_init_container(prod):
    spec = pod_spec(one(prod, "Deployment"))
    (init,) = spec["initContainers"]
    script = init["args"][0]
    assert (
        f"aws s3 sync --only-show-errors --no-progress s3://{BUCKET}/llama-3.1-70b-instruct/ /models/llama-70b"
        in script
    )
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["models"]
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    # the emptyDir is sized for the checkpoint
    size_gib = int(volumes["models"]["emptyDir"]["sizeLimit"].removesuffix("Gi"))
    assert size_gib * 2**30 >= checkpoint_bytes(_prod_serving())


def test_s3_streamer_loads_from_the_bucket_without_an_init_container(plan_of):
    spec = pod_spec(one(plan_of(prod_like(loader="s3_streamer")), "Deployment"))
    container = vllm_container(spec)
    assert container["args"][0] == f"s3://{BUCKET}/llama-3.1-70b-instruct/"
    assert flag(container, "--load-format") == "runai_streamer"
    assert "initContainers" not in spec


def test_api_key_is_required_from_a_secret(prod):
    container = vllm_container(pod_spec(one(prod, "Deployment")))
    env = {e["name"]: e for e in container["env"]}
    ref = env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]
    secret = one(prod, "Secret")
    assert ref["name"] == secret["metadata"]["name"]
    assert secret["stringData"] == "[secret]"  # never plain text in state or plan
    # no serving_api_key in prod's config: a generated key, stable in state
    (password,) = [r for r in prod.resources if r.type.startswith("random:")]
    assert password.inputs["length"] >= 32


def test_configured_api_key_is_used_instead_of_a_generated_one(plan_of):
    raw = prod_like()
    raw["llmcloud:serving_api_key"] = {"secure": "v1:AAAA"}
    plan = plan_of(raw)
    assert not [r for r in plan.resources if r.type.startswith("random:")]
    assert one(plan, "Secret")["stringData"] == "[secret]"


def test_network_policy_selects_the_pods_and_admits_only_allowed_sources(prod):
    policy = one(prod, "NetworkPolicy")["spec"]
    pod_labels = one(prod, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["podSelector"]["matchLabels"], pod_labels)
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    sources = []
    for rule in policy["ingress"]:
        assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
        for peer in rule["from"]:
            sources.append(peer)
    namespaces = [
        tuple(p["namespaceSelector"].get("matchExpressions", [{}])[0].get("values", ()))
        or p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for p in sources
        if "namespaceSelector" in p
    ]
    assert namespaces == [("training",), "monitoring"]
    assert [p["ipBlock"]["cidr"] for p in sources if "ipBlock" in p] == ["10.40.0.0/16"]
    assert not any("podSelector" in p and "namespaceSelector" not in p for p in sources)


def test_internal_nlb_only_when_configured(prod, plan_of):
    service = one(prod, "Service")
    assert service["spec"]["type"] == "LoadBalancer"
    annotations = service["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"
    assert service["spec"]["loadBalancerSourceRanges"] == ["10.40.0.0/16"]
    assert service["spec"]["externalTrafficPolicy"] == "Local"

    cluster_ip = one(plan_of(prod_like(load_balancer="none")), "Service")
    assert cluster_ip["spec"]["type"] == "ClusterIP"
    assert "annotations" not in cluster_ip["metadata"]


def test_internal_nlb_without_client_ranges_is_flagged(plan_of):
    plan = plan_of(prod_like(allowed_cidrs=[]))
    assert any("internal_nlb with no allowed_cidrs" in w for w in plan.warnings)
    ingress = one(plan, "NetworkPolicy")["spec"]["ingress"]
    assert not [peer for rule in ingress for peer in rule["from"] if "ipBlock" in peer]


def test_pdb_and_zone_spread_cover_the_pods(prod):
    pod_labels = one(prod, "Deployment")["spec"]["template"]["metadata"]["labels"]
    pdb = one(prod, "PodDisruptionBudget")["spec"]
    assert selects(pdb["selector"]["matchLabels"], pod_labels)
    assert pdb["maxUnavailable"] == 1
    spread = pod_spec(one(prod, "Deployment"))["topologySpreadConstraints"]
    zone = [c for c in spread if c["topologyKey"] == "topology.kubernetes.io/zone"]
    assert zone and selects(zone[0]["labelSelector"]["matchLabels"], pod_labels)


def test_keda_scales_on_waiting_requests_and_owns_the_replica_count(prod):
    (scaled,) = [m.object for m in manifests(prod) if m.kind == "ScaledObject"]
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "llama-70b",
    }
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 6)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert "vllm:num_requests_waiting" in trigger["metadata"]["query"]
    assert trigger["metadata"]["threshold"] == "4"
    assert "replicas" not in one(prod, "Deployment")["spec"]
    assert not [m for m in manifests(prod) if m.kind == "HorizontalPodAutoscaler"]


def test_without_keda_an_hpa_scales_on_cpu(plan_of):
    raw = prod_like()
    raw["llmcloud:cluster"]["addons"]["keda"] = False
    plan = plan_of(raw)
    hpa = one(plan, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == "llama-70b"
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert not [m for m in manifests(plan) if m.kind == "ScaledObject"]


def test_fixed_size_endpoint_has_replicas_and_no_autoscaler(plan_of):
    plan = plan_of(prod_like(replicas_min=3, replicas_max=3))
    assert one(plan, "Deployment")["spec"]["replicas"] == 3
    kinds = {m.kind for m in manifests(plan)}
    assert not kinds & {"ScaledObject", "HorizontalPodAutoscaler"}


def test_pod_monitor_scrapes_vllm_metrics(prod):
    (monitor,) = [m.object for m in manifests(prod) if m.kind == "PodMonitor"]
    pod_labels = one(prod, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selects(monitor["spec"]["selector"]["matchLabels"], pod_labels)
    assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"


def test_pod_role_reads_only_the_model_prefix(prod):
    statements = role_policy(prod)["Statement"]
    by_action: dict[str, dict[str, Any]] = {}
    for s in statements:
        for action in [s["Action"]] if isinstance(s["Action"], str) else s["Action"]:
            by_action[action] = s
    assert (
        by_action["s3:GetObject"]["Resource"] == f"arn:aws:s3:::{BUCKET}/llama-3.1-70b-instruct/*"
    )
    listing = by_action["s3:ListBucket"]
    assert listing["Resource"] == f"arn:aws:s3:::{BUCKET}"
    assert "llama-3.1-70b-instruct/*" in listing["Condition"]["StringLike"]["s3:prefix"]
    assert by_action["kms:Decrypt"]["Resource"] == KEY_ARN
    assert not [a for a in by_action if a.startswith("s3:Put") or a.startswith("s3:Delete")]
    (association,) = [
        r
        for r in prod.resources
        if r.type == "aws:eks/podIdentityAssociation:PodIdentityAssociation"
    ]
    assert (association.inputs["namespace"], association.inputs["serviceAccount"]) == (
        "serving",
        "llama-70b",
    )
    assert pod_spec(one(prod, "Deployment"))["serviceAccountName"] == "llama-70b"


def test_every_container_is_locked_down_and_sized(prod):
    spec = pod_spec(one(prod, "Deployment"))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    assert spec["nodeSelector"] == {"llmcloud.io/node-group": "l40s"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    for container in spec["containers"] + spec["initContainers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][part]), container["name"]
        image = container["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")


def test_all_kubernetes_objects_validate_against_the_1_33_schemas(prod, plan_of):
    assert core_objects_valid(prod) == []
    raw = prod_like(load_balancer="none", loader="s3_streamer")
    raw["llmcloud:cluster"]["addons"]["keda"] = False
    assert core_objects_valid(plan_of(raw)) == []


# --------------------------------------------------------------------------- multi-node


@pytest.fixture(scope="module")
def multi_node(plan_of) -> Plan:
    # llama-405B in fp8 on 2 nodes of 8 H100: tensor parallel 8, pipeline parallel 2
    return plan_of(
        prod_like(
            name="llama-405b",
            model="meta-llama/Llama-3.1-405B-Instruct",
            model_prefix="llama-3.1-405b-instruct/",
            params_billion=405,
            node_group="h100",
            gpus_per_replica=16,
            replicas_min=1,
            replicas_max=2,
            loader="s3_streamer",
            load_balancer="none",
        )
    )


def test_multi_node_replica_runs_on_a_leader_worker_set(multi_node):
    assert not [m for m in manifests(multi_node) if m.kind == "Deployment"]
    lws = one(multi_node, "LeaderWorkerSet")
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    template = lws["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2
    leader = vllm_container(template["leaderTemplate"]["spec"])
    worker = vllm_container(template["workerTemplate"]["spec"])
    for container, rank in ((leader, "0"), (worker, "$(LWS_WORKER_INDEX)")):
        assert container["command"] == ["vllm", "serve"]
        assert container["args"][0] == f"s3://{BUCKET}/llama-3.1-405b-instruct/"
        assert flag(container, "--tensor-parallel-size") == "8"
        assert flag(container, "--pipeline-parallel-size") == "2"
        # vLLM's multiprocessing backend across nodes: rank 0 on the leader, LWS's index on
        # the workers, the leader's address from LWS
        assert flag(container, "--distributed-executor-backend") == "mp"
        assert flag(container, "--nnodes") == "2"
        assert flag(container, "--node-rank") == rank
        assert flag(container, "--master-addr") == "$(LWS_LEADER_ADDRESS)"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert "--headless" in worker["args"] and "--headless" not in leader["args"]
    assert "startupProbe" in leader and "startupProbe" not in worker


def test_multi_node_pods_request_the_nodes_efa_interfaces_and_set_nccl_like_training(
    multi_node,
):
    config = parse_stack_config(raw_config("prod"), project="llmcloud", stack="prod")
    h100 = config.cluster.node_group("h100")
    assert h100.efa_enabled and h100.instance.efa_interfaces > 0
    template = one(multi_node, "LeaderWorkerSet")["spec"]["leaderWorkerTemplate"]
    for role in ("leaderTemplate", "workerTemplate"):
        container = vllm_container(template[role]["spec"])
        efa = str(h100.instance.efa_interfaces)
        assert container["resources"]["limits"]["vpc.amazonaws.com/efa"] == efa
        assert container["resources"]["requests"]["vpc.amazonaws.com/efa"] == efa
        env = {e["name"]: e for e in container["env"]}
        # the training job's definition, not a copy
        for name, value in pods.efa_environment(h100).items():
            assert env[name]["value"] == value
        assert env["FI_PROVIDER"]["value"] == "efa"
        assert env["VLLM_HOST_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_leader_and_worker_command_lines_parse_in_the_pinned_vllm(multi_node, plan_of):
    cli = vllm_cli.load(vllm_cli.image_version(pins.image("vllm")))
    lws_env = {"LWS_LEADER_ADDRESS": "llama-405b-0.llama-405b.serving", "LWS_WORKER_INDEX": "1"}
    template = one(multi_node, "LeaderWorkerSet")["spec"]["leaderWorkerTemplate"]
    streamed = vllm_container(pod_spec(one(plan_of(prod_like(loader="s3_streamer")), "Deployment")))
    containers = [vllm_container(template[t]["spec"]) for t in ("leaderTemplate", "workerTemplate")]
    for container in [*containers, streamed]:
        argv = [vllm_cli.expand_kube_vars(str(a), lws_env) for a in container["args"]]
        assert vllm_cli.serve_argv_problems(argv, cli) == [], argv
        assert vllm_cli.env_problems([e["name"] for e in container["env"]], cli) == []


def test_single_node_replicas_request_no_efa(prod):
    container = vllm_container(pod_spec(one(prod, "Deployment")))
    assert "vpc.amazonaws.com/efa" not in container["resources"]["limits"]
    assert "FI_PROVIDER" not in {e["name"] for e in container["env"]}


def test_multi_node_service_targets_leaders_and_pods_of_a_group_may_talk(multi_node):
    service = one(multi_node, "Service")
    assert service["spec"]["selector"]["leaderworkerset.sigs.k8s.io/worker-index"] == "0"
    policy = one(multi_node, "NetworkPolicy")["spec"]
    peers = [r for r in policy["ingress"] if "ports" not in r]
    assert peers and "podSelector" in peers[0]["from"][0]
    (scaled,) = [m.object for m in manifests(multi_node) if m.kind == "ScaledObject"]
    assert scaled["spec"]["scaleTargetRef"]["kind"] == "LeaderWorkerSet"
    assert core_objects_valid(multi_node) == []


# --------------------------------------------------------------------------- dev: IRSA


def test_irsa_annotates_the_service_account(plan_of):
    raw = copy.deepcopy(raw_config("dev"))
    raw["llmcloud:security"]["pod_identity"] = "irsa"
    plan = plan_of(raw, "dev")
    account = one(plan, "ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )
    assert not [
        r
        for r in plan.resources
        if r.type == "aws:eks/podIdentityAssociation:PodIdentityAssociation"
    ]
    assert account["automountServiceAccountToken"] is False


def test_startup_window_formula_is_stated(prod):
    svc = _prod_serving()
    expected = max(
        MIN_STARTUP_WINDOW_S,
        math.ceil(2 * checkpoint_bytes(svc) / (LOCAL_LOAD_MB_PER_S * 1e6) + ENGINE_WARMUP_S),
    )
    probe = vllm_container(pod_spec(one(prod, "Deployment")))["startupProbe"]
    assert probe["failureThreshold"] == math.ceil(expected / probe["periodSeconds"])
