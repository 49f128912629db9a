"""Kubernetes rules over the pod templates the program declares (Pods, Deployments,
StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs, and custom resources that embed pod
templates such as JobSet): no privileged containers or host namespaces outside the node
agents' DaemonSets, requests and limits on every container, pinned images, the GPU taint
tolerated by GPU pods, an API key from a Secret on serving endpoints, and a NetworkPolicy
selecting every workload's pods.

Objects installed by Helm releases are rendered by Helm at deploy time and are not seen here.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pulumi_policy import PolicyConfigSchema

from infra.contracts import (
    GPU_RESOURCE,
    GPU_TAINT_KEY,
    SYSTEM_NAMESPACES,
    WORKLOAD_LABEL,
    gpu_taint,
    tolerates,
)
from policies.rules.base import (
    PolicySettings,
    Reporter,
    RuleInfo,
    RuleResourcePolicy,
    RuleStackPolicy,
    StackView,
    as_list,
    cis_eks,
    get,
    is_unknown,
    truthy,
)

SERVING_IMAGE = "vllm/vllm-openai"
SERVING_LABEL = (WORKLOAD_LABEL, "serving")
API_KEY_ENV = "VLLM_API_KEY"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
DAEMON_SET = "kubernetes:apps/v1:DaemonSet"
ESCALATING_CAPABILITIES = ("ALL", "SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "SYS_MODULE")

# type token -> path to the pod template (metadata + spec) inside the object.
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:core/v1:Pod": (),
    "kubernetes:core/v1:ReplicationController": ("spec", "template"),
    "kubernetes:apps/v1:Deployment": ("spec", "template"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template"),
    DAEMON_SET: ("spec", "template"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template"),
    "kubernetes:batch/v1:Job": ("spec", "template"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template"),
}
# Not objects of their own (Helm, YAML bundles, patches, providers) or not pod-bearing.
_SKIP = re.compile(r"^(pulumi:providers:|kubernetes:(helm\.sh|yaml|kustomize)/)|Patch$|List$")
# Custom resources are searched for embedded pod templates.
_BUILTIN_GROUPS = re.compile(
    r"^kubernetes:(core|apps|batch|networking\.k8s\.io|rbac\.authorization\.k8s\.io|policy|"
    r"storage\.k8s\.io|scheduling\.k8s\.io|autoscaling|admissionregistration\.k8s\.io|"
    r"apiextensions\.k8s\.io|coordination\.k8s\.io|discovery\.k8s\.io|node\.k8s\.io|"
    r"certificates\.k8s\.io|events\.k8s\.io|flowcontrol\.apiserver\.k8s\.io)/"
)


@dataclass(frozen=True)
class PodTemplate:
    path: str
    metadata: dict[str, Any]
    spec: dict[str, Any]

    @property
    def labels(self) -> dict[str, Any]:
        labels = self.metadata.get("labels")
        return labels if isinstance(labels, dict) else {}

    def containers(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for field in ("initContainers", "containers", "ephemeralContainers"):
            for c in as_list(self.spec.get(field)):
                if isinstance(c, dict):
                    yield f"{field}/{c.get('name', '?')}", c


def is_workload_type(resource_type: str) -> bool:
    if _SKIP.search(resource_type) or not resource_type.startswith("kubernetes:"):
        return False
    return resource_type in TEMPLATE_PATHS or not _BUILTIN_GROUPS.match(resource_type)


def pod_templates(resource_type: str, props: dict[str, Any]) -> list[PodTemplate]:
    """The pod templates of a workload object (several for a JobSet's replicated jobs)."""
    path = TEMPLATE_PATHS.get(resource_type)
    if path is not None:
        node = get(props, *path) if path else props
        if isinstance(node, dict) and isinstance(node.get("spec"), dict):
            return [PodTemplate("/".join(path) or ".", node.get("metadata") or {}, node["spec"])]
        return []
    found: list[PodTemplate] = []
    _search(props, "", found, depth=0)
    return found


def _search(node: Any, path: str, found: list[PodTemplate], depth: int) -> None:
    if depth > 12:
        return
    if isinstance(node, dict):
        spec = node.get("spec")
        if isinstance(spec, dict) and isinstance(spec.get("containers"), list):
            found.append(PodTemplate(path or ".", node.get("metadata") or {}, spec))
            return
        for key, value in node.items():
            _search(value, f"{path}/{key}" if path else key, found, depth + 1)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _search(value, f"{path}[{i}]", found, depth + 1)


def object_namespace(props: dict[str, Any]) -> str:
    namespace = get(props, "metadata", "namespace")
    return namespace if isinstance(namespace, str) and namespace else "default"


def object_name(args: Any, props: dict[str, Any]) -> str:
    name = get(props, "metadata", "name")
    return name if isinstance(name, str) and name and not is_unknown(name) else args.name


def _allowlisted(args: Any, props: dict[str, Any], settings: PolicySettings) -> bool:
    """A node agent's DaemonSet named in the allow-list (`namespace/name` globs)."""
    if args.resource_type != DAEMON_SET:
        return False
    extra = args.get_config().get("allowedDaemonSets") or []
    patterns = [*settings.privileged_allowlist, *extra]
    ident = f"{object_namespace(props)}/{object_name(args, props)}"
    return any(fnmatch.fnmatchcase(ident, p) for p in patterns)


NO_PRIVILEGED = RuleInfo(
    id="k8s-no-privileged",
    title="No privileged containers",
    description="No container runs privileged or adds host-level capabilities (ALL, SYS_ADMIN, "
    "NET_ADMIN, SYS_PTRACE, SYS_MODULE), except in the allow-listed node agent DaemonSets.",
    severity="critical",
    remediation="Drop securityContext.privileged and the capabilities; a node agent that needs "
    "them runs as a DaemonSet named in the allow-list (policy config allowedDaemonSets).",
    controls=(cis_eks("4.2.1"),),
)
NO_HOST_NAMESPACES = RuleInfo(
    id="k8s-no-host-namespaces",
    title="No pods in the host's network, PID or IPC namespace",
    description="No pod sets hostNetwork, hostPID or hostIPC, except the allow-listed node agent "
    "DaemonSets.",
    severity="high",
    remediation="Remove hostNetwork/hostPID/hostIPC; expose ports through a Service instead.",
    controls=(cis_eks("4.2.2"), cis_eks("4.2.3"), cis_eks("4.2.4")),
)
RESOURCES_SET = RuleInfo(
    id="k8s-resources-set",
    title="Containers declare requests and a memory limit",
    description="Every container requests CPU and memory and limits memory (a CPU limit is not "
    "required: it throttles data loaders and NCCL proxy threads for no gain).",
    severity="medium",
    remediation="Set resources.requests.cpu, resources.requests.memory and "
    "resources.limits.memory on every container, init containers included.",
)
IMAGE_PINNED = RuleInfo(
    id="k8s-image-pinned",
    title="Images are pinned by tag or digest",
    description="Every container image names a version tag or a sha256 digest; no image is "
    "untagged or `latest`.",
    severity="medium",
    remediation="Use repo:1.2.3 or repo@sha256:<digest> (a digest also protects against a "
    "re-pushed tag).",
)
GPU_TOLERATION = RuleInfo(
    id="k8s-gpu-toleration",
    title="GPU pods tolerate the GPU taint",
    description="Every pod that requests nvidia.com/gpu tolerates the nvidia.com/gpu NoSchedule "
    "taint of the GPU node groups (else it never schedules).",
    severity="medium",
    remediation="Add tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}] "
    "and a nodeSelector llmcloud.io/node-group: <group>.",
)
SERVING_API_KEY = RuleInfo(
    id="k8s-serving-api-key",
    title="Serving endpoints require an API key from a Secret",
    description="Every vLLM serving workload (image vllm/vllm-openai or label "
    "llmcloud.io/workload=serving) gets its API key (VLLM_API_KEY) from a Kubernetes Secret.",
    severity="high",
    remediation="Set env VLLM_API_KEY with valueFrom.secretKeyRef (serving.api_key_required: "
    "true, and llmcloud:serving_api_key set as a Pulumi secret).",
)
NETWORK_POLICY_RULE = RuleInfo(
    id="k8s-network-policy",
    title="Every workload's pods are selected by a NetworkPolicy",
    description="Every workload outside the system namespaces has a NetworkPolicy in its "
    "namespace whose podSelector selects its pods and that governs ingress.",
    severity="medium",
    remediation="Declare a default-deny NetworkPolicy per namespace and allow rules for the "
    "traffic each workload needs.",
    controls=(cis_eks("4.3.2"),),
    kind="stack",
)


def check_privileged(
    args: Any, props: dict[str, Any], report: Reporter, settings: PolicySettings
) -> None:
    if _allowlisted(args, props, settings):
        return
    for template in pod_templates(args.resource_type, props):
        for where, container in template.containers():
            context = container.get("securityContext") or {}
            if truthy(context.get("privileged", False)) and not is_unknown(
                context.get("privileged")
            ):
                report(f"{args.name!r} {where} runs privileged")
            added = [
                str(c).upper()
                for c in as_list(get(context, "capabilities", "add"))
                if str(c).upper().removeprefix("CAP_") in ESCALATING_CAPABILITIES
            ]
            if added:
                report(f"{args.name!r} {where} adds capabilities {', '.join(added)}")


def check_host_namespaces(
    args: Any, props: dict[str, Any], report: Reporter, settings: PolicySettings
) -> None:
    if _allowlisted(args, props, settings):
        return
    for template in pod_templates(args.resource_type, props):
        used = [
            f for f in ("hostNetwork", "hostPID", "hostIPC") if truthy(template.spec.get(f, False))
        ]
        if used:
            report(f"{args.name!r} pod template ({template.path}) sets {', '.join(used)}")


def check_resources(
    args: Any, props: dict[str, Any], report: Reporter, settings: PolicySettings
) -> None:
    for template in pod_templates(args.resource_type, props):
        for where, container in template.containers():
            if where.startswith("ephemeralContainers"):
                continue  # debugging containers cannot declare resources
            resources = container.get("resources")
            if is_unknown(resources):
                continue
            resources = resources or {}
            missing = [
                f"{kind}.{name}"
                for kind, name in (
                    ("requests", "cpu"),
                    ("requests", "memory"),
                    ("limits", "memory"),
                )
                if get(resources, kind, name) in (None, "")
            ]
            if missing:
                report(f"{args.name!r} {where} does not set resources {', '.join(missing)}")


def image_problem(image: Any) -> str | None:
    if not isinstance(image, str) or is_unknown(image):
        return None
    if not image:
        return "has no image"
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image!r} has no tag (it means latest)"
    if last.rsplit(":", 1)[1] == "latest":
        return f"image {image!r} uses the latest tag"
    return None


