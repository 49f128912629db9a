"""The TrainingJob component, planned in isolation under the Pulumi mocks: torchrun and
resource settings from the GPU catalog, the Job's failure policy, the pod role, and the
Kubernetes objects checked against the upstream 1.33 schemas."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from infra.config import ConfigError, parse_stack_config
from infra.plan.engine import Plan, PlanError
from infra.plan.k8s import Manifest, manifests, validate_manifests
from workloads.training.config import MODEL_SIZES
from workloads.training.stopping import shutdown_timeouts, termination_grace_s

IMAGE = "public.ecr.aws/llmcloud/trainer:0.1.0"

PROGRAM = """
import pulumi
import pulumi_kubernetes as k8s

from infra.config import config_from_pulumi
from infra.context import make_context
from workloads.facts import BucketRef, ClusterFacts
from workloads.training.job import TrainingJob, TrainingJobArgs

config = config_from_pulumi()
ctx = make_context(config)
provider = k8s.Provider("k8s", kubeconfig="{}")
opts = pulumi.ResourceOptions(providers={"aws": ctx.aws_provider, "kubernetes": provider})
for job in config.training:
    facts = ClusterFacts(
        cluster_name="llm-dev-eks",
        environment=config.environment,
        datasets=BucketRef("llm-dev-datasets", "arn:aws:s3:::llm-dev-datasets"),
        checkpoints=BucketRef("llm-dev-checkpoints", "arn:aws:s3:::llm-dev-checkpoints"),
        models=BucketRef("llm-dev-models", "arn:aws:s3:::llm-dev-models"),
        data_key_arn="arn:aws:kms:us-east-1:123456789012:key/data",
        fsx_pvc_name="fsx-lustre" if job.use_fsx else None,
        pod_identity=config.security.pod_identity,
        oidc_provider_arn="arn:aws:iam::123456789012:oidc-provider/oidc.eks.example/id/X",
        oidc_issuer="https://oidc.eks.example/id/X",
    )
    TrainingJob(
        f"train-{job.name}",
        TrainingJobArgs(
            job=job, node_group=config.cluster.node_group(job.node_group), cluster=facts
        ),
        ctx,
        opts,
    )
