"""The shared pod builder (workloads/pods.py): sizing from the catalog, security contexts,
Guaranteed-QoS resources and GPU placement, and that training and serving pods built from it
land on the node groups the cluster plans."""

from __future__ import annotations

from typing import Any

import pytest

from infra.config import GpuNodeGroupConfig
from infra.contracts import (
    EFA_RESOURCE,
    EKS_TAINT_EFFECTS,
    GPU_RESOURCE,
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    NODE_GROUP_LABEL,
    RUN_AS_UID,
    gpu_toleration,
)
from workloads import pods


def group(gpu: str, **kwargs: Any) -> GpuNodeGroupConfig:
    return GpuNodeGroupConfig(name=gpu.lower(), gpu=gpu, **kwargs)


# ----------------------------------------------------------------------------- sizing


def test_a_whole_node_pod_gets_every_gpu_and_efa_interface_and_its_share_of_cpu_and_memory():
    h100 = group("H100")  # p5.48xlarge: 192 vCPUs, 2048 GiB, 8 GPUs, 32 EFA interfaces
    size = pods.pod_size(h100, node_share=0.85, shm_max_gib=64, efa=True, ephemeral_gib=50)
    assert (size.cpu, size.memory_gib, size.gpus, size.efa) == (163, 1740, 8, 32)
    assert size.shm_gib == 64  # a quarter of memory, capped
    assert size.ephemeral_gib == 50


def test_a_pod_on_part_of_a_node_gets_its_gpus_share_of_cpu_and_memory():
    l40s = group("L40S", instance_type="g6e.12xlarge")  # 48 vCPUs, 384 GiB, 4 GPUs
    size = pods.pod_size(l40s, node_share=0.75, shm_max_gib=16, gpus=1)
    assert (size.cpu, size.memory_gib, size.gpus) == (9, 72, 1)  # 48/4*0.75, 384/4*0.75
    assert size.shm_gib == 16  # 72 // 4 = 18, capped at 16


def test_efa_is_requested_only_when_asked_and_the_group_has_it_enabled():
    assert (
        pods.pod_size(group("H100", efa=False), node_share=0.85, shm_max_gib=64, efa=True).efa == 0
    )
    assert pods.pod_size(group("H100"), node_share=0.85, shm_max_gib=64).efa == 0


def test_a_tiny_share_never_drops_below_one_core_and_the_memory_floor():
    size = pods.pod_size(group("L4"), node_share=0.01, shm_max_gib=16)  # g6.xlarge
    assert size.cpu == 1
    assert size.memory_gib == pods.MIN_MEMORY_GIB
    assert size.shm_gib == 1


# ----------------------------------------------------------------------------- resources


def test_resources_are_guaranteed_qos_with_ephemeral_storage_requested_only():
    resources = pods.guaranteed_resources(8, 64, gpus=2, efa=4, ephemeral_gib=100)
    limits = {"cpu": "8", "memory": "64Gi", GPU_RESOURCE: "2", EFA_RESOURCE: "4"}
    assert resources["limits"] == limits
    assert resources["requests"] == {**limits, "ephemeral-storage": "100Gi"}


def test_resources_without_gpus_name_no_extended_resource():
    resources = pods.guaranteed_resources(2, 4)
    assert resources == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }


def test_size_resources_carry_every_part_of_the_size():
    size = pods.PodSize(cpu=4, memory_gib=32, shm_gib=8, gpus=1, efa=0, ephemeral_gib=30)
    assert pods.size_resources(size) == pods.guaranteed_resources(4, 32, gpus=1, ephemeral_gib=30)


# ----------------------------------------------------------------------------- security


def test_restricted_container_meets_the_restricted_pod_security_standard():
    # https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted
    for context in (pods.restricted_container(), pods.restricted_container(uid=RUN_AS_UID)):
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["runAsNonRoot"] is True
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert context["readOnlyRootFilesystem"] is True
    pinned = pods.restricted_container(uid=RUN_AS_UID)
    assert pinned["runAsUser"] == pinned["runAsGroup"] == RUN_AS_UID
    assert "runAsUser" not in pods.restricted_container()  # the pod's UID applies


def test_a_root_container_gets_only_the_capabilities_it_names():
    context = pods.root_container(add_capabilities=("CHOWN",))
    assert context["runAsUser"] == 0 and context["runAsNonRoot"] is False
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert context["allowPrivilegeEscalation"] is False


def test_pod_security_context_runs_every_container_as_the_workload_uid_unless_one_needs_root():
    assert pods.pod_security_context() == {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_UID,
        "runAsGroup": RUN_AS_UID,
        "fsGroup": RUN_AS_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pods.pod_security_context(uid=None) == {"seccompProfile": {"type": "RuntimeDefault"}}


# ----------------------------------------------------------------------------- placement


def test_gpu_placement_selects_the_node_group_and_tolerates_the_gpu_taint():
    placement = pods.gpu_placement("h100")
    assert placement == {
        "nodeSelector": {NODE_GROUP_LABEL: "h100"},
        "tolerations": [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": GPU_TAINT_EFFECT}],
    }
    placement["tolerations"][0]["effect"] = "changed"  # a fresh copy each time
    assert pods.gpu_placement("h100")["tolerations"] == [gpu_toleration()]


POD_TEMPLATES = {  # type -> where the pod spec sits in its inputs
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
}


def _gpu_pod_specs(plan) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for token, path in POD_TEMPLATES.items():
        for resource in plan.by_type(token):
            spec: Any = resource.inputs
            for key in path:
                spec = spec[key]
            containers = spec["containers"]
            if any(GPU_RESOURCE in c["resources"]["limits"] for c in containers):
                specs.append((resource.name, spec))
    return specs


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_training_and_serving_pods_land_on_a_planned_gpu_node_group_and_tolerate_its_taint(
    stack, stack_report
):
    plan = stack_report(stack).plan
    groups = {
        r.inputs["labels"][NODE_GROUP_LABEL]: r for r in plan.by_type("aws:eks/nodeGroup:NodeGroup")
    }
    specs = _gpu_pod_specs(plan)
    assert specs, f"{stack} plans no GPU pod"
    for name, spec in specs:
        selected = spec["nodeSelector"][NODE_GROUP_LABEL]
        assert selected in groups, f"{name} selects node group {selected!r}, not planned"
        taints = groups[selected].inputs.get("taints") or []
        for taint in taints:
            effect = EKS_TAINT_EFFECTS[taint["effect"]]
            assert any(
                t["key"] == taint["key"] and t["operator"] == "Exists" and t["effect"] == effect
                for t in spec["tolerations"]
            ), f"{name} does not tolerate {taint['key']}:{effect} of node group {selected}"
        # one builder: every container of a GPU pod is locked down the same way
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert "ALL" in context["capabilities"]["drop"], (name, container["name"])
