"""`TrainingJob`: one torchrun job of the packaged trainer on a GPU node group.

What it declares, per `training:` entry of the stack config:
- a service account and its pod role: read the datasets prefix, read/write/delete its own
  checkpoints prefix (`<checkpoints prefix><job>/`), use the data key; nothing else;
- an Indexed Job, one pod per node (completions = parallelism = nodes, `restartPolicy:
  Never`), whose `podFailurePolicy` ignores disruptions (preemption, node drain: the pod is
  recreated and torchrun re-rendezvouses) and fails the job at once on exit code 2 (bad
  config: retrying cannot help); a `check-config` init container runs the trainer's own
  validation first, so a bad config exits 2 before any GPU work;
- a headless Service: pod `i` is `<job>-i.<service>`, and torchrun's c10d rendezvous runs on
  pod 0; or, with `jobset: true`, a JobSet (`jobset.x-k8s.io/v1alpha2`), whose controller
  makes the Service itself;
- GPUs (`nvidia.com/gpu` = the instance's GPU count) and EFA interfaces
  (`vpc.amazonaws.com/efa`) from the catalog, node selector and GPU toleration of its node
  group, `/dev/shm` in memory, the FSx claim at `/fsx` (datasets and checkpoints), the
  NCCL/libfabric settings for EFA.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config import ConfigError, GpuNodeGroupConfig, TrainingJobConfig
from infra.context import Context
from infra.contracts import PART_OF, PART_OF_LABEL, RUN_AS_UID, WORKLOAD_LABEL
from infra.security.roles import PodRole
from infra.security.statements import training_statements
from infra.storage.lustre import CHECKPOINTS_PATH, DATASETS_PATH
from workloads import pods
from workloads.facts import ClusterFacts
from workloads.training.config import ModelShape, TrainConfig, from_mapping
from workloads.training.sizing import SCRATCH_GIB, pod_size
from workloads.training.stopping import GRACE_ENV, shutdown_timeouts, termination_grace_s

RENDEZVOUS_PORT = 29500
FSX_MOUNT = "/fsx"
LOCAL_CHECKPOINTS = "/checkpoints"  # without FSx: the pod's disk, mirrored to S3
CONFIG_ERROR_EXIT_CODE = 2
JOB_LABEL = "llmcloud.io/training-job"
SAFE_TO_EVICT_ANNOTATION = "cluster-autoscaler.kubernetes.io/safe-to-evict"
JOBSET_API = "jobset.x-k8s.io/v1alpha2"
JOBSET_REPLICATED_JOB = "node"
GP3_BASELINE_MB_PER_S = 125.0  # gp3's baseline throughput (EBS user guide, "gp3 volumes")


@dataclass(frozen=True)
class TrainingJobArgs:
    """Everything one job needs; the Kubernetes provider comes through opts."""

    job: TrainingJobConfig
    node_group: GpuNodeGroupConfig
    cluster: ClusterFacts  # the datasets and checkpoints buckets, the FSx claim, pod identity
    namespace: str | None = None  # default: the job's `namespace`
    # what the Kubernetes objects wait for (the namespace, the FSx claim, device plugins)
    depends_on: Sequence[pulumi.Resource] = ()
    # how fast checkpoints are written, in MB/s: FSx for Lustre's throughput
    # (`FsxConfig.throughput_mb_per_s`); None: the node's disk, at gp3's 125 MB/s baseline
    checkpoint_write_mb_per_s: float | None = None


# --------------------------------------------------------------------------- derived values


def trainer_shape(job: TrainingJobConfig) -> ModelShape:
    """The model the trainer will build from the job's `trainer:` keys."""
    values = from_mapping(job.trainer, f"training[{job.name}].trainer")
    values.pop("data", None)
    return TrainConfig(**values).shape


def check_job(job: TrainingJobConfig, group: GpuNodeGroupConfig) -> None:
    """The checks that need both the job and its node group, as a user error."""
    if group.name != job.node_group:
        raise ConfigError(
            f"training job {job.name}: node_group = {job.node_group!r}: the TrainingJob was "
            f"given node group {group.name!r}"
        )
    problem = job.node_group_problem(group)
    if problem is not None:
        field, value, allowed = problem
        raise ConfigError(f"training job {job.name}: {field} = {value!r}: {allowed}")