"""

BASE: dict[str, Any] = {
    "llmcloud:environment": "dev",
    "llmcloud:network": {"availability_zones": ["us-east-1a", "us-east-1b"]},
    "llmcloud:cluster": {
        "gpu_node_groups": [
            {"name": "h100", "gpu": "H100", "availability_zones": ["us-east-1a"], "max_size": 4},
            {"name": "a100", "gpu": "A100", "availability_zones": ["us-east-1a"], "max_size": 2},
        ]
    },
    "llmcloud:storage": {"fsx": {}},
    "llmcloud:training": [
        {
            "name": "gpt-h100",
            "node_group": "h100",
            "nodes": 2,
            "image": IMAGE,
            "max_restarts": 2,
            "backoff_limit": 4,
            "trainer": {"model": "1b", "batch_size": 64, "parallel": "fsdp", "data": "web/v1"},
        },
        {
            "name": "gpt-a100",
            "node_group": "a100",
            "image": IMAGE,
            "use_fsx": False,
            "trainer": {"model": "125m", "steps": 100},
        },
    ],
}


def config(**overrides: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    out.update(overrides)
    return out


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> Plan:
    from infra.plan.engine import evaluate
    from tests.conftest import write_project

    project = write_project(tmp_path_factory.mktemp("training-job"), PROGRAM, config())
    return evaluate(project, "dev")


def objects(plan: Plan, kind: str) -> dict[str, dict[str, Any]]:
    return {m.name: m.object for m in manifests(plan) if m.kind == kind}


def trainer_container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]


def test_h100_job_runs_8_workers_per_node_with_32_efa_interfaces(plan: Plan):
    job = objects(plan, "Job")["gpt-h100"]
    container = trainer_container(job)
    assert "--nproc-per-node=8" in container["args"]
    assert "--nnodes=2" in container["args"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert container["resources"]["limits"]["vpc.amazonaws.com/efa"] == "32"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FI_PROVIDER"] == "efa" and env["FI_EFA_USE_DEVICE_RDMA"] == "1"
    assert env["NCCL_DEBUG"] == "WARN"


def test_a100_job_runs_8_workers_with_4_efa_interfaces(plan: Plan):
    container = trainer_container(objects(plan, "Job")["gpt-a100"])
    assert "--nproc-per-node=8" in container["args"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert container["resources"]["limits"]["vpc.amazonaws.com/efa"] == "4"


def test_job_is_indexed_one_pod_per_node_and_fails_fast_on_config_errors(plan: Plan):
    spec = objects(plan, "Job")["gpt-h100"]["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 2
    assert spec["backoffLimit"] == 4
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    rules = spec["podFailurePolicy"]["rules"]
    assert {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    } in rules
    assert {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}} in rules
    # the trainer's own validation runs first, in the same image, and exits 2 on bad config
    check = next(
        c for c in spec["template"]["spec"]["initContainers"] if c["name"] == "check-config"
    )
    assert check["command"][:5] == [
        "python",
        "-m",
        "workloads.training",
        "--check-config",
        "--world-size=16",
    ]
    assert check["image"] == IMAGE


def test_torchrun_rendezvous_runs_on_pod_0_through_the_headless_service(plan: Plan):
    job = objects(plan, "Job")["gpt-h100"]
    service = objects(plan, "Service")["rdzv-gpt-h100"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    pod = job["spec"]["template"]
    assert pod["spec"]["subdomain"] == "rdzv-gpt-h100"
    assert all(pod["metadata"]["labels"][k] == v for k, v in service["spec"]["selector"].items())
    args = trainer_container(job)["args"]
    assert args[: args.index("-m")] == [
        "--nnodes=2",
        "--nproc-per-node=8",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=gpt-h100-0.rdzv-gpt-h100:29500",
        "--rdzv-id=gpt-h100",
        "--max-restarts=2",
        f"--shutdown-timeout={shutdown_timeouts(termination_grace_s(_1B, 125))[0]}",
    ]
    assert args[args.index("-m") + 1] == "workloads.training"
    assert "--parallel=fsdp" in args and "--model=1b" in args
    # data and checkpoints on the FSx claim, checkpoints in the job's own directory
    assert "--data=/fsx/datasets/web/v1" in args
    assert "--checkpoint-dir=/fsx/checkpoints/gpt-h100" in args
    assert not any(a.startswith("--checkpoint-upload") for a in args)


def test_pods_land_on_their_node_group_with_shm_fsx_and_hardened_containers(plan: Plan):
    pod = objects(plan, "Job")["gpt-h100"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"llmcloud.io/node-group": "h100"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["fsx"]["persistentVolumeClaim"]["claimName"] == "fsx-lustre"
    container = trainer_container(objects(plan, "Job")["gpt-h100"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/dev/shm"] == "shm" and mounts["/fsx"] == "fsx"
    resources = container["resources"]
    for key in ("cpu", "memory"):
        assert resources["requests"][key] == resources["limits"][key]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["serviceAccountName"] == "gpt-h100"
    for c in pod["containers"] + pod["initContainers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        if c["name"] != "prepare-checkpoints":  # root only to chown its FSx directory
            assert sc["runAsNonRoot"] is True


def test_job_without_fsx_mirrors_checkpoints_to_its_s3_prefix_and_has_no_efa_env(plan: Plan):
    pod = objects(plan, "Job")["gpt-a100"]["spec"]["template"]["spec"]
    assert "fsx" not in {v["name"] for v in pod["volumes"]}
    args = pod["containers"][0]["args"]
    assert "--checkpoint-dir=/checkpoints" in args
    assert "--checkpoint-upload=s3://llm-dev-checkpoints/checkpoints/gpt-a100/" in args
    assert "--data=synthetic" in args
    # A100 is an EFA group too (p4d: 4 interfaces): libfabric is set up there as well
    env = {e["name"] for e in pod["containers"][0]["env"]}
    assert "FI_PROVIDER" in env


def test_pod_role_reads_datasets_writes_only_its_checkpoints_and_uses_the_data_key(plan: Plan):
    policies = [
        r
        for r in plan.resources
        if r.type == "aws:iam/rolePolicy:RolePolicy" and "gpt-h100" in r.urn
    ]
    assert len(policies) == 1
    statements = {s["Sid"]: s for s in json.loads(policies[0].inputs["policy"])["Statement"]}
    assert statements["ReadDatasets"]["Resource"] == "arn:aws:s3:::llm-dev-datasets/datasets/*"
    assert "s3:PutObject" not in statements["ReadDatasets"]["Action"]
    assert (
        statements["ReadWriteCheckpoints"]["Resource"]
        == "arn:aws:s3:::llm-dev-checkpoints/checkpoints/gpt-h100/*"
    )
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= set(
        statements["ReadWriteCheckpoints"]["Action"]
    )
    assert statements["UseDataKey"]["Resource"] == "arn:aws:kms:us-east-1:123456789012:key/data"
    assert set(statements["UseDataKey"]["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey"}
    associations = [
        r
        for r in plan.resources
        if r.type == "aws:eks/podIdentityAssociation:PodIdentityAssociation"
    ]
    assert {(a.inputs["namespace"], a.inputs["serviceAccount"]) for a in associations} == {
        ("training", "gpt-h100"),
        ("training", "gpt-a100"),
    }


def test_components_and_children_are_typed_and_parented(plan: Plan):
    components = [r for r in plan.resources if r.type == "llmcloud:workloads:TrainingJob"]
    assert {r.name for r in components} == {"train-gpt-h100", "train-gpt-a100"}
    job = next(r for r in plan.resources if r.type == "kubernetes:batch/v1:Job")
    assert job.parent in {c.urn for c in components}
    assert job.inputs["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"


def test_manifests_validate_against_kubernetes_1_33(plan: Plan):
    found = manifests(plan)
    assert {m.kind for m in found} >= {"Job", "Service", "ServiceAccount"}
    assert validate_manifests(found, "1.33") == []


def test_jobset_option_wraps_the_same_pod_and_validates(plan_program):
    cfg = config()
    cfg["llmcloud:training"] = [{**cfg["llmcloud:training"][0], "jobset": True}]
    plan = plan_program(PROGRAM, config=cfg)
    jobsets = [r for r in plan.resources if r.type == "kubernetes:jobset.x-k8s.io/v1alpha2:JobSet"]
    assert len(jobsets) == 1
    assert not [
        r
        for r in plan.resources
        if r.type in ("kubernetes:batch/v1:Job", "kubernetes:core/v1:Service")
    ]
    spec = jobsets[0].inputs["spec"]
    assert spec["network"]["enableDNSHostnames"] is True
    assert spec["failurePolicy"]["maxRestarts"] == 4
    replicated = spec["replicatedJobs"][0]
    job_spec = replicated["template"]["spec"]
    assert job_spec["completions"] == job_spec["parallelism"] == 2
    args = job_spec["template"]["spec"]["containers"][0]["args"]
    assert "--rdzv-endpoint=gpt-h100-node-0-0.gpt-h100:29500" in args
    # the Job template inside the JobSet is a valid batch/v1 Job
    inner = Manifest(
        urn=jobsets[0].urn,
        object={
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "gpt-h100-node-0", "namespace": "training"},
            "spec": job_spec,
        },
    )
    assert validate_manifests([inner], "1.33") == []


# --------------------------------------------------------------------------- bad config


def _job(**fields: Any) -> dict[str, Any]:
    return {**BASE["llmcloud:training"][0], **fields}


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (_job(nodes=0), "llmcloud:training[0].nodes = 0"),
        (
            _job(node_group="system"),
            "llmcloud:training[0].node_group = 'system': must name a GPU node group: h100, a100",
        ),
        (_job(node_group="h200"), "llmcloud:training[0].node_group = 'h200'"),
        (
            _job(trainer={"model": "13b"}),
            "llmcloud:training[0].trainer.model = '13b': allowed: tiny, small, 125m, 350m, 760m, 1b",
        ),
        (
            _job(trainer={"checkpoint_dir": "/x"}),
            "llmcloud:training[0].trainer.checkpoint_dir = '/x': set by the TrainingJob",
        ),
        (
            _job(use_fsx=False),
            "llmcloud:training[0].nodes = 2: a multi-node job needs use_fsx: true",
        ),
    ],
)
def test_bad_training_config_names_key_value_and_allowed(job: dict[str, Any], expected: str):
    raw = {"aws:region": "us-east-1", **config(**{"llmcloud:training": [job]})}
    with pytest.raises(ConfigError) as e:
        parse_stack_config(raw, project="demo", stack="dev")
    assert expected in str(e.value)


def test_global_batch_not_divisible_by_world_size_is_a_plan_error(plan_program):
    cfg = config(**{"llmcloud:training": [_job(trainer={"model": "1b", "batch_size": 100})]})
    with pytest.raises(PlanError) as e:
        plan_program(PROGRAM, config=cfg)
    message = str(e.value)
    assert "trainer.batch_size = 100" in message
    assert "divisible by the world size: 16 ranks (2 nodes x 8 GPUs of p5.48xlarge)" in message


_1B = MODEL_SIZES["1b"].parameters


def test_pods_have_the_grace_period_a_final_checkpoint_needs_and_the_trainer_knows_it(
    plan: Plan,
):
    """SIGTERM (eviction, spot reclaim) reaches torchrun, which forwards it and SIGKILLs the
    workers after --shutdown-timeout; the kubelet SIGKILLs the pod after the grace period.
    Both nest so the trainer's final save fits: a 1B model checkpoint (16 GB) at gp3's
    125 MB/s needs minutes, a 125M one about a minute."""
    for name, params in (("gpt-h100", _1B), ("gpt-a100", MODEL_SIZES["125m"].parameters)):
        job = objects(plan, "Job")[name]
        grace = job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace == termination_grace_s(params, 125)
        container = trainer_container(job)
        torchrun_s, trainer_s = shutdown_timeouts(grace)
        assert f"--shutdown-timeout={torchrun_s}" in container["args"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["LLMCLOUD_STOP_GRACE_S"] == str(trainer_s)
    assert (
        objects(plan, "Job")["gpt-h100"]["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"
        ]
        > 4 * 60
    )


def test_a_job_on_fsx_sizes_its_grace_period_from_the_file_systems_throughput(prod_plan):
    from infra.config import load_stack_config
    from tests.conftest import ROOT

    fsx = load_stack_config(ROOT, "prod").storage.fsx
    job = next(
        r for r in prod_plan.resources if r.type == "kubernetes:batch/v1:Job" and "gpt-1b" in r.name
    )
    grace = job.inputs["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == termination_grace_s(_1B, fsx.throughput_mb_per_s)
