"""The engine runs the SDK with some of its functions replaced by cheaper ones
(`infra/plan/sdk_runtime.py`). Each must give what the SDK's own gives: checked here against
the SDK's function itself, on generated inputs and on real programs."""

from __future__ import annotations

import random
from contextlib import contextmanager

import pulumi
import pytest
from pulumi import _types as pulumi_types
from pulumi.output import Unknown
from pulumi.runtime import resource as pulumi_resource
from pulumi.runtime import resource_cycle_breaker, rpc

import infra.plan.engine as engine
from infra.plan import sdk_runtime
from infra.plan.engine import ProgramError, evaluate
from infra.platform import Platform
from tests.conftest import write_project

SDK_CONTAINS_UNKNOWNS = rpc.contains_unknowns
SDK_TYPES_FROM_ANNOTATIONS = pulumi_types._types_from_annotations


def test_the_patched_names_are_the_sdks_until_a_run_and_again_after():
    names = (
        (rpc, "declare_dependency"),
        (rpc, "contains_unknowns"),
        (pulumi_types, "_types_from_annotations"),
        (pulumi_resource, "_resolve_depends_on_urns"),
        (pulumi_resource, "_get_stack_trace"),
    )
    before = [getattr(module, name) for module, name in names]
    with sdk_runtime.sdk_settings():
        during = [getattr(module, name) for module, name in names]
    assert all(b is not d for b, d in zip(before, during, strict=True))
    assert [getattr(module, name) for module, name in names] == before


# ------------------------------------------------------------------ contains_unknowns


def _value(rng: random.Random, depth: int, shared: list) -> object:
    roll = rng.random()
    if depth == 0 or roll < 0.35:
        return rng.choice(["s", 1, 2.5, True, None, Unknown(), b"x", ("t", Unknown())])
    if roll < 0.45 and shared:
        return rng.choice(shared)  # the same container reached twice
    if roll < 0.7:
        made: object = {f"k{i}": _value(rng, depth - 1, shared) for i in range(rng.randint(0, 4))}
    else:
        made = [_value(rng, depth - 1, shared) for _ in range(rng.randint(0, 4))]
    shared.append(made)
    return made


def test_contains_unknowns_answers_as_the_sdks_on_generated_values():
    rng = random.Random(18)
    found = 0
    for _ in range(3000):
        value = _value(rng, 5, [])
        expected = SDK_CONTAINS_UNKNOWNS(value)
        assert sdk_runtime.contains_unknowns(value) is expected
        found += expected
    assert 300 < found < 2700  # both answers were exercised


def test_contains_unknowns_ends_on_a_self_referencing_value():
    loop: dict = {"a": [1]}
    loop["a"].append(loop)
    assert sdk_runtime.contains_unknowns(loop) is SDK_CONTAINS_UNKNOWNS(loop) is False
    loop["b"] = Unknown()
    assert sdk_runtime.contains_unknowns(loop) is SDK_CONTAINS_UNKNOWNS(loop) is True


def test_contains_unknowns_leaves_no_cycle_for_the_collector():
    import gc

    gc.collect()
    gc.disable()
    try:
        for _ in range(200):
            sdk_runtime.contains_unknowns({"a": [{"b": "c"}]})
        assert gc.collect() == 0
        for _ in range(200):
            SDK_CONTAINS_UNKNOWNS({"a": [{"b": "c"}]})
        assert gc.collect() >= 200  # the SDK's closure: one cycle per call (why it is replaced)
    finally:
        gc.enable()


# ------------------------------------------------------------------ declare_dependency


class _Node:
    """Stands in for a Resource: the cycle breaker only reads and sets one attribute."""

    def __init__(self, n: int) -> None:
        self.n = n


def test_declare_dependency_gives_the_sdks_answers_and_graph_on_generated_programs():
    rng = random.Random(7)
    cycles = 0
    for _ in range(300):
        count = rng.randint(2, 30)
        theirs = [_Node(i) for i in range(count)]
        ours = [_Node(i) for i in range(count)]
        for _ in range(rng.randint(1, 80)):
            a, b = rng.randrange(count), rng.randrange(count)
            if rng.random() < 0.8:  # mostly forward, as programs declare, sometimes back
                a, b = max(a, b), min(a, b)
            expected = resource_cycle_breaker.declare_dependency(theirs[a], theirs[b])
            assert sdk_runtime.declare_dependency(ours[a], ours[b]) is expected
            cycles += not expected
        for t, o in zip(theirs, ours, strict=True):
            assert {d.n for d in resource_cycle_breaker._deps(t)} == {
                d.n for d in resource_cycle_breaker._deps(o)
            }
    assert cycles > 100  # refusals were exercised, not only the fast path


# ------------------------------------------------------------------ real programs

