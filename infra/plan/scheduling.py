"""The scheduling simulation of `llmcloud plan`: every pod template of the plan against the
node shapes of its node groups at max size, as the Kubernetes scheduler would place them.

What it reads, from the planned resources only (so the policy pack runs the same code on what
CrossGuard hands it, `policies/rules/scheduling.py`):
- node groups (`aws:eks/nodeGroup`): instance type (the group's, else its launch template's),
  sizes, labels and taints; allocatable CPU, memory, ephemeral storage and pods from
  `infra.cluster.node_shape` (EKS's kube-reserved and eviction thresholds), GPUs from the
  catalog, EFA from the launch template's EFA interfaces, ephemeral storage from the
  autoscaler's node-template tag where the group carries one;
- who brings the nodes: a Cluster Autoscaler release and the group's ASG discovery tags (then
  the group counts at `maxSize`), else only `desiredSize` nodes exist;
- pod templates of Jobs, Deployments, StatefulSets, DaemonSets, LeaderWorkerSets and JobSets,
  at their maximum replicas (a KEDA ScaledObject's `maxReplicaCount`, an HPA's `maxReplicas`);
  the per-node daemons of Helm add-ons whose values carry requests, node selector and
  tolerations;
- namespace ResourceQuotas: pods past the quota are refused at admission, as the API server
  would (`exceeded quota: ...`).

Placement follows the scheduler's filters (node selector, required node affinity, taints and
tolerations, resources, hostname topology spread with DoNotSchedule, required hostname pod
anti-affinity) and a least-allocated
score; a pod that fits nowhere gets the scheduler's own message, `0/30 nodes are available: 8
Insufficient memory, 22 node(s) didn't match Pod's node affinity/selector.`
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.catalog import load_catalog
from infra.cluster.node_shape import Allocatable, allocatable, ephemeral_storage_gib, max_pods
from infra.contracts import (
    EFA_RESOURCE,
    EKS_TAINT_EFFECTS,
    GPU_RESOURCE,
    NODE_GROUP_LABEL,
    tolerates,
)

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
ASG_TAG = "aws:autoscaling/tag:Tag"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
RESOURCE_QUOTA = "kubernetes:core/v1:ResourceQuota"
SCALED_OBJECT_KIND = "ScaledObject"
AUTOSCALER_CHART = "cluster-autoscaler"
AUTOSCALER_ENABLED_TAG = "k8s.io/cluster-autoscaler/enabled"
EPHEMERAL_TAG = "k8s.io/cluster-autoscaler/node-template/resources/ephemeral-storage"
HOSTNAME = "kubernetes.io/hostname"

# type token -> (path to the pod template, path to the replica count)
_WORKLOADS: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None]] = {
    "kubernetes:apps/v1:Deployment": (("spec", "template"), ("spec", "replicas")),
    "kubernetes:apps/v1:StatefulSet": (("spec", "template"), ("spec", "replicas")),
    "kubernetes:batch/v1:Job": (("spec", "template"), ("spec", "parallelism")),
}
DAEMON_SET = "kubernetes:apps/v1:DaemonSet"
# Helm charts whose workload is a per-node DaemonSet (the values carry its pod settings).
DAEMON_CHARTS = ("nvidia-device-plugin", "aws-efa-k8s-device-plugin", "dcgm-exporter")
_EFFECTS = EKS_TAINT_EFFECTS
_EFA_INTERFACES = ("efa", "efa-only")
_RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage", GPU_RESOURCE, EFA_RESOURCE)

_QUANTITY = re.compile(r"^([+-]?\d+(?:\.\d+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+)?$")
_SUFFIX = {
    "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def parse_quantity(value: Any) -> float:
    """A Kubernetes resource quantity in base units (`500m` -> 0.5, `4Ti` -> 4 * 2**40)."""
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = float(match.group(1)), match.group(2)
    if suffix is None:
        return number
    if suffix[0] in "eE":
        return number * 10 ** int(suffix[1:])
    return number * _SUFFIX[suffix]


def format_quantity(resource: str, amount: float) -> str:
    """The shortest exact-enough spelling the API server would print (`163`, `1740Gi`)."""
    if resource in ("memory", "ephemeral-storage"):
        for unit in ("Ti", "Gi", "Mi", "Ki"):
            if amount >= _SUFFIX[unit] and amount % _SUFFIX[unit] == 0:
                return f"{int(amount // _SUFFIX[unit])}{unit}"
        return f"{int(amount)}"
    if amount == int(amount):
        return str(int(amount))
    return f"{round(amount * 1000)}m"


# --------------------------------------------------------------------------- input


@dataclass(frozen=True)
class Obj:
    """A planned resource as the simulation reads it (from the plan or from CrossGuard)."""

    urn: str
    type: str
    name: str
    props: dict[str, Any]
    parent: str | None = None
    id: str | None = None


def objects_of_plan(plan: Any) -> list[Obj]:
    """The plan's resources as `Obj`s (`infra.plan.engine.Plan`)."""
    return [
        Obj(r.urn, r.type, r.name, r.inputs, r.parent, r.id or r.outputs.get("id"))
        for r in plan.resources
    ]