def service_name(job: TrainingJobConfig) -> str:
    return f"rdzv-{job.name}"


def rendezvous_host(job: TrainingJobConfig) -> str:
    """The stable DNS name of the pod that hosts the c10d store (index 0)."""
    if job.jobset:  # <jobset>-<replicated job>-<job index>-<pod index>.<subdomain>
        return f"{job.name}-{JOBSET_REPLICATED_JOB}-0-0.{job.name}"
    return f"{job.name}-0.{service_name(job)}"


def checkpoint_dir(job: TrainingJobConfig) -> str:
    if job.use_fsx:
        return f"{FSX_MOUNT}{CHECKPOINTS_PATH}/{job.name}"
    return LOCAL_CHECKPOINTS


def data_path(job: TrainingJobConfig) -> str:
    data = str(job.trainer_value("data", "synthetic"))
    if data == "synthetic" or data.startswith("/"):
        return data
    return f"{FSX_MOUNT}{DATASETS_PATH}/{data.strip('/')}"


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def trainer_args(
    job: TrainingJobConfig, checkpoint_upload: pulumi.Input[str] | None = None
) -> list[pulumi.Input[str]]:
    """The trainer's flags: the stack's `trainer:` keys, then the paths the job owns."""
    args: list[pulumi.Input[str]] = []
    for key, value in job.trainer.items():
        if key.replace("-", "_") == "data":
            continue
        args.append(f"--{key.replace('_', '-')}={_flag_value(value)}")
    ckpt = checkpoint_dir(job)
    args += [f"--data={data_path(job)}", f"--checkpoint-dir={ckpt}"]
    args.append(f"--metrics-file={ckpt}/metrics.jsonl")
    if checkpoint_upload is not None:
        args.append(pulumi.Output.concat("--checkpoint-upload=", checkpoint_upload))
    return args


def torchrun_args(job: TrainingJobConfig, group: GpuNodeGroupConfig) -> list[str]:
    """torchrun's own flags: one agent per node, one worker per GPU, c10d on pod 0."""
    return [
        f"--nnodes={job.nodes}",
        f"--nproc-per-node={group.instance.gpu_count}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={rendezvous_host(job)}:{RENDEZVOUS_PORT}",
        f"--rdzv-id={job.name}",
        f"--max-restarts={job.max_restarts}",
    ]


def environment(group: GpuNodeGroupConfig, region: str) -> list[dict[str, str]]:
    env = {
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",  # the root file system is read-only
        "HOME": "/tmp",
        "TORCHINDUCTOR_CACHE_DIR": "/tmp/torchinductor",
        "TRITON_CACHE_DIR": "/tmp/triton",
        # a fresh rendezvous store per restart: node restart counts can differ
        # (pytorch/pytorch#135712)
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
        "AWS_REGION": region,
    }
    env.update(pods.efa_environment(group))  # one definition with serving's multi-node pods
    return [{"name": k, "value": v} for k, v in env.items()]


_SMALL = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}}


# --------------------------------------------------------------------------- the component


