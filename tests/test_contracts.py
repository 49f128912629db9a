"""The names infra, workloads and policies must agree on are spelled once, in infra/contracts.py.

A label, taint, resource name, namespace or address written again elsewhere can drift from
the one the other side reads (a node label the workloads no longer select, a taint they no
longer tolerate); these tests find a second spelling before it drifts."""

from __future__ import annotations

import ast

import pytest

from infra import contracts
from tests.conftest import ROOT

SOURCE_ROOTS = ("infra", "workloads", "policies")
# Values too generic to be told apart from ordinary strings and numbers of the same spelling.
GENERIC = {
    contracts.PART_OF,  # "llmcloud": also the project's name
    contracts.SYSTEM_GROUP,  # "system"
    contracts.GPU_TAINT_EFFECT,  # "NoSchedule": a Kubernetes enum every scheduler check reads
    contracts.GPU_TAINT_VALUE,  # "true"
    contracts.DNS_PORT,
    contracts.POD_IDENTITY_AGENT_PORT,
}
CONTRACT_VALUES = {
    name: value
    for name, value in vars(contracts).items()
    if name.isupper()
    and isinstance(value, str | int)
    and not isinstance(value, bool)
    and value not in GENERIC
}


def _spellings() -> list[tuple[str, int, object]]:
    values = set(CONTRACT_VALUES.values())
    found = []
    for root in SOURCE_ROOTS:
        for path in sorted((ROOT / root).rglob("*.py")):
            if path == ROOT / "infra" / "contracts.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if (
                    isinstance(node, ast.Constant)
                    and not isinstance(node.value, bool)
                    and isinstance(node.value, str | int)
                    and node.value in values
                ):
                    found.append((str(path.relative_to(ROOT)), node.lineno, node.value))
    return found


def test_the_contract_values_include_the_cross_module_names():
    assert {
        "NODE_GROUP_LABEL",
        "GPU_TAINT_KEY",
        "GPU_RESOURCE",
        "EFA_RESOURCE",
        "MONITORING_NAMESPACE",
        "POD_IDENTITY_AGENT_CIDR",
        "RUN_AS_UID",
    } <= set(CONTRACT_VALUES)


def test_no_module_spells_a_contract_value_again():
    assert not _spellings(), "import these from infra.contracts: " + ", ".join(
        f"{path}:{line} {value!r}" for path, line, value in _spellings()
    )


def test_the_gpu_toleration_tolerates_the_taint_gpu_node_groups_carry():
    # GPU node groups are tainted `nvidia.com/gpu=true` with EKS's NO_SCHEDULE, the resource the
    # NVIDIA device plugin advertises is `nvidia.com/gpu` too (the pack's rule pairs the two).
    assert contracts.GPU_RESOURCE == contracts.GPU_TAINT_KEY == "nvidia.com/gpu"
    assert contracts.gpu_toleration() == {
        "key": contracts.GPU_TAINT_KEY,
        "operator": "Exists",  # whatever the taint's value
        "effect": contracts.EKS_TAINT_EFFECTS["NO_SCHEDULE"],
    }


@pytest.mark.parametrize("namespace", contracts.SYSTEM_NAMESPACES)
def test_reserved_namespaces_cover_kubernetes_own_and_monitoring(namespace):
    assert namespace in contracts.RESERVED_NAMESPACES
    assert contracts.MONITORING_NAMESPACE in contracts.RESERVED_NAMESPACES