def launch_template_of(group: Any, templates: Sequence[Any]) -> Any | None:
    """The launch template a node group names (by id, else by name); works on plan
    `Resource`s and on `Obj`s."""
    props = getattr(group, "inputs", None) or getattr(group, "props", {})
    spec = props.get("launchTemplate") or {}
    wanted_id, wanted_name = spec.get("id"), spec.get("name")
    for t in templates:
        outputs = getattr(t, "outputs", {}) or {}
        if wanted_id and wanted_id in (t.id, outputs.get("id")):
            return t
    for t in templates:
        tprops = getattr(t, "inputs", None) or getattr(t, "props", {})
        if wanted_name and wanted_name == tprops.get("name"):
            return t
    return None


def instance_types_of(plan: Any, group: Any) -> list[str]:
    """A node group's instance types: its own, else its launch template's one (EKS takes
    the type from one place: a Capacity Block group names it in the template)."""
    types = [str(t) for t in group.inputs.get("instanceTypes") or []]
    if types:
        return types
    template = launch_template_of(group, plan.by_type(LAUNCH_TEMPLATE))
    itype = template.inputs.get("instanceType") if template is not None else None
    return [str(itype)] if itype else []


# --------------------------------------------------------------------------- node shapes


@dataclass
class GroupShape:
    """One node group's node, and how many of them can exist."""

    name: str  # the EKS node group's name (the value of its node-group label)
    urn: str
    instance_type: str
    labels: dict[str, str]
    taints: list[dict[str, str]]
    allocatable: Allocatable
    min_size: int
    desired: int
    max_size: int
    autoscaled: bool

    @property
    def reachable(self) -> int:
        """Nodes something brings: max with an autoscaler, else the desired size."""
        return self.max_size if self.autoscaled else self.desired

    def to_json(self) -> dict[str, Any]:
        a = self.allocatable
        return {
            "name": self.name,
            "urn": self.urn,
            "instance_type": self.instance_type,
            "nodes": {"min": self.min_size, "desired": self.desired, "max": self.max_size},
            "capacity_from": "autoscaler" if self.autoscaled else "desired_size",
            "allocatable": {
                "cpu": format_quantity("cpu", a.cpu),
                "memory": format_quantity("memory", a.memory),
                "ephemeral-storage": format_quantity("ephemeral-storage", a.ephemeral_storage),
                "pods": a.pods,
                GPU_RESOURCE: a.gpus,
                EFA_RESOURCE: a.efa,
            },
        }


def _group_name(obj: Obj) -> str:
    props = obj.props
    name = props.get("nodeGroupName") or (props.get("labels") or {}).get(NODE_GROUP_LABEL)
    return str(name or props.get("nodeGroupNamePrefix") or obj.name)


