"""The scheduling simulation of `llmcloud plan`: every pod template of the plan against the
node shapes of its node groups at max size, as the Kubernetes scheduler would place them."""

from __future__ import annotations

from collections.abc import Sequence

from infra.plan.engine import Plan, Resource

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"


def launch_template_of(group: Resource, templates: Sequence[Resource]) -> Resource | None:
    """The launch template a node group names (by id, else by name)."""
    spec = group.inputs.get("launchTemplate") or {}
    wanted_id, wanted_name = spec.get("id"), spec.get("name")
    for t in templates:
        if wanted_id and wanted_id in (t.id, t.outputs.get("id")):
            return t
    for t in templates:
        if wanted_name and wanted_name in (t.inputs.get("name"), t.outputs.get("name")):
            return t
    return None


def instance_types_of(plan: Plan, group: Resource) -> list[str]:
    """A node group's instance types: its own, else its launch template's one (EKS takes
    the type from one place: a Capacity Block group names it in the template)."""
    types = [str(t) for t in group.inputs.get("instanceTypes") or []]
    if types:
        return types
    template = launch_template_of(group, plan.by_type(LAUNCH_TEMPLATE))
    itype = template.inputs.get("instanceType") if template is not None else None
    return [str(itype)] if itype else []
