"""The GPU budget: the GPUs a stack can hold when every node group is at its maximum size
must not exceed the stack's budget (policies.gpu_budget, or the policy config's maxGpus).
GPUs per node come from the GPU catalog, the same data the node groups and cost use.
"""

from __future__ import annotations

from typing import Any

from pulumi_policy import PolicyConfigSchema

from infra.catalog import load_catalog
from policies.rules.base import (
    PolicySettings,
    Reporter,
    RuleInfo,
    RuleStackPolicy,
    StackView,
    as_list,
    get,
    is_unknown,
)
from policies.rules.ec2 import LAUNCH_TEMPLATE, NODE_GROUP

INSTANCE = "aws:ec2/instance:Instance"
_GPU_FAMILIES = ("p2", "p3", "p4", "p5", "p6", "g4", "g5", "g6", "g7")

GPU_BUDGET = RuleInfo(
    id="gpu-budget",
    title="GPUs at maximum scale stay within the stack's budget",
    description="The total GPUs of all node groups (and instances) at their maximum size do not "
    "exceed the stack's GPU budget.",
    severity="high",
    remediation="Lower max_size of GPU node groups, or raise policies.gpu_budget after the "
    "spend is approved.",
    kind="stack",
)


def _gpus_per_node(instance_types: list[str]) -> tuple[int, list[str]]:
    """GPUs of the largest of the types, and the GPU-looking types the catalog lacks."""
    catalog = load_catalog()
    best, unknown = 0, []
    for itype in instance_types:
        found = catalog.instance_types.get(itype)
        if found is not None:
            best = max(best, found.gpu_count)
        elif itype.split(".", 1)[0].startswith(_GPU_FAMILIES):
            unknown.append(itype)
    return best, unknown


def _launch_templates(view: StackView, group: Any, templates: list[Any]) -> list[Any]:
    """The launch template a node group names (`launchTemplate.id` or `.name`)."""
    ref = view.props[group.urn].get("launchTemplate")
    if not isinstance(ref, dict):
        return []
    wanted = {v for v in (ref.get("id"), ref.get("name")) if v and not is_unknown(v)}
    found = [t for t in templates if wanted & {view.props[t.urn].get(k) for k in ("id", "name")}]
    return found or view.linked(group, "launchTemplate", templates)


def check_budget(args: Any, report: Reporter, settings: PolicySettings) -> None:
    configured = args.get_config().get("maxGpus")
    budget = int(configured) if configured is not None else settings.gpu_budget
    if budget is None:
        return
    view = StackView.of(args)
    templates = list(view.of_type(LAUNCH_TEMPLATE))
    stack = next((r for r in view.resources if r.resource_type == "pulumi:pulumi:Stack"), None)
    parts: list[str] = []
    total = 0
    for group in view.of_type(NODE_GROUP):
        props = view.props[group.urn]
        types = [t for t in as_list(props.get("instanceTypes")) if isinstance(t, str)]
        if not types:
            for template in _launch_templates(view, group, templates):
                itype = view.props[template.urn].get("instanceType")
                if isinstance(itype, str) and not is_unknown(itype):
                    types.append(itype)
        max_size = get(props, "scalingConfig", "maxSize", default=0)
        if is_unknown(max_size):
            continue
        per_node, unknown = _gpus_per_node(types)
        for itype in unknown:
            report(
                f"node group {group.name!r}: instance type {itype} is not in the GPU catalog; "
                "its GPUs cannot be counted against the budget",
                group.urn,
            )
        if per_node:
            total += per_node * int(max_size)
            parts.append(f"{group.name} {int(max_size)}×{per_node}")
    for instance in view.of_type(INSTANCE):
        itype = view.props[instance.urn].get("instanceType")
        per_node, _ = _gpus_per_node([itype] if isinstance(itype, str) else [])
        if per_node:
            total += per_node
            parts.append(f"{instance.name} 1×{per_node}")
    if total > budget:
        report(
            f"the stack can scale to {total} GPUs ({', '.join(parts)}), over its budget of "
            f"{budget}",
            stack.urn if stack is not None else None,
        )


BUDGET_SCHEMA = PolicyConfigSchema(
    properties={
        "maxGpus": {
            "type": "integer",
            "minimum": 0,
            "description": "most GPUs the stack may hold at maximum scale",
        }
    }
)


def policies(settings: PolicySettings) -> list[Any]:
    return [RuleStackPolicy(GPU_BUDGET, settings, check_budget, config_schema=BUDGET_SCHEMA)]