def check_image(args: Any, props: dict[str, Any], report: Reporter, s: PolicySettings) -> None:
    for template in pod_templates(args.resource_type, props):
        for where, container in template.containers():
            problem = image_problem(container.get("image"))
            if problem:
                report(f"{args.name!r} {where}: {problem}")


def _requests_gpu(template: PodTemplate) -> bool:
    for _, container in template.containers():
        for kind in ("limits", "requests"):
            value = get(container, "resources", kind, GPU_RESOURCE)
            if value not in (None, "", 0, "0"):
                return True
    return False


def _tolerates_gpu(template: PodTemplate) -> bool:
    return tolerates(template.spec.get("tolerations"), gpu_taint())


def check_gpu_toleration(
    args: Any, props: dict[str, Any], report: Reporter, settings: PolicySettings
) -> None:
    for template in pod_templates(args.resource_type, props):
        if _requests_gpu(template) and not _tolerates_gpu(template):
            report(
                f"{args.name!r} pod template ({template.path}) requests {GPU_RESOURCE} but does "
                f"not tolerate the {GPU_TAINT_KEY}:NoSchedule taint: it will never schedule"
            )


def is_serving(props: dict[str, Any], template: PodTemplate) -> bool:
    labels = {**(get(props, "metadata", "labels") or {}), **template.labels}
    if labels.get(SERVING_LABEL[0]) == SERVING_LABEL[1]:
        return True
    return any(
        isinstance(c.get("image"), str) and SERVING_IMAGE in c["image"]
        for _, c in template.containers()
    )


