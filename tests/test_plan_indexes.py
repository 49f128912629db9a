"""The indexes that keep `llmcloud plan`'s checks linear answer what the scans they replace
answered: `StackView` links a child to its candidates by property dependencies, then by
value, then by a single dependency; the scheduling simulation answers node selection once
per node group except where a pod selects by hostname."""

from __future__ import annotations

from types import SimpleNamespace

from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from infra.plan.scheduling import Obj, simulate
from policies.rules.base import StackView
from tests.test_scheduling import gpu_pod, l40s_group

BUCKET = "aws:s3/bucketV2:BucketV2"
CHILD = "aws:s3/bucketVersioningV2:BucketVersioningV2"


def res(urn: str, token: str, props: dict, deps=(), prop_deps=None) -> SimpleNamespace:
    return SimpleNamespace(
        urn=urn,
        resource_type=token,
        props=props,
        dependencies=list(deps),
        property_dependencies=prop_deps or {},
    )


def view_of(*resources: SimpleNamespace) -> StackView:
    return StackView.build(resources)


def test_of_type_keeps_stack_order_across_types():
    a, b, c = res("a", BUCKET, {}), res("b", CHILD, {}), res("c", BUCKET, {})
    view = view_of(a, b, c)
    assert list(view.of_type(CHILD, BUCKET)) == [a, b, c]
    assert list(view.of_type(BUCKET)) == [a, c]
    assert list(view.of_type("aws:none")) == []


def test_linked_matches_by_value_on_any_key_in_candidate_order():
    first = res("b1", BUCKET, {"bucket": "logs", "id": "logs-1"})
    second = res("b2", BUCKET, {"bucket": "data", "id": "logs"})  # id equals the name above
    other = res("b3", BUCKET, {"bucket": "other"})
    child = res("v", CHILD, {"bucket": "logs"})
    view = view_of(first, second, other, child)
    buckets = [first, second, other]
    assert view.linked(child, "bucket", buckets, "bucket") == [first, second]
    # another candidate list, other keys: indexed separately
    assert view.linked(child, "bucket", [other, second], "bucket") == [second]


def test_linked_prefers_property_dependencies_and_ignores_unknown_values():
    a = res("a", BUCKET, {"bucket": "a"})
    b = res("b", BUCKET, {"bucket": UNKNOWN_STRING_VALUE})
    by_dep = res("c1", CHILD, {"bucket": "a"}, prop_deps={"bucket": [b]})
    unknown = res("c2", CHILD, {"bucket": UNKNOWN_STRING_VALUE})
    view = view_of(a, b, by_dep, unknown)
    assert view.linked(by_dep, "bucket", [a, b], "bucket") == [b]
    assert view.linked(unknown, "bucket", [a, b], "bucket") == []


def test_linked_falls_back_to_a_single_dependency_only():
    a, b = res("a", BUCKET, {}), res("b", BUCKET, {})
    one = res("c1", CHILD, {"bucket": "nothing"}, deps=[b])
    two = res("c2", CHILD, {}, deps=[a, b])
    view = view_of(a, b, one, two)
    assert view.linked(one, "bucket", [a, b], "bucket") == [b]
    assert view.linked(two, "bucket", [a, b], "bucket") == []


def deployment(replicas: int, node_selector: dict) -> Obj:
    pod = gpu_pod(4)
    pod["spec"]["nodeSelector"] = node_selector
    return Obj(
        "urn:d",
        "kubernetes:apps/v1:Deployment",
        "d",
        {
            "metadata": {"name": "d", "namespace": "s"},
            "spec": {"replicas": replicas, "template": pod},
        },
    )


def test_a_pod_pinned_to_a_hostname_lands_only_on_that_node():
    pinned = deployment(2, {"llmcloud.io/node-group": "l40s", "kubernetes.io/hostname": "l40s-1"})
    (pod,) = simulate([*l40s_group(max_size=2), pinned]).pods
    assert (pod.placed, pod.groups) == (1, {"l40s": 1})
    assert pod.reason == (
        "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, "
        "1 node(s) didn't match Pod's node affinity/selector."
    )


def test_a_group_selector_places_on_every_node_of_the_group():
    spread = deployment(3, {"llmcloud.io/node-group": "l40s"})
    (pod,) = simulate([*l40s_group(max_size=3), spread]).pods
    assert (pod.placed, pod.groups, pod.reason) == (3, {"l40s": 3}, None)