def _children_index(objs: Iterable[Obj]) -> dict[tuple[str, Any], list[Obj]]:
    """(type, parent) -> the objects of that type under that parent, in plan order (a
    node group's launch template and ASG tags are its siblings), built once."""
    out: dict[tuple[str, Any], list[Obj]] = {}
    for o in objs:
        if o.parent is not None:
            out.setdefault((o.type, o.parent), []).append(o)
    return out


def _asg_tags(
    children: dict[tuple[str, Any], list[Obj]], parent: Any, cache: dict[Any, dict[str, str]]
) -> dict[str, str]:
    """key -> value of the Auto Scaling group tags beside a node group (its siblings), once
    per parent."""
    if parent is None:
        return {}
    if parent not in cache:
        cache[parent] = {
            str((t.props.get("tag") or {}).get("key")): str((t.props.get("tag") or {}).get("value"))
            for t in children.get((ASG_TAG, parent), [])
        }
    return cache[parent]


class _TemplateIndex:
    """`launch_template_of` over one list of templates, by id and by name, built once
    (first match in list order, as the scan)."""

    def __init__(self, templates: Sequence[Any]) -> None:
        self.templates = templates
        self.by_id: dict[Any, Any] = {}
        self.by_name: dict[Any, Any] = {}
        for t in templates:
            outputs = getattr(t, "outputs", {}) or {}
            for key in (t.id, outputs.get("id")):
                if _hashable(key):
                    self.by_id.setdefault(key, t)
            tprops = getattr(t, "inputs", None) or getattr(t, "props", {})
            if _hashable(tprops.get("name")):
                self.by_name.setdefault(tprops.get("name"), t)

    def of(self, group: Any) -> Any | None:
        props = getattr(group, "inputs", None) or getattr(group, "props", {})
        spec = props.get("launchTemplate") or {}
        wanted_id, wanted_name = spec.get("id"), spec.get("name")
        if not (_hashable(wanted_id) and _hashable(wanted_name)):
            return launch_template_of(group, self.templates)
        if wanted_id and wanted_id in self.by_id:
            return self.by_id[wanted_id]
        if wanted_name and wanted_name in self.by_name:
            return self.by_name[wanted_name]
        return None


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def node_shapes(objs: Sequence[Obj]) -> tuple[list[GroupShape], list[str]]:
    """Every node group's shape, and notes on what could not be read."""
    catalog = load_catalog()
    notes: list[str] = []
    templates = _TemplateIndex([o for o in objs if o.type == LAUNCH_TEMPLATE])
    children = _children_index(objs)
    tags_by_parent: dict[Any, dict[str, str]] = {}
    autoscaler = any(
        o.type == HELM_RELEASE and str(o.props.get("chart", "")).endswith(AUTOSCALER_CHART)
        for o in objs
    )
    shapes: list[GroupShape] = []
    for group in (o for o in objs if o.type == NODE_GROUP):
        props = group.props
        template = templates.of(group)
        if template is None:
            same = (
                children.get((LAUNCH_TEMPLATE, group.parent), [])
                if group.parent is not None
                else []
            )
            template = same[0] if len(same) == 1 else None
        lt = template.props if template is not None else {}
        types = [str(t) for t in props.get("instanceTypes") or []] or (
            [str(lt["instanceType"])] if lt.get("instanceType") else []
        )
        if not types or types[0] not in catalog.instance_types:
            notes.append(
                f"node group {group.name}: instance type {types or 'unknown'} not in the catalog; not simulated"
            )
            continue
        instance = catalog.instance(types[0])
        tags = _asg_tags(children, group.parent, tags_by_parent)
        if EPHEMERAL_TAG in tags:
            ephemeral = parse_quantity(tags[EPHEMERAL_TAG]) / 2**30
        else:
            volumes = [
                int((m.get("ebs") or {}).get("volumeSize") or 0)
                for m in lt.get("blockDeviceMappings") or []
            ]
            ephemeral = ephemeral_storage_gib(instance, max(volumes, default=20))
        efa = sum(
            1
            for nic in lt.get("networkInterfaces") or []
            if nic.get("interfaceType") in _EFA_INTERFACES
        )
        scaling = props.get("scalingConfig") or {}
        name = _group_name(group)
        if props.get("capacityType") == "CAPACITY_BLOCK":
            notes.append(
                f"node group {name} is a Capacity Block: its nodes exist only inside the block's "
                "window; counted at max size as if the block were active"
            )
        labels = {
            **{str(k): str(v) for k, v in (props.get("labels") or {}).items()},
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": instance.name,
            "eks.amazonaws.com/nodegroup": name,
        }
        taints = [
            {
                "key": str(t.get("key")),
                "value": str(t.get("value") or ""),
                "effect": _EFFECTS.get(str(t.get("effect")), str(t.get("effect"))),
            }
            for t in props.get("taints") or []
        ]
        shapes.append(
            GroupShape(
                name=name,
                urn=group.urn,
                instance_type=instance.name,
                labels=labels,
                taints=taints,
                allocatable=allocatable(
                    instance, pods=max_pods(instance), ephemeral_gib=ephemeral, efa=efa
                ),
                min_size=int(scaling.get("minSize") or 0),
                desired=int(scaling.get("desiredSize") or scaling.get("minSize") or 0),
                max_size=int(scaling.get("maxSize") or 0),
                autoscaled=autoscaler and tags.get(AUTOSCALER_ENABLED_TAG) == "true",
            )
        )
    return shapes, notes