def _api_key_from_secret(container: dict[str, Any]) -> tuple[bool, str | None]:
    """(key from a Secret, problem) for one container."""
    for env in as_list(container.get("env")):
        if isinstance(env, dict) and env.get("name") == API_KEY_ENV:
            if get(env, "valueFrom", "secretKeyRef"):
                return True, None
            return False, f"sets {API_KEY_ENV} as a literal value, not from a Secret"
    for source in as_list(container.get("envFrom")):
        if isinstance(source, dict) and source.get("secretRef"):
            return True, None
    args = [str(a) for a in [*as_list(container.get("command")), *as_list(container.get("args"))]]
    if any(a == "--api-key" or a.startswith("--api-key=") for a in args):
        return False, "passes --api-key on the command line, not from a Secret"
    return False, None


def check_serving_api_key(
    args: Any, props: dict[str, Any], report: Reporter, settings: PolicySettings
) -> None:
    for template in pod_templates(args.resource_type, props):
        if not is_serving(props, template):
            continue
        for where, container in template.containers():
            if where.startswith("initContainers") or where.startswith("ephemeralContainers"):
                continue
            image = container.get("image")
            if (
                isinstance(image, str)
                and SERVING_IMAGE not in image
                and len(template.spec.get("containers") or []) > 1
            ):
                continue  # a sidecar of the serving pod
            ok, problem = _api_key_from_secret(container)
            if not ok:
                report(
                    f"serving workload {args.name!r} {where} "
                    + (
                        problem
                        or f"has no API key ({API_KEY_ENV} from a Secret): anyone who reaches it can use it"
                    )
                )


