"""URNs are part of the interface: in Pulumi a renamed resource is a delete and a create (a KMS
key, a bucket, a namespace and its workloads). Every URN in the committed snapshot of each stack
must still be planned, or be answered by a resource that declares it in `aliases`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import STACKS

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"


def _snapshot(stack: str) -> list[str]:
    return (SNAPSHOTS / f"urns-{stack}.txt").read_text().split()


def missing_urns(snapshot: list[str], plan) -> list[str]:
    """Snapshot URNs that no planned resource has, either as its URN or as an alias."""
    answered = {r.urn for r in plan.resources}
    for r in plan.resources:
        answered.update(r.aliases)
    return [urn for urn in snapshot if urn not in answered]


@pytest.mark.parametrize("stack", STACKS)
def test_every_snapshot_urn_is_still_planned_or_aliased(stack, stack_report):
    missing = missing_urns(_snapshot(stack), stack_report(stack).plan)
    assert not missing, (
        f"{len(missing)} resource(s) of {stack} would be replaced (renamed without `aliases`): "
        + ", ".join(missing[:5])
    )


def test_a_rename_without_alias_is_caught_and_an_alias_answers_for_it(plan_program):
    program = """
        import pulumi
        import pulumi_aws as aws

        class Lake(pulumi.ComponentResource):
            def __init__(self, name, opts=None):
                super().__init__("demo:storage:Lake", name, None, opts)
                aws.s3.Bucket(f"{name}-data", opts=pulumi.ResourceOptions(parent=self))

        Lake("{name}", opts=pulumi.ResourceOptions(aliases={aliases}))
    """
    before = plan_program(program.replace("{name}", "lake").replace("{aliases}", "[]"))
    snapshot = sorted(r.urn for r in before.resources)
    renamed = plan_program(program.replace("{name}", "lake2").replace("{aliases}", "[]"))
    assert len(missing_urns(snapshot, renamed)) == 2  # the component and its bucket child
    aliased = plan_program(
        program.replace("{name}", "lake2").replace("{aliases}", "[pulumi.Alias(name='lake')]")
    )
    # The component answers to its old URN; its child inherits the alias from its parent,
    # as the engine does.
    assert missing_urns(snapshot, aliased) == [], [r.aliases for r in aliased.resources]


def test_plan_json_lists_aliases_per_resource(stack_report):
    assert all("aliases" in r for r in stack_report("dev").to_json()["resources"])
