"""`VllmService`: one vLLM OpenAI-compatible endpoint on a GPU node group, as a component.

What it declares, per serving entry of the stack config:
- a service account and its pod role (read-only on the model's prefix of the models bucket
  and decrypt with the data key), the only AWS access the pods have;
- the API key in a Kubernetes Secret (the `serving_api_key` Pulumi secret, else a generated
  one kept in state), handed to vLLM as `VLLM_API_KEY`;
- the pods: a Deployment (a replica fits on one node) or a LeaderWorkerSet (a replica spans
  nodes: tensor parallel inside a node, pipeline parallel across), with the model synced
  from S3 to node-local disk by an init container or streamed from S3 by vLLM, and a startup
  probe whose window is sized from the checkpoint size;
- a NetworkPolicy that admits only the configured namespaces and CIDRs (and the metrics
  scraper) on port 8000, because vLLM's key covers `/v1` only and `/metrics`, `/health`
  and other routes answer anyone who can connect;
- a ClusterIP Service (an internal NLB only when configured), a PodDisruptionBudget, zone
  spread, autoscaling on waiting requests (KEDA) or CPU (HPA), and a PodMonitor.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra import pins
from infra.config import ConfigError, GpuNodeGroupConfig, ServingConfig
from infra.context import Context
from infra.contracts import (
    MONITORING_NAMESPACE,
    NAMESPACE_NAME_LABEL,
    PART_OF,
    PART_OF_LABEL,
    RUN_AS_UID,
    WORKLOAD_LABEL,
)
from infra.security.roles import PodRole
from infra.security.statements import serving_statements
from workloads import pods
from workloads.facts import ClusterFacts
from workloads.serving.fit import GIB, FitError, Topology, check_fit, checkpoint_bytes
from workloads.serving.sizing import CACHE_DISK_GIB, pod_size

PORT = 8000
AWS_CLI_IMAGE = pins.image("aws_cli")
# Multi-node replicas use vLLM's own multiprocessing backend across nodes (`--nnodes`,
# `--node-rank`, `--master-addr`, workers `--headless`; vllm/config/parallel.py at v0.33.0), not
# Ray: no bootstrap script inside the image to depend on, and the worker's command line is a
# `vllm serve` command line that the CLI contract checks like the leader's. The kubelet expands
# the `$(LWS_*)` variables the LeaderWorkerSet webhook puts into every container's env.
MASTER_PORT = 29501  # vLLM's default (ParallelConfig.master_port)
LWS_LEADER_ADDRESS = "$(LWS_LEADER_ADDRESS)"
LWS_WORKER_INDEX = "$(LWS_WORKER_INDEX)"
MODELS_DIR = "/models"
# The images run as root by default and nothing in them needs it. A UID above 10000 never
# matches a host account; USER/LOGNAME are set because the UID has no passwd entry and
# torch's compile cache asks getpass.getuser() for a name.
DEFAULT_PROMETHEUS_URL = "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
WAITING_METRIC = "vllm:num_requests_waiting"

# Startup window: the checkpoint read at these (conservative) rates, twice over, plus the
# engine's warm-up (torch.compile, CUDA graph capture, KV cache profiling), never below the
# floor. The init container's S3 sync runs before the probe starts and is not counted.
S3_STREAM_MB_PER_S = 200
LOCAL_LOAD_MB_PER_S = 400
LOAD_SAFETY_FACTOR = 2
ENGINE_WARMUP_S = 300
MIN_STARTUP_WINDOW_S = 600
PROBE_PERIOD_S = 10

# HPA fallback: a busy vLLM pod keeps about one core per GPU worker plus the engine core and
# the API server busy; scale out at 60 % of that.
CPU_BUSY_TARGET = 0.6
SCALE_DOWN_WINDOW_S = 600  # a new replica costs minutes of loading: scale in slowly
AWAIT_MARGIN_S = 1800  # node provisioning and the S3 sync, on top of the startup window


@dataclass(frozen=True)
class VllmServiceArgs:
    """Everything one endpoint needs; the Kubernetes provider comes through opts."""

    serving: ServingConfig
    node_group: GpuNodeGroupConfig
    cluster: ClusterFacts  # the models bucket, the data key, pod identity, the environment
    # The `serving_api_key` config secret; None: one is generated when a key is required.
    api_key: pulumi.Input[str] | None = None
    keda: bool = False
    metrics: Literal["prometheus", "cloudwatch"] = "prometheus"
    prometheus_url: str = DEFAULT_PROMETHEUS_URL
    # labels a Prometheus' podMonitorSelector needs (ours selects every PodMonitor)
    pod_monitor_labels: Mapping[str, str] = field(default_factory=dict)
    monitoring_namespace: str = MONITORING_NAMESPACE
    # what the Kubernetes objects need first: the namespace, and the add-ons whose CRDs and
    # controllers they use (Prometheus operator, KEDA, LeaderWorkerSet)
    depends_on: Sequence[pulumi.Resource] = ()


# --------------------------------------------------------------------------- derived values


def startup_window_s(svc: ServingConfig) -> int:
    """Seconds the startup probe waits for `/health` before the kubelet restarts vLLM."""
    if svc.startup_timeout_minutes is not None:
        return svc.startup_timeout_minutes * 60
    rate = S3_STREAM_MB_PER_S if svc.loader == "s3_streamer" else LOCAL_LOAD_MB_PER_S
    load_s = checkpoint_bytes(svc) / (rate * 1e6)
    return max(MIN_STARTUP_WINDOW_S, math.ceil(LOAD_SAFETY_FACTOR * load_s + ENGINE_WARMUP_S))


def startup_failure_threshold(svc: ServingConfig) -> int:
    return math.ceil(startup_window_s(svc) / PROBE_PERIOD_S)


def labels(svc: ServingConfig) -> dict[str, str]:
    return {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": svc.name}


def served_model_name(svc: ServingConfig) -> str:
    return svc.served_model_name or svc.model


def model_location(svc: ServingConfig, bucket: pulumi.Input[str]) -> pulumi.Output[str]:
    """The model `vllm serve` gets (its positional argument): the s3:// URI for the streamer,
    the synced local copy otherwise."""
    if svc.loader == "s3_streamer":
        return pulumi.Output.concat("s3://", bucket, "/", svc.model_prefix)
    return pulumi.Output.from_input(f"{MODELS_DIR}/{svc.name}")


def vllm_args(
    svc: ServingConfig,
    topology: Topology,
    model: pulumi.Input[str],
    *,
    node_rank: str = "0",
) -> list[pulumi.Input[str]]:
    """The arguments after `vllm serve`: the model positional (vLLM 0.11.0 rejects `--model`
    there, later releases warn and move it), then the options. For a multi-node replica,
    `node_rank` is "0" on the leader (which serves the API) and `$(LWS_WORKER_INDEX)` on the
    workers, which run `--headless` (no API server, they dial out to the leader)."""
    args: list[pulumi.Input[str]] = [
        model,
        "--served-model-name",
        served_model_name(svc),
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "--tensor-parallel-size",
        str(topology.tensor_parallel),
    ]
    if topology.multi_node:
        args += [
            "--pipeline-parallel-size",
            str(topology.pipeline_parallel),
            "--distributed-executor-backend",
            "mp",
            "--nnodes",
            str(topology.nodes_per_replica),
            "--node-rank",
            node_rank,
            "--master-addr",
            LWS_LEADER_ADDRESS,
            "--master-port",
            str(MASTER_PORT),
        ]
        if node_rank != "0":
            args.append("--headless")
    args += [
        "--gpu-memory-utilization",
        f"{svc.gpu_memory_utilization:g}",
        "--max-model-len",
        str(svc.max_model_len),
        "--max-num-seqs",
        str(svc.max_num_seqs),
        "--dtype",
        svc.dtype,
    ]
    if svc.quantization:
        args += ["--quantization", svc.quantization]
    if svc.loader == "s3_streamer":
        args += ["--load-format", "runai_streamer"]
    return args


def vllm_environment(
    svc: ServingConfig, group: GpuNodeGroupConfig, topology: Topology, region: str
) -> list[dict[str, Any]]:
    """The vLLM container's environment (the API key is added by the component).

    HF_HUB_OFFLINE=1: weights and tokenizer come from our bucket only, never the Hub. With
    the S3 streamer the model is an s3:// URI, which vLLM 0.33.0 leaves alone when offline
    (EngineArgs.__post_init__ skips cloud-storage URIs; the CLI export's probe records it)
    and pulls config and tokenizer files from S3 itself. A multi-node pod advertises its pod
    IP to its peers (VLLM_HOST_IP) and gets the EFA/NCCL settings training uses."""
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/home/vllm"},
        {"name": "USER", "value": "vllm"},
        {"name": "LOGNAME", "value": "vllm"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
        {"name": "AWS_REGION", "value": region},
    ]
    if topology.multi_node:
        env.append(
            {"name": "VLLM_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
        )
        env += [{"name": k, "value": v} for k, v in pods.efa_environment(group).items()]
    return env


# --------------------------------------------------------------------------- the component


class VllmService(pulumi.ComponentResource):
    """One vLLM endpoint (see the module docstring for what it declares)."""

    service_account: k8s.core.v1.ServiceAccount
    role: PodRole
    api_key_secret: k8s.core.v1.Secret | None
    api_key: pulumi.Input[str] | None  # the key in api_key_secret
    network_policy: k8s.networking.v1.NetworkPolicy
    service: k8s.core.v1.Service
    disruption_budget: k8s.policy.v1.PodDisruptionBudget
    topology: Topology
    endpoint: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: VllmServiceArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        svc, group = args.serving, args.node_group
        try:  # config validation ran it already; a component built by hand gets it too
            self.topology = check_fit(svc, group)
        except FitError as e:
            raise ConfigError(
                f"serving {svc.name}: {svc.name}.{e.field} = {e.value!r}: {e.message}"
            ) from None
        super().__init__("llmcloud:workloads:VllmService", name, None, opts)
        aws_child = pulumi.ResourceOptions(parent=self)
        # Kubernetes objects wait for the namespace and the add-ons they use
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        self._svc, self._args, self._ctx = svc, args, ctx
        ns, sel = svc.namespace, labels(svc)
        meta = {
            "name": svc.name,
            "namespace": ns,
            "labels": {
                **sel,
                "app.kubernetes.io/component": "serving",
                WORKLOAD_LABEL: "serving",
                PART_OF_LABEL: PART_OF,
                "llmcloud.io/environment": args.cluster.environment,
            },
        }
        self._meta = meta

        self.role = PodRole(
            f"{name}-pod-role",
            args.cluster.pod_role_args(
                namespace=ns,
                service_account=svc.name,
                statements=serving_statements(
                    args.cluster.models.arn,
                    svc.model_prefix,
                    args.cluster.data_key_arn,
                    region=ctx.region,
                ),
                description=f"vLLM endpoint {svc.name}: read s3 models/{svc.model_prefix}",
            ),
            ctx,
            aws_child,
        )
        self.service_account = self.role.kubernetes_service_account(f"{name}-sa", meta, child)

        self.api_key_secret = None
        self.api_key = None  # the model gateway sends it (workloads/gateway)
        if svc.api_key_required:
            key = args.api_key
            if key is None:
                key = random.RandomPassword(
                    f"{name}-api-key", length=48, special=False, opts=aws_child
                ).result
            self.api_key = key
            self.api_key_secret = k8s.core.v1.Secret(
                f"{name}-api-key",
                metadata={**meta, "name": f"{svc.name}-api-key"},
                type="Opaque",
                string_data={"api-key": pulumi.Output.secret(key)},
                opts=child,
            )

        workload_deps = [*args.depends_on, self.service_account]
        if self.api_key_secret is not None:
            workload_deps.append(self.api_key_secret)
        workload_opts = pulumi.ResourceOptions(parent=self, depends_on=workload_deps)
        if self.topology.multi_node:
            workload = self._leader_worker_set(name, workload_opts)
            target = {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet"}
            serving_selector = {**sel, "leaderworkerset.sigs.k8s.io/worker-index": "0"}
        else:
            workload = self._deployment(name, workload_opts)
            target = {"apiVersion": "apps/v1", "kind": "Deployment"}
            serving_selector = sel
        self.workload = workload

        self.network_policy = self._network_policy(name, child)
        self.service = self._service(name, serving_selector, child)
        self.disruption_budget = k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=meta,
            spec={
                "maxUnavailable": 1,
                "selector": {"matchLabels": sel},
                # a pod that never got ready (still loading, crash-looping) must not block
                # node drains
                "unhealthyPodEvictionPolicy": "AlwaysAllow",
            },
            opts=child,
        )
        self.autoscaler = self._autoscaler(name, target, child)
        self.pod_monitor = None
        if args.metrics == "prometheus":
            self.pod_monitor = k8s.apiextensions.CustomResource(
                f"{name}-pod-monitor",
                api_version="monitoring.coreos.com/v1",
                kind="PodMonitor",
                metadata={**meta, "labels": {**meta["labels"], **args.pod_monitor_labels}},
                spec={
                    "selector": {"matchLabels": serving_selector},
                    "podTargetLabels": ["app.kubernetes.io/instance"],
                    "podMetricsEndpoints": [
                        {"port": "http", "path": "/metrics", "interval": "15s"}
                    ],
                },
                opts=child,
            )

        self.endpoint = pulumi.Output.from_input(
            f"http://{svc.name}.{ns}.svc.cluster.local:{PORT}/v1"
        )
        self.register_outputs(
            {
                "endpoint": self.endpoint,
                "role_arn": self.role.role_arn,
                "tensor_parallel": self.topology.tensor_parallel,
                "pipeline_parallel": self.topology.pipeline_parallel,
            }
        )

    # ------------------------------------------------------------------ pods

    @property
    def _autoscaled(self) -> bool:
        return self._svc.replicas_max > self._svc.replicas_min

    def _vllm_container(
        self, size: pods.PodSize, command: list[str], args: list[pulumi.Input[str]]
    ) -> dict:
        svc = self._svc
        env = vllm_environment(svc, self._args.node_group, self.topology, self._ctx.region)
        if self.api_key_secret is not None:
            env.append(
                {
                    "name": "VLLM_API_KEY",
                    "valueFrom": {
                        "secretKeyRef": {"name": f"{svc.name}-api-key", "key": "api-key"}
                    },
                }
            )
        health = {"httpGet": {"path": "/health", "port": "http"}}
        mounts = [
            pods.shm_mount(),
            {"name": "home", "mountPath": "/home/vllm"},
            {"name": "tmp", "mountPath": "/tmp"},
        ]
        if svc.loader == "init_sync":
            mounts.append({"name": "models", "mountPath": MODELS_DIR, "readOnly": True})
        return {
            "name": "vllm",
            "image": svc.image,
            "command": command,
            "args": args,
            "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
            "env": env,
            "resources": pods.size_resources(size),
            "startupProbe": {
                **health,
                "periodSeconds": PROBE_PERIOD_S,
                "timeoutSeconds": 5,
                "failureThreshold": startup_failure_threshold(svc),
            },
            "readinessProbe": {
                **health,
                "periodSeconds": 10,
                "timeoutSeconds": 5,
                "failureThreshold": 3,
            },
            # a busy engine may answer /health slowly: restart only after minutes of silence
            "livenessProbe": {
                **health,
                "periodSeconds": 30,
                "timeoutSeconds": 10,
                "failureThreshold": 5,
            },
            # let endpoints drop the pod before vLLM stops taking requests
            "lifecycle": {"preStop": {"sleep": {"seconds": 15}}},
            "volumeMounts": mounts,
            # HOME, /tmp and /dev/shm are writable mounts; nothing else is written
            "securityContext": pods.restricted_container(),
        }

    def _sync_container(self, size: pods.PodSize) -> dict:
        """Copy s3://bucket/prefix to the node-local emptyDir before vLLM starts."""
        svc = self._svc
        dest = f"{MODELS_DIR}/{svc.name}"
        script = pulumi.Output.from_input(self._args.cluster.models.name).apply(
            lambda bucket: (
                "aws configure set default.s3.max_concurrent_requests 32\n"
                "aws configure set default.s3.multipart_chunksize 64MB\n"
                "aws s3 sync --only-show-errors --no-progress "
                f"{shlex.quote(f's3://{bucket}/{svc.model_prefix}')} {shlex.quote(dest)}\n"
            )
        )
        cpu = min(4, size.cpu)
        memory_gib = min(4, size.memory_gib)
        return {
            "name": "sync-model",
            "image": AWS_CLI_IMAGE,
            "command": ["/bin/sh", "-ec"],
            "args": [script],
            "env": [
                {"name": "HOME", "value": "/tmp"},
                {"name": "AWS_REGION", "value": self._ctx.region},
                {"name": "AWS_RETRY_MODE", "value": "adaptive"},
                {"name": "AWS_MAX_ATTEMPTS", "value": "10"},
            ],
            "resources": pods.guaranteed_resources(cpu, memory_gib),
            "volumeMounts": [
                {"name": "models", "mountPath": MODELS_DIR},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
            "securityContext": pods.restricted_container(),
        }

    def _pod_spec(
        self,
        command: list[str],
        args: list[pulumi.Input[str]],
        *,
        probes: bool = True,
        spread: bool = True,
    ) -> dict:
        svc = self._svc
        size = pod_size(svc, self._args.node_group, self.topology.tensor_parallel)
        container = self._vllm_container(size, command, args)
        if not probes:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                container.pop(probe)
        volumes: list[dict[str, Any]] = [
            pods.shm_volume(size),
            {"name": "home", "emptyDir": {"sizeLimit": f"{CACHE_DISK_GIB}Gi"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "10Gi"}},
        ]
        spec: dict[str, Any] = {
            "serviceAccountName": svc.name,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 120,
            **pods.gpu_placement(svc.node_group),
            "securityContext": pods.pod_security_context(uid=RUN_AS_UID),
            "containers": [container],
            "volumes": volumes,
        }
        if svc.loader == "init_sync":
            model_gib = math.ceil(checkpoint_bytes(svc) * 1.1 / GIB)
            # an emptyDir lives on the kubelet's disk: the NVMe RAID on instances that have
            # instance store, the root volume otherwise (the fit check sized both)
            volumes.append({"name": "models", "emptyDir": {"sizeLimit": f"{model_gib}Gi"}})
            spec["initContainers"] = [self._sync_container(size)]
        if spread:
            spec["topologySpreadConstraints"] = [
                {
                    "maxSkew": 1,
                    "topologyKey": key,
                    # GPU groups may live in one zone (EFA, reservations): prefer, don't block
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": labels(svc)},
                }
                for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
            ]
        return spec

    def _rollout(self) -> dict[str, Any]:
        """Surge one replica when the node group has room for it, else replace in place."""
        svc, group = self._svc, self._args.node_group
        spare = group.max_size * group.instance.gpu_count - svc.replicas_max * svc.gpus_per_replica
        if spare >= svc.gpus_per_replica:
            return {"maxSurge": 1, "maxUnavailable": 0}
        return {"maxSurge": 0, "maxUnavailable": 1}

    def _deployment(self, name: str, opts: pulumi.ResourceOptions) -> k8s.apps.v1.Deployment:
        svc = self._svc
        model = model_location(svc, self._args.cluster.models.name)
        spec: dict[str, Any] = {
            "selector": {"matchLabels": labels(svc)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": self._rollout()},
            # a rollout is not stuck while the new replica loads its model
            "progressDeadlineSeconds": startup_window_s(svc) + 900,
            "revisionHistoryLimit": 5,
            "template": {
                "metadata": {"labels": self._meta["labels"]},
                "spec": self._pod_spec(["vllm", "serve"], vllm_args(svc, self.topology, model)),
            },
        }
        if not self._autoscaled:  # else the autoscaler owns the replica count
            spec["replicas"] = svc.replicas_min
        # `pulumi up` waits for the rollout: long enough for a GPU node to join, the model to
        # sync and the startup window to pass. Not on a group that starts at zero nodes: the
        # first node comes when the autoscaler gets one (capacity may take hours or never
        # come), so the deploy does not wait on it (pulumi-kubernetes `pulumi.com/skipAwait`).
        await_s = startup_window_s(svc) + AWAIT_MARGIN_S
        wait = (
            {"pulumi.com/skipAwait": "true"}
            if self._args.node_group.desired == 0
            else {"pulumi.com/timeoutSeconds": str(await_s)}
        )
        metadata = {**self._meta, "annotations": wait}
        return k8s.apps.v1.Deployment(f"{name}-deployment", metadata=metadata, spec=spec, opts=opts)

    def _leader_worker_set(
        self, name: str, opts: pulumi.ResourceOptions
    ) -> k8s.apiextensions.CustomResource:
        """A replica spanning nodes (tensor parallel = GPUs per node, pipeline parallel =
        nodes): every pod runs `vllm serve` with the multiprocessing backend; the leader (node
        rank 0) serves the API, the workers join it headless."""
        svc, topo = self._svc, self.topology
        model = model_location(svc, self._args.cluster.models.name)
        leader_args = vllm_args(svc, topo, model)
        worker_args = vllm_args(svc, topo, model, node_rank=LWS_WORKER_INDEX)
        pod_labels = self._meta["labels"]
        spec: dict[str, Any] = {
            "startupPolicy": "LeaderCreated",
            "rolloutStrategy": {
                "type": "RollingUpdate",
                "rollingUpdateConfiguration": self._rollout(),
            },
            "leaderWorkerTemplate": {
                "size": topo.nodes_per_replica,
                # one lost pod breaks the pipeline: restart the whole group
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {
                    "metadata": {"labels": pod_labels},
                    "spec": self._pod_spec(["vllm", "serve"], leader_args),
                },
                "workerTemplate": {
                    "metadata": {"labels": pod_labels},
                    # a headless worker listens on no port: no probes (the group restarts as
                    # one when any pod fails)
                    "spec": self._pod_spec(
                        ["vllm", "serve"], worker_args, probes=False, spread=False
                    ),
                },
            },
        }
        if not self._autoscaled:
            spec["replicas"] = svc.replicas_min
        return k8s.apiextensions.CustomResource(
            f"{name}-lws",
            api_version="leaderworkerset.x-k8s.io/v1",
            kind="LeaderWorkerSet",
            metadata=self._meta,
            spec=spec,
            opts=opts,
        )

    # ------------------------------------------------------------------ access

    def _network_policy(
        self, name: str, opts: pulumi.ResourceOptions
    ) -> k8s.networking.v1.NetworkPolicy:
        """Default deny; port 8000 only from the allowed namespaces and CIDRs and the metrics
        scraper; egress only to DNS, HTTPS (S3, STS, KMS) and the Pod Identity agent."""
        svc, args = self._svc, self._args
        api_port = [{"protocol": "TCP", "port": PORT}]
        ingress: list[dict[str, Any]] = []
        if svc.allowed_namespaces:
            ingress.append(
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [
                                    {
                                        "key": NAMESPACE_NAME_LABEL,
                                        "operator": "In",
                                        "values": list(svc.allowed_namespaces),
                                    }
                                ]
                            }
                        }
                    ],
                    "ports": api_port,
                }
            )
        if svc.allowed_cidrs:
            ingress.append(
                {
                    "from": [{"ipBlock": {"cidr": str(c)}} for c in svc.allowed_cidrs],
                    "ports": api_port,
                }
            )
        if args.metrics == "prometheus":
            ingress.append(
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {NAMESPACE_NAME_LABEL: args.monitoring_namespace}
                            }
                        }
                    ],
                    "ports": api_port,
                }
            )
        egress: list[dict[str, Any]] = pods.baseline_egress()
        if self.topology.multi_node:  # Ray and NCCL between the pods of a group
            peers = [{"podSelector": {"matchLabels": labels(svc)}}]
            ingress.append({"from": peers})
            egress.append({"to": peers})
        if svc.load_balancer == "internal_nlb" and not svc.allowed_cidrs:
            pulumi.log.warn(
                f"serving {svc.name}: load_balancer internal_nlb with no allowed_cidrs: the "
                "NetworkPolicy admits no client behind the NLB; list the client ranges",
                resource=self,
            )
        return k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol",
            metadata=self._meta,
            spec={
                "podSelector": {"matchLabels": labels(svc)},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": ingress,
                "egress": egress,
            },
            opts=opts,
        )

    def _service(
        self, name: str, selector: dict[str, str], opts: pulumi.ResourceOptions
    ) -> k8s.core.v1.Service:
        svc = self._svc
        spec: dict[str, Any] = {
            "selector": selector,
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        }
        meta = dict(self._meta)
        if svc.load_balancer == "internal_nlb":
            # AWS Load Balancer Controller, instance targets with externalTrafficPolicy Local:
            # clients' IPs reach the pods (so the NetworkPolicy's CIDRs apply) and the NLB
            # health-checks kube-proxy's health node port, not vLLM's unauthenticated routes.
            meta["annotations"] = {
                "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
                "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "instance",
                "service.beta.kubernetes.io/aws-load-balancer-attributes": (
                    "load_balancing.cross_zone.enabled=true"
                ),
            }
            spec.update(
                type="LoadBalancer",
                loadBalancerClass="service.k8s.aws/nlb",
                externalTrafficPolicy="Local",
                loadBalancerSourceRanges=[str(c) for c in svc.allowed_cidrs],
            )
        else:
            spec["type"] = "ClusterIP"
        return k8s.core.v1.Service(f"{name}-service", metadata=meta, spec=spec, opts=opts)

    # ------------------------------------------------------------------ scale

    def _autoscaler(
        self, name: str, target: dict[str, str], opts: pulumi.ResourceOptions
    ) -> pulumi.CustomResource | None:
        svc, args = self._svc, self._args
        if not self._autoscaled:
            return None
        target_ref = {**target, "name": svc.name}
        behavior = {
            "scaleUp": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
            },
            "scaleDown": {
                "stabilizationWindowSeconds": SCALE_DOWN_WINDOW_S,
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}],
            },
        }
        if args.keda and args.metrics == "prometheus":
            query = (
                f'sum({WAITING_METRIC}{{namespace="{svc.namespace}",'
                f'app_kubernetes_io_instance="{svc.name}"}})'
            )
            return k8s.apiextensions.CustomResource(
                f"{name}-scaledobject",
                api_version="keda.sh/v1alpha1",
                kind="ScaledObject",
                metadata=self._meta,
                spec={
                    "scaleTargetRef": target_ref,
                    "minReplicaCount": svc.replicas_min,
                    "maxReplicaCount": svc.replicas_max,
                    "pollingInterval": 15,
                    "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior}},
                    "triggers": [
                        {
                            "type": "prometheus",
                            "metadata": {
                                "serverAddress": args.prometheus_url,
                                "query": query,
                                "threshold": str(svc.target_requests_waiting),
                            },
                        }
                    ],
                },
                opts=opts,
            )
        # Without KEDA (or Prometheus) nothing serves vLLM's queue metric to the HPA; CPU from
        # metrics-server is the signal left (see the README).
        busy_cores = self.topology.tensor_parallel + 2
        return k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-hpa",
            metadata=self._meta,
            spec={
                "scaleTargetRef": target_ref,
                "minReplicas": svc.replicas_min,
                "maxReplicas": svc.replicas_max,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "AverageValue",
                                "averageValue": f"{math.ceil(busy_cores * CPU_BUSY_TARGET * 1000)}m",
                            },
                        },
                    }
                ],
                "behavior": behavior,
            },
            opts=opts,
        )