COMPONENTS = """
import pulumi, pulumi_aws as aws

class Store(pulumi.ComponentResource):
    bucket: aws.s3.Bucket          # class annotations: the SDK reads them as output types
    inner: pulumi.ComponentResource

    def __init__(self, name, opts=None):
        super().__init__("demo:index:Store", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = aws.s3.Bucket(f"{name}-bucket", opts=child)
        self.inner = Inner(f"{name}-inner", self.bucket, child)
        self.register_outputs({"bucket": self.bucket.bucket})

class Inner(pulumi.ComponentResource):
    def __init__(self, name, bucket, opts):
        super().__init__("demo:index:Inner", name, None, opts)
        self.block = aws.s3.BucketPublicAccessBlock(
            f"{name}-pab", bucket=bucket.id, block_public_acls=True,
            opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({})

store = Store("data")
key = aws.kms.Key("key")
topic = aws.sns.Topic("topic", kms_master_key_id=key.arn,
                      opts=pulumi.ResourceOptions(depends_on=[store]))
queue = aws.sqs.Queue("queue", opts=pulumi.ResourceOptions(
    depends_on=pulumi.Output.from_input([topic]).apply(lambda ts: ts + [store.inner])))
single = aws.sqs.Queue("single", opts=pulumi.ResourceOptions(depends_on=key))
pulumi.export("bucket", store.bucket.bucket)
"""

CYCLE = """
import pulumi, pulumi_aws as aws

class Box(pulumi.ComponentResource):
    def __init__(self, name):
        super().__init__("demo:index:Box", name, None, None)
        aws.s3.Bucket(f"{name}-first", opts=pulumi.ResourceOptions(parent=self))
        # a child that waits for its own component: it would wait for itself
        aws.s3.Bucket(f"{name}-second", opts=pulumi.ResourceOptions(parent=self, depends_on=[self]))
        self.register_outputs({})

Box("box")
"""


@contextmanager
def _sdk_originals_except_traces():
    """The engine's settings without the replaced SDK functions (stack traces and the
    collector are unchanged, as neither decides a dependency or a value)."""
    with sdk_runtime.fast_stack_traces(), sdk_runtime.no_cyclic_gc():
        yield


def _graph(plan) -> dict[str, tuple]:
    return {
        r.urn: (
            sorted(r.dependencies),
            {k: sorted(v) for k, v in r.property_dependencies.items()},
            r.outputs,
        )
        for r in plan.resources
    }


def _plan_with_sdk_originals(monkeypatch, project, stack: str):
    with monkeypatch.context() as patched:
        patched.setattr(engine, "sdk_settings", _sdk_originals_except_traces)
        return evaluate(project, stack)


def test_a_program_with_components_records_the_same_dependencies_as_under_the_sdk(
    tmp_path, monkeypatch
):
    project = write_project(tmp_path / "components", COMPONENTS)
    fast = evaluate(project, "dev")
    assert _graph(fast) == _graph(_plan_with_sdk_originals(monkeypatch, project, "dev"))
    by_name = {r.name: r for r in fast.resources}
    # depends_on a component: its custom descendants, nested components included (and the
    # key, an input's dependency)
    assert set(by_name["topic"].dependencies) == {
        by_name["data-bucket"].urn,
        by_name["data-inner-pab"].urn,
        by_name["key"].urn,
    }
    # depends_on an Output of a list (the SDK's own path) and a single resource
    assert by_name["data-inner-pab"].urn in by_name["queue"].dependencies
    assert by_name["topic"].urn in by_name["queue"].dependencies
    assert by_name["single"].dependencies == [by_name["key"].urn]


def test_a_dependency_cycle_is_the_sdks_error_with_or_without_the_engines_settings(
    tmp_path, monkeypatch
):
    project = write_project(tmp_path / "cycle", CYCLE)
    for run in (
        lambda: evaluate(project, "dev"),
        lambda: _plan_with_sdk_originals(monkeypatch, project, "dev"),
    ):
        with pytest.raises(ProgramError, match="circular dependency"):
            run()
    # the failed runs leave nothing behind for the next plan in this process
    assert evaluate(write_project(tmp_path / "next", COMPONENTS), "dev").outputs["bucket"]


def test_the_dev_stack_records_the_same_dependencies_as_under_the_sdk(
    dev_plan, project_root, monkeypatch
):
    # one more evaluation of dev, with the SDK's own functions: every dependency, every
    # property's dependencies and every output the same
    assert _graph(dev_plan) == _graph(_plan_with_sdk_originals(monkeypatch, project_root, "dev"))


def test_annotation_types_are_the_sdks_for_every_component_class():
    classes = {Platform, *_subclasses(pulumi.ComponentResource)}
    annotated = [c for c in classes if getattr(c, "__annotations__", None)]
    assert len(annotated) >= 5  # llmcloud's components declare their attributes
    for cls in annotated:
        assert sdk_runtime._types_from_annotations(cls) == SDK_TYPES_FROM_ANNOTATIONS(cls)


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found