# --------------------------------------------------------------------------- pod templates


@dataclass
class PodTemplate:
    """One kind of pod of a workload, and how many of it exist at max scale."""

    workload: Obj
    role: str  # "" or the part of a multi-template workload ("leader", "worker", "node")
    namespace: str
    count: int
    spec: dict[str, Any]
    labels: dict[str, str]
    daemon: bool = False

    @property
    def label(self) -> str:
        name = (self.workload.props.get("metadata") or {}).get("name") or self.workload.name
        kind = self.workload.type.rsplit(":", 1)[-1]
        if kind == "CustomResource":
            kind = str(self.workload.props.get("kind") or kind)
        return f"{kind} {self.namespace}/{name}" + (f" ({self.role})" if self.role else "")


def _get(d: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def pod_requests(spec: dict[str, Any]) -> dict[str, float]:
    """The pod's effective requests, as the scheduler and quota count them: the larger of the
    containers' sum (plus restartable init sidecars) and the largest init container."""

    def requests(container: dict[str, Any]) -> dict[str, float]:
        res = container.get("resources") or {}
        req = dict(res.get("limits") or {})  # a limit without a request is the request
        req.update(res.get("requests") or {})
        return {k: parse_quantity(v) for k, v in req.items() if k in _RESOURCE_NAMES}

    total: Counter[str] = Counter()
    sidecars: Counter[str] = Counter()
    init_max: dict[str, float] = {}
    for c in spec.get("containers") or []:
        total.update(requests(c))
    for c in spec.get("initContainers") or []:
        r = requests(c)
        if c.get("restartPolicy") == "Always":
            sidecars.update(r)
            continue
        for k, v in r.items():
            init_max[k] = max(init_max.get(k, 0.0), v + sidecars.get(k, 0.0))
    total.update(sidecars)
    out = {k: max(total.get(k, 0.0), init_max.get(k, 0.0)) for k in set(total) | set(init_max)}
    out["pods"] = 1.0
    return out


def _max_replicas(objs: Sequence[Obj]) -> dict[tuple[str, str], int]:
    """(namespace, target name) -> the max replicas an autoscaler gives it."""
    out: dict[tuple[str, str], int] = {}
    for o in objs:
        kind = str(o.props.get("kind") or o.type.rsplit(":", 1)[-1])
        ns = str((o.props.get("metadata") or {}).get("namespace") or "default")
        spec = o.props.get("spec") or {}
        target = (spec.get("scaleTargetRef") or {}).get("name")
        if not target:
            continue
        if kind == SCALED_OBJECT_KIND and spec.get("maxReplicaCount") is not None:
            out[(ns, str(target))] = int(spec["maxReplicaCount"])
        elif kind == "HorizontalPodAutoscaler" and spec.get("maxReplicas") is not None:
            out[(ns, str(target))] = int(spec["maxReplicas"])
    return out


def pod_templates(objs: Sequence[Obj]) -> tuple[list[PodTemplate], list[str]]:
    """Every pod template of the plan at max scale, DaemonSets first."""
    scaled = _max_replicas(objs)
    out: list[PodTemplate] = []
    notes: list[str] = []
    for o in objs:
        meta = o.props.get("metadata") or {}
        ns = str(meta.get("namespace") or "default")
        name = str(meta.get("name") or o.name)

        def add(
            template: Any, count: int, role: str = "", *, owner: Obj = o, namespace: str = ns
        ) -> None:
            if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
                return
            labels = dict((template.get("metadata") or {}).get("labels") or {})
            out.append(PodTemplate(owner, role, namespace, count, template["spec"], labels))

        if o.type in _WORKLOADS:
            tpath, rpath = _WORKLOADS[o.type]
            default = 1
            count = _get(o.props, rpath) if rpath else None
            count = scaled.get((ns, name), count if count is not None else default)
            add(_get(o.props, tpath), int(count))
        elif o.type == DAEMON_SET:
            template = _get(o.props, ("spec", "template"))
            if isinstance(template, dict) and isinstance(template.get("spec"), dict):
                labels = dict((template.get("metadata") or {}).get("labels") or {})
                out.append(PodTemplate(o, "", ns, 0, template["spec"], labels, daemon=True))
        elif o.type == "kubernetes:apiextensions.k8s.io:CustomResource":
            kind, spec = o.props.get("kind"), o.props.get("spec") or {}
            if kind == "LeaderWorkerSet":
                lws = spec.get("leaderWorkerTemplate") or {}
                replicas = scaled.get((ns, name), int(spec.get("replicas") or 1))
                size = int(lws.get("size") or 1)
                worker = lws.get("workerTemplate")
                leader = lws.get("leaderTemplate") or worker
                add(leader, replicas, "leader")
                add(worker, replicas * (size - 1), "worker")
            elif kind == "JobSet":
                for rj in spec.get("replicatedJobs") or []:
                    job = _get(rj, ("template", "spec")) or {}
                    pods = int(job.get("parallelism") or 1) * int(rj.get("replicas") or 1)
                    add(job.get("template"), pods, str(rj.get("name") or ""))
        elif o.type == HELM_RELEASE:
            chart = str(o.props.get("chart", "")).rsplit("/", 1)[-1]
            values = o.props.get("values") or {}
            if chart in DAEMON_CHARTS:
                ns = str(o.props.get("namespace") or "default")
                resources = values.get("resources")
                if not resources:
                    notes.append(
                        f"DaemonSet of Helm release {o.props.get('name') or o.name}: no requests in "
                        "its values; the chart's defaults are not seen"
                    )
                spec = {
                    "nodeSelector": values.get("nodeSelector") or {},
                    "tolerations": values.get("tolerations") or [],
                    "affinity": values.get("affinity") or {},
                    "containers": [{"name": chart, "resources": resources or {}}],
                }
                out.append(PodTemplate(o, "", ns, 0, spec, {}, daemon=True))
    out.sort(key=lambda t: not t.daemon)
    return out, notes


# --------------------------------------------------------------------------- filters


def _matches_expression(labels: dict[str, str], expr: dict[str, Any]) -> bool:
    key, op = str(expr.get("key")), str(expr.get("operator"))
    values = [str(v) for v in expr.get("values") or []]
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and values:
        try:
            a, b = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def selects_node(spec: dict[str, Any], labels: dict[str, str]) -> bool:
    """nodeSelector and required node affinity (terms ORed, expressions ANDed)."""
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(str(k)) != str(v):
            return False
    required = _get(
        spec, ("affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution")
    )
    terms = (required or {}).get("nodeSelectorTerms") or []
    if terms:
        return any(
            all(_matches_expression(labels, e) for e in term.get("matchExpressions") or [])
            for term in terms
        )
    return True


def untolerated(spec: dict[str, Any], taints: Sequence[dict[str, str]]) -> dict[str, str] | None:
    for taint in taints:
        if taint["effect"] in ("NoSchedule", "NoExecute") and not tolerates(
            spec.get("tolerations") or [], taint
        ):
            return taint
    return None


def _selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    return all(_matches_expression(labels, e) for e in selector.get("matchExpressions") or [])


# --------------------------------------------------------------------------- simulation


@dataclass(eq=False)
class Node:
    group: GroupShape
    index: int
    free: dict[str, float]
    pods: list[dict[str, str]] = field(default_factory=list)  # labels of its pods
    labels: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.labels = {**self.group.labels, HOSTNAME: f"{self.group.name}-{self.index}"}


@dataclass
class PodResult:
    """One pod template's outcome at max scale."""

    template: PodTemplate
    placed: int
    groups: dict[str, int]
    reason: str | None = None

    @property
    def schedulable(self) -> bool:
        return self.reason is None

    def to_json(self) -> dict[str, Any]:
        t = self.template
        return {
            "urn": t.workload.urn,
            "workload": t.label,
            "namespace": t.namespace,
            "pods_at_max": t.count,
            "placed": self.placed,
            "node_groups": dict(self.groups),
            "requests": {
                k: format_quantity(k, v)
                for k, v in sorted(pod_requests(t.spec).items())
                if k != "pods"
            },
            "schedulable": self.schedulable,
            "reason": self.reason,
        }


@dataclass
class SchedulingReport:
    """What `llmcloud plan` reports under `scheduling`."""

    pods: list[PodResult]
    node_groups: list[GroupShape]
    notes: list[str]

    @property
    def pending(self) -> list[PodResult]:
        return [p for p in self.pods if not p.schedulable]

    def to_json(self) -> dict[str, Any]:
        return {
            "schedulable_at_max": not self.pending,
            "pods": [p.to_json() for p in self.pods if not p.template.daemon],
            "daemons": [p.to_json() for p in self.pods if p.template.daemon],
            "node_groups": [g.to_json() for g in self.node_groups],
            "notes": list(self.notes),
        }


def _quotas(objs: Sequence[Obj]) -> dict[str, tuple[str, dict[str, float]]]:
    """namespace -> (quota name, hard limits keyed like pod requests)."""
    out: dict[str, tuple[str, dict[str, float]]] = {}
    for o in objs:
        if o.type != RESOURCE_QUOTA:
            continue
        meta = o.props.get("metadata") or {}
        hard: dict[str, float] = {}
        for key, value in ((o.props.get("spec") or {}).get("hard") or {}).items():
            resource = str(key).removeprefix("requests.")
            if resource in (*_RESOURCE_NAMES, "pods"):
                hard[resource] = parse_quantity(value)
        out[str(meta.get("namespace") or "default")] = (str(meta.get("name") or o.name), hard)
    return out


def _reason(total: int, counts: Counter[str], extra: str = "") -> str:
    if total == 0:  # the scheduler's words for an empty cluster
        return f"no nodes available to schedule pods.{extra}"
    parts = ", ".join(f"{n} {r}" for r, n in sorted(counts.items()))
    return f"0/{total} nodes are available: {parts}.{extra}"


def simulate(objs: Sequence[Obj]) -> SchedulingReport:
    """Place every pod template of the plan on its node groups at max size."""
    shapes, notes = node_shapes(objs)
    templates, more = pod_templates(objs)
    notes += more
    nodes = [Node(g, i, g.allocatable.as_resources()) for g in shapes for i in range(g.reachable)]
    quotas = _quotas(objs)
    used: dict[str, Counter[str]] = {}
    results: list[PodResult] = []
    for t in templates:
        req = pod_requests(t.spec)
        if t.daemon:
            results.append(_place_daemon(t, req, nodes))
            continue
        placed, groups, reason = 0, Counter[str](), None
        quota = quotas.get(t.namespace)
        for _ in range(t.count):
            if quota is not None:
                name, hard = quota
                usage = used.setdefault(t.namespace, Counter())
                # sorted by quota key, as the API server prints resource lists
                over = sorted(
                    (
                        k
                        for k, limit in hard.items()
                        if usage.get(k, 0.0) + req.get(k, 0.0) > limit + 1e-9
                    ),
                    key=_qkey,
                )
                if over:
                    reason = (
                        f"forbidden: exceeded quota: {name}, requested: "
                        + ",".join(
                            f"{_qkey(k)}={format_quantity(k, req.get(k, 0.0))}" for k in over
                        )
                        + ", used: "
                        + ",".join(
                            f"{_qkey(k)}={format_quantity(k, usage.get(k, 0.0))}" for k in over
                        )
                        + ", limited: "
                        + ",".join(f"{_qkey(k)}={format_quantity(k, hard[k])}" for k in over)
                    )
                    break
            node, why = _filter(t, req, nodes)
            if node is None:
                reason = _reason(len(nodes), why, _nothing_brings(t, shapes))
                break
            for k, v in req.items():
                node.free[k] = node.free.get(k, 0.0) - v
            node.pods.append(t.labels)
            if quota is not None:
                used[t.namespace].update(req)
            placed += 1
            groups[node.group.name] += 1
        results.append(PodResult(t, placed, dict(groups), reason))
    return SchedulingReport(results, shapes, notes)


def _qkey(resource: str) -> str:
    return "pods" if resource == "pods" else f"requests.{resource}"


def _nothing_brings(t: PodTemplate, shapes: Sequence[GroupShape]) -> str:
    """The hint for a pod whose groups are held at their desired size by nobody."""
    idle = [
        g.name
        for g in shapes
        if selects_node(t.spec, g.labels) and not g.autoscaled and g.desired < g.max_size
    ]
    if not idle:
        return ""
    return (
        " Node group(s) " + ", ".join(idle) + " stay at their desired size: nothing scales them "
        "(no Cluster Autoscaler, or its discovery tags are missing)."
    )


class _PerGroup:
    """A pod spec's node selection and taint check, answered once per node group: nodes of
    a group differ only in their hostname label (asked per node when the spec reads it)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.reads_hostname = _reads_hostname(spec)
        self._selects: dict[int, bool] = {}
        self._taint: dict[int, dict[str, str] | None] = {}

    def selects(self, node: Node) -> bool:
        if self.reads_hostname:
            return selects_node(self.spec, node.labels)
        key = id(node.group)
        if key not in self._selects:
            self._selects[key] = selects_node(self.spec, node.labels)
        return self._selects[key]

    def untolerated(self, node: Node) -> dict[str, str] | None:
        key = id(node.group)
        if key not in self._taint:
            self._taint[key] = untolerated(self.spec, node.group.taints)
        return self._taint[key]


def _reads_hostname(spec: dict[str, Any]) -> bool:
    """Whether `selects_node` reads the node's hostname label for this spec."""
    if any(str(k) == HOSTNAME for k in spec.get("nodeSelector") or {}):
        return True
    required = _get(
        spec, ("affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution")
    )
    return any(
        str(e.get("key")) == HOSTNAME
        for term in (required or {}).get("nodeSelectorTerms") or []
        for e in term.get("matchExpressions") or []
    )


def _place_daemon(t: PodTemplate, req: dict[str, float], nodes: list[Node]) -> PodResult:
    groups: Counter[str] = Counter()
    short: Counter[str] = Counter()
    per_group = _PerGroup(t.spec)
    for node in nodes:
        if not per_group.selects(node) or per_group.untolerated(node):
            continue
        lacking = [k for k, v in req.items() if node.free.get(k, 0.0) < v - 1e-9]
        if lacking:
            short.update(f"Insufficient {k}" for k in lacking)
            continue
        for k, v in req.items():
            node.free[k] = node.free.get(k, 0.0) - v
        groups[node.group.name] += 1
    t.count = sum(groups.values()) + sum(short.values())
    reason = _reason(len(nodes), short) if short else None
    return PodResult(t, sum(groups.values()), dict(groups), reason)


def _filter(
    t: PodTemplate, req: dict[str, float], nodes: list[Node]
) -> tuple[Node | None, Counter[str]]:
    why: Counter[str] = Counter()
    spread = [
        c
        for c in t.spec.get("topologySpreadConstraints") or []
        if c.get("whenUnsatisfiable") == "DoNotSchedule" and c.get("topologyKey") == HOSTNAME
    ]
    # required pod anti-affinity per node (hostname): one matching pod per node at most
    anti = [
        term.get("labelSelector") or {}
        for term in _get(
            t.spec,
            ("affinity", "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution"),
        )
        or []
        if term.get("topologyKey") == HOSTNAME
    ]
    per_group = _PerGroup(t.spec)
    selected = [per_group.selects(n) for n in nodes]
    eligible = [n for n, ok in zip(nodes, selected, strict=True) if ok]
    fewest: dict[int, int] = {}  # per spread constraint: fewest matching pods on an eligible node
    feasible: list[tuple[int, Node]] = []
    for position, node in enumerate(nodes):
        if not selected[position]:
            why["node(s) didn't match Pod's node affinity/selector"] += 1
            continue
        taint = per_group.untolerated(node)
        if taint is not None:
            why[f"node(s) had untolerated taint {{{taint['key']}: {taint['value']}}}"] += 1
            continue
        lacking = [k for k, v in req.items() if node.free.get(k, 0.0) < v - 1e-9]
        if lacking:
            for k in lacking:
                why["Too many pods" if k == "pods" else f"Insufficient {k}"] += 1
            continue
        if spread and not _spread_ok(spread, node, eligible, fewest):
            why["node(s) didn't match pod topology spread constraints"] += 1
            continue
        if anti and any(_selector_matches(sel, p) for sel in anti for p in node.pods):
            why["node(s) didn't match pod anti-affinity rules"] += 1
            continue
        feasible.append((position, node))
    if not feasible:
        return None, why

    # least allocated: the node with the largest share of its CPU and memory still free
    def free_share(n: Node) -> float:
        a = n.group.allocatable
        return n.free["cpu"] / a.cpu + n.free["memory"] / a.memory

    return max(feasible, key=lambda pn: (free_share(pn[1]), -pn[0]))[1], why


def _spread_ok(
    constraints: list[dict[str, Any]], node: Node, eligible: list[Node], fewest: dict[int, int]
) -> bool:
    """`fewest` caches, per constraint, the minimum over `eligible` (their pods do not change
    while one pod is filtered)."""
    for i, c in enumerate(constraints):
        selector = c.get("labelSelector") or {}
        if i not in fewest:
            counts = [sum(1 for p in n.pods if _selector_matches(selector, p)) for n in eligible]
            fewest[i] = min(counts, default=0)
        mine = sum(1 for p in node.pods if _selector_matches(selector, p))
        if mine + 1 - fewest[i] > int(c.get("maxSkew") or 1):
            return False
    return True


def simulate_plan(plan: Any) -> SchedulingReport:
    """The simulation of one plan (`infra.plan.engine.Plan`)."""
    return simulate(objects_of_plan(plan))


def table_section(report: SchedulingReport) -> Any:
    """The plan table's short "Schedulable at max" section (a rich renderable)."""
    from rich.table import Table

    table = Table(title="Schedulable at max", header_style="bold")
    for column in ("", "workload", "pods", "node groups", "why not"):
        table.add_column(column, overflow="fold")
    for pod in report.pods:
        t = pod.template
        if t.daemon:
            continue
        where = ", ".join(f"{g} {n}" for g, n in sorted(pod.groups.items())) or "-"
        table.add_row(
            "[green]✓[/]" if pod.schedulable else "[red]✗[/]",
            t.label,
            f"{pod.placed}/{t.count}",
            where,
            pod.reason or "",
        )
    return table