class TrainingJob(pulumi.ComponentResource):
    """One torchrun training job (see the module docstring for what it declares)."""

    service_account: k8s.core.v1.ServiceAccount
    role: PodRole
    service: k8s.core.v1.Service | None
    workload: k8s.batch.v1.Job | k8s.apiextensions.CustomResource
    rendezvous_endpoint: str
    checkpoint_uri: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: TrainingJobArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        job, group = args.job, args.node_group
        check_job(job, group)  # before anything is declared
        super().__init__("llmcloud:workloads:TrainingJob", name, None, opts)
        aws_child = pulumi.ResourceOptions(parent=self)
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        ns = args.namespace or job.namespace
        self._job, self._group, self._ns = job, group, ns
        # long enough for the step in flight and a final save of the whole checkpoint
        self._grace_s = termination_grace_s(
            trainer_shape(args.job).parameters,
            args.checkpoint_write_mb_per_s or GP3_BASELINE_MB_PER_S,
        )
        self.labels = {
            "app.kubernetes.io/name": "trainer",
            "app.kubernetes.io/instance": job.name,
            PART_OF_LABEL: PART_OF,
            WORKLOAD_LABEL: "training",
            JOB_LABEL: job.name,
        }
        meta = {"name": job.name, "namespace": ns, "labels": self.labels}
        cluster = args.cluster
        checkpoints_prefix = f"{cluster.checkpoints_prefix}{job.name}/"
        self.checkpoint_uri = pulumi.Output.concat(
            "s3://", cluster.checkpoints.name, "/", checkpoints_prefix
        )

        self.role = PodRole(
            f"{name}-pod-role",
            cluster.pod_role_args(
                namespace=ns,
                service_account=job.name,
                statements=training_statements(
                    cluster.datasets.arn,
                    cluster.datasets_prefix,
                    cluster.checkpoints.arn,
                    checkpoints_prefix,
                    cluster.data_key_arn,
                    region=ctx.region,
                ),
                description=f"Training job {job.name}: read datasets, write its checkpoints",
            ),
            ctx,
            aws_child,
        )
        self.service_account = self.role.kubernetes_service_account(f"{name}-sa", meta, child)

        upload = None if job.use_fsx else self.checkpoint_uri
        if job.use_fsx and cluster.fsx_pvc_name is None:
            raise ConfigError(
                f"training job {job.name}: use_fsx = true: the stack has no FSx claim "
                "(storage.fsx); set use_fsx: false"
            )
        pod = self._pod_template(args, trainer_args(job, upload), ctx.region)
        workload_opts = pulumi.ResourceOptions(
            parent=self,
            depends_on=[*args.depends_on, self.service_account],
            # a Job's pod template is immutable: a change replaces the Job
            delete_before_replace=True,
        )
        self.rendezvous_endpoint = f"{rendezvous_host(job)}:{RENDEZVOUS_PORT}"
        self.service = None
        if job.jobset:
            self.workload = k8s.apiextensions.CustomResource(
                f"{name}-jobset",
                api_version=JOBSET_API,
                kind="JobSet",
                metadata=meta,
                spec=self._jobset_spec(pod),
                opts=workload_opts,
            )
        else:
            self.service = k8s.core.v1.Service(
                f"{name}-rendezvous",
                metadata={**meta, "name": service_name(job)},
                spec={
                    "clusterIP": "None",
                    "selector": {JOB_LABEL: job.name},
                    # pods resolve each other before they are ready (there is no probe)
                    "publishNotReadyAddresses": True,
                    "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "protocol": "TCP"}],
                },
                opts=child,
            )
            self.workload = k8s.batch.v1.Job(
                f"{name}-job",
                metadata={
                    **meta,
                    # `pulumi up` must not wait for a training run to finish
                    "annotations": {"pulumi.com/skipAwait": "true"},
                },
                spec=self._job_spec(pod, backoff_limit=job.backoff_limit),
                opts=workload_opts,
            )
        self.register_outputs(
            {
                "role_arn": self.role.role_arn,
                "rendezvous_endpoint": self.rendezvous_endpoint,
                "checkpoint_uri": self.checkpoint_uri,
            }
        )

    # ------------------------------------------------------------------ pod

    def _pod_template(
        self, args: TrainingJobArgs, flags: list[pulumi.Input[str]], region: str
    ) -> dict[str, Any]:
        job, group = self._job, self._group
        size = pod_size(group)
        torchrun_s, trainer_s = shutdown_timeouts(self._grace_s)
        volumes: list[dict[str, Any]] = [
            pods.shm_volume(size),
            {"name": "scratch", "emptyDir": {"sizeLimit": f"{SCRATCH_GIB}Gi"}},
        ]
        mounts = [pods.shm_mount(), {"name": "scratch", "mountPath": "/tmp"}]
        init: list[dict[str, Any]] = []
        if job.use_fsx:
            volumes.append(
                {"name": "fsx", "persistentVolumeClaim": {"claimName": args.cluster.fsx_pvc_name}}
            )
            mounts.append({"name": "fsx", "mountPath": FSX_MOUNT})
            ckpt = checkpoint_dir(job)
            init.append(
                {
                    "name": "prepare-checkpoints",
                    "image": job.image,
                    "command": [
                        "sh",
                        "-c",
                        f"mkdir -p {ckpt} && chown {RUN_AS_UID}:{RUN_AS_UID} {ckpt}",
                    ],
                    # only to hand the job's checkpoint directory on FSx to the trainer user
                    "securityContext": pods.root_container(add_capabilities=("CHOWN",)),
                    "resources": _SMALL,
                    "volumeMounts": [{"name": "fsx", "mountPath": FSX_MOUNT}],
                }
            )
        else:
            volumes.append({"name": "checkpoints", "emptyDir": {}})
            mounts.append({"name": "checkpoints", "mountPath": LOCAL_CHECKPOINTS})
        init.append(
            {
                "name": "check-config",
                "image": job.image,
                "command": [
                    "python",
                    "-m",
                    "workloads.training",
                    "--check-config",
                    f"--world-size={job.world_size(group)}",
                    *flags,
                ],
                "env": [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
                "securityContext": pods.restricted_container(uid=RUN_AS_UID),
                "resources": _SMALL,
                "volumeMounts": [m for m in mounts if m["name"] in ("fsx", "checkpoints")],
            }
        )
        trainer = {
            "name": "trainer",
            "image": job.image,
            "args": [
                *torchrun_args(job, group),
                f"--shutdown-timeout={torchrun_s}",
                "-m",
                "workloads.training",
                *flags,
            ],
            "env": [*environment(group, region), {"name": GRACE_ENV, "value": str(trainer_s)}],
            "ports": [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT}],
            "resources": pods.size_resources(size),
            "securityContext": pods.restricted_container(uid=RUN_AS_UID),
            "volumeMounts": mounts,
        }
        return {
            "metadata": {
                "labels": self.labels,
                # the Cluster Autoscaler never removes a node a training pod runs on
                # (kubernetes/autoscaler cluster-autoscaler/FAQ.md): a rank lost mid-step
                # costs the whole job a restart from its last checkpoint
                "annotations": {SAFE_TO_EVICT_ANNOTATION: "false"},
            },
            "spec": {
                "serviceAccountName": job.name,
                "automountServiceAccountToken": False,
                "restartPolicy": "Never",
                "subdomain": None if job.jobset else service_name(job),
                **pods.gpu_placement(group.name),
                # per container: only `prepare-checkpoints` runs as root
                "securityContext": pods.pod_security_context(uid=None),
                "terminationGracePeriodSeconds": self._grace_s,
                "initContainers": init,
                "containers": [trainer],
                "volumes": volumes,
            },
        }

    def _job_spec(self, pod: dict[str, Any], *, backoff_limit: int) -> dict[str, Any]:
        nodes = self._job.nodes
        spec = dict(pod["spec"])
        if spec.get("subdomain") is None:
            spec.pop("subdomain", None)
        return {
            "completionMode": "Indexed",
            "completions": nodes,
            "parallelism": nodes,
            "backoffLimit": backoff_limit,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                    {
                        "action": "FailJob",
                        "onExitCodes": {"operator": "In", "values": [CONFIG_ERROR_EXIT_CODE]},
                    },
                ]
            },
            "template": {"metadata": pod["metadata"], "spec": spec},
        }

    def _jobset_spec(self, pod: dict[str, Any]) -> dict[str, Any]:
        """One replicated job of `nodes` pods; a failed pod restarts the whole set (up to
        `backoff_limit` times), a config error (exit 2) fails it."""
        return {
            "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True},
            "failurePolicy": {
                "maxRestarts": self._job.backoff_limit,
                "rules": [{"action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"]}],
            },
            "replicatedJobs": [
                {
                    "name": JOBSET_REPLICATED_JOB,
                    "replicas": 1,
                    "template": {"spec": self._job_spec(pod, backoff_limit=0)},
                }
            ],
        }