def _selects(selector: Any, labels: dict[str, Any]) -> bool:
    """Kubernetes label selector semantics (an empty selector selects everything)."""
    if not isinstance(selector, dict):
        return selector is None
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in as_list(selector.get("matchExpressions")):
        if not isinstance(expr, dict):
            continue
        key, op, values = expr.get("key"), expr.get("operator"), as_list(expr.get("values"))
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def check_network_policy(args: Any, report: Reporter, settings: PolicySettings) -> None:
    view = StackView.of(args)
    policies_by_ns: dict[str, list[dict[str, Any]]] = {}
    for policy in view.of_type(NETWORK_POLICY):
        props = view.props[policy.urn]
        spec = props.get("spec") or {}
        types = as_list(spec.get("policyTypes")) or ["Ingress"]
        if "Ingress" in types:
            policies_by_ns.setdefault(object_namespace(props), []).append(spec)
    for resource in view.resources:
        if not is_workload_type(resource.resource_type):
            continue
        props = view.props[resource.urn]
        namespace = object_namespace(props)
        if namespace in SYSTEM_NAMESPACES or is_unknown(namespace):
            continue
        for template in pod_templates(resource.resource_type, props):
            selected = any(
                _selects(spec.get("podSelector", {}), template.labels)
                for spec in policies_by_ns.get(namespace, [])
            )
            if not selected:
                report(
                    f"{resource.name!r} ({namespace}) has pods that no NetworkPolicy selects: "
                    "any pod in the cluster can reach them",
                    resource.urn,
                )
                break


ALLOWLIST_SCHEMA = PolicyConfigSchema(
    properties={
        "allowedDaemonSets": {
            "type": "array",
            "items": {"type": "string"},
            "description": "namespace/name globs of DaemonSets that may use host privileges",
        }
    }
)


def policies(settings: PolicySettings) -> list[Any]:
    def rule(info: RuleInfo, check: Any, schema: PolicyConfigSchema | None = None) -> Any:
        return RuleResourcePolicy(
            info, settings, check, None, config_schema=schema, matches=is_workload_type
        )

    return [
        rule(NO_PRIVILEGED, check_privileged, ALLOWLIST_SCHEMA),
        rule(NO_HOST_NAMESPACES, check_host_namespaces, ALLOWLIST_SCHEMA),
        rule(RESOURCES_SET, check_resources),
        rule(IMAGE_PINNED, check_image),
        rule(GPU_TOLERATION, check_gpu_toleration),
        rule(SERVING_API_KEY, check_serving_api_key),
        RuleStackPolicy(NETWORK_POLICY_RULE, settings, check_network_policy),
    ]
