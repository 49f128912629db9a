"""IAM roles: the EKS cluster role, the node role, and `PodRole`, the only way a workload
gets AWS permissions.

A pod role trusts exactly one Kubernetes service account of one cluster: through EKS Pod
Identity by default (the trust names the pods.eks.amazonaws.com service and pins the
namespace, service account and cluster in session-tag conditions), or through the cluster's
OIDC provider (IRSA) as an option. Its permissions are an inline policy of statements with
exact ARNs, written by the component that needs them (`infra/security/statements.py` builds the
ones for training, serving and staging); PodRole refuses `*` actions and writes on `*`.

`DataStagerRole` is the one role people and CI assume: `llmcloud stage` writes the datasets
prefix with it; the principals allowed are listed in `security.data_stager_arns`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.context import Context, policy_document
from infra.contracts import STS_AUDIENCE
from infra.security.statements import statement_problems

POD_IDENTITY_SERVICE = "pods.eks.amazonaws.com"

# Nodes get what the kubelet, the Pod Identity agent and image pulls need; the VPC CNI's
# permissions sit on the aws-node pod role, not on every node. Both policies only read.
# They are the pair EKS's CreateNodegroup checks a managed node group's role for ("The
# provided role doesn't have the Amazon EKS Managed Policies associated with it"); the
# narrower AmazonEKSWorkerNodeMinimalPolicy / AmazonEC2ContainerRegistryPullOnly are
# reported to fail that check (awsdocs/amazon-eks-user-guide#880).
NODE_MANAGED_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEC2ContainerRegistryReadOnly",
)
CLUSTER_MANAGED_POLICIES = ("AmazonEKSClusterPolicy",)


def managed_policy_arn(ctx: Context, name: str) -> str:
    """ARN of an AWS managed policy; `name` may carry its path (`service-role/X`)."""
    return f"arn:{ctx.partition}:iam::aws:policy/{name}"


def attach_managed_policies(
    role: aws.iam.Role,
    prefix: str,
    policies: Iterable[str],
    ctx: Context,
    opts: pulumi.ResourceOptions,
) -> None:
    """One RolePolicyAttachment per AWS managed policy, named `<prefix>-<policy>` (the
    policy's name without its path)."""
    for policy in policies:
        aws.iam.RolePolicyAttachment(
            f"{prefix}-{policy.rsplit('/', 1)[-1]}",
            role=role.name,
            policy_arn=managed_policy_arn(ctx, policy),
            opts=opts,
        )


def service_trust(
    service: str, ctx: Context, *, tag_session: bool = False, source_account: bool = True
) -> pulumi.Output[str]:
    """Trust one AWS service principal, from this account only where the service sends
    `aws:SourceAccount` (`source_account=False` for those that do not: EC2 instance
    profiles, CloudTrail's CloudWatch Logs delivery; a condition they never satisfy would
    lock them out)."""
    actions = ["sts:AssumeRole", "sts:TagSession"] if tag_session else "sts:AssumeRole"
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": actions,
    }
    if source_account:
        statement["Condition"] = {"StringEquals": {"aws:SourceAccount": ctx.account_id}}
    return policy_document([statement])


@dataclass(frozen=True)
class ClusterRolesArgs:
    cluster_name: str
    cluster_key_arn: pulumi.Input[str]


class ClusterRoles(pulumi.ComponentResource):
    """The EKS control plane's role and the managed node groups' role."""

    cluster_role: aws.iam.Role
    node_role: aws.iam.Role

    def __init__(
        self,
        name: str,
        args: ClusterRolesArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("llmcloud:security:ClusterRoles", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # EKS's trust policy for the cluster role takes no SourceAccount condition: the
        # service assumes it before the cluster exists.
        self.cluster_role = aws.iam.Role(
            "cluster-role",
            description=f"EKS control plane of {args.cluster_name}",
            assume_role_policy=policy_document(
                [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "eks.amazonaws.com"},
                        "Action": ["sts:AssumeRole", "sts:TagSession"],
                    }
                ]
            ),
            opts=child,
        )
        attach_managed_policies(self.cluster_role, "cluster", CLUSTER_MANAGED_POLICIES, ctx, child)
        aws.iam.RolePolicy(
            "cluster-secrets-key",
            role=self.cluster_role.name,
            policy=policy_document(
                [
                    {
                        "Sid": "EnvelopeEncryptSecrets",
                        "Effect": "Allow",
                        "Action": [
                            "kms:Encrypt",
                            "kms:Decrypt",
                            "kms:ListGrants",
                            "kms:DescribeKey",
                        ],
                        "Resource": args.cluster_key_arn,
                    }
                ]
            ),
            opts=child,
        )
        self.node_role = aws.iam.Role(
            "node-role",
            description=f"Managed node groups of {args.cluster_name}",
            # Only EC2 can assume it, and only for instances launched with its instance
            # profile, which takes iam:PassRole in this account.
            assume_role_policy=service_trust("ec2.amazonaws.com", ctx, source_account=False),
            opts=child,
        )
        attach_managed_policies(self.node_role, "node", NODE_MANAGED_POLICIES, ctx, child)
        self.register_outputs(
            {"cluster_role_arn": self.cluster_role.arn, "node_role_arn": self.node_role.arn}
        )


@dataclass(frozen=True)
class PodRoleArgs:
    """Who may assume the role (one service account of one cluster) and what it may do."""

    cluster_name: pulumi.Input[str]
    namespace: str
    service_account: str
    statements: Sequence[dict[str, Any]] = ()
    # AWS managed policies (name, or path/name), only where AWS ships exactly the right one
    managed_policies: Sequence[str] = ()
    mode: Literal["pod_identity", "irsa"] = "pod_identity"
    oidc_provider_arn: pulumi.Input[str] | None = None
    oidc_issuer: pulumi.Input[str] | None = None
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)


class PodRole(pulumi.ComponentResource):
    """An IAM role for one Kubernetes service account, with its inline policy and (Pod
    Identity) its association. With IRSA, annotate the service account with
    `service_account_annotations`."""

    role: aws.iam.Role
    role_arn: pulumi.Output[str]
    namespace: str
    service_account: str
    service_account_annotations: dict[str, pulumi.Output[str]]

    def __init__(
        self,
        name: str,
        args: PodRoleArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("llmcloud:security:PodRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.namespace = args.namespace
        self.service_account = args.service_account
        if args.mode == "irsa" and (args.oidc_provider_arn is None or args.oidc_issuer is None):
            raise ValueError("PodRole in irsa mode needs oidc_provider_arn and oidc_issuer")
        _refuse_wildcards(f"PodRole {name!r}", args.statements)
        # Children carry the component's name: a URN holds the parent's type, not its name,
        # so two PodRoles with a child called "role" would collide.
        self.role = aws.iam.Role(
            f"{name}-role",
            description=args.description or f"Pod role of {args.namespace}/{args.service_account}",
            assume_role_policy=self._trust(args, ctx),
            max_session_duration=3600,
            tags={
                "llmcloud:namespace": args.namespace,
                "llmcloud:service-account": args.service_account,
                **args.tags,
            },
            opts=child,
        )
        self.role_arn = self.role.arn
        if args.statements:
            aws.iam.RolePolicy(
                f"{name}-policy",
                role=self.role.name,
                policy=policy_document(list(args.statements)),
                opts=child,
            )
        attach_managed_policies(self.role, name, args.managed_policies, ctx, child)
        self.service_account_annotations: dict[str, pulumi.Output[str]] = {}
        if args.mode == "pod_identity":
            aws.eks.PodIdentityAssociation(
                f"{name}-association",
                cluster_name=args.cluster_name,
                namespace=args.namespace,
                service_account=args.service_account,
                role_arn=self.role.arn,
                opts=child,
            )
        else:
            self.service_account_annotations = {"eks.amazonaws.com/role-arn": self.role.arn}
        self.register_outputs({"role_arn": self.role.arn})

    def kubernetes_service_account(
        self, name: str, metadata: dict[str, Any], opts: pulumi.ResourceOptions
    ) -> k8s.core.v1.ServiceAccount:
        """The service account this role trusts (annotated for IRSA). Workloads call AWS,
        not the Kubernetes API, so no API token is mounted into their pods."""
        return k8s.core.v1.ServiceAccount(
            name,
            metadata={
                **metadata,
                "name": self.service_account,
                "namespace": self.namespace,
                "annotations": self.service_account_annotations,
            },
            automount_service_account_token=False,
            opts=opts,
        )

    @staticmethod
    def _trust(args: PodRoleArgs, ctx: Context) -> pulumi.Output[str]:
        if args.mode == "pod_identity":
            return policy_document(
                [
                    {
                        "Sid": "EksPodIdentity",
                        "Effect": "Allow",
                        "Principal": {"Service": POD_IDENTITY_SERVICE},
                        "Action": ["sts:AssumeRole", "sts:TagSession"],
                        "Condition": {
                            "StringEquals": {
                                "aws:SourceAccount": ctx.account_id,
                                "aws:RequestTag/eks-cluster-name": args.cluster_name,
                                "aws:RequestTag/kubernetes-namespace": args.namespace,
                                "aws:RequestTag/kubernetes-service-account": args.service_account,
                            }
                        },
                    }
                ]
            )
        issuer_host = pulumi.Output.from_input(args.oidc_issuer).apply(
            lambda url: str(url).removeprefix("https://")
        )
        condition = issuer_host.apply(
            lambda host: {
                "StringEquals": {
                    f"{host}:sub": f"system:serviceaccount:{args.namespace}:{args.service_account}",
                    f"{host}:aud": STS_AUDIENCE,
                }
            }
        )
        return policy_document(
            [
                {
                    "Sid": "EksIrsa",
                    "Effect": "Allow",
                    "Principal": {"Federated": args.oidc_provider_arn},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": condition,
                }
            ]
        )


def _refuse_wildcards(owner: str, statements: Sequence[dict[str, Any]]) -> None:
    """Fail early on statements that grant `*` actions or writes on `*` (values already
    known; Outputs are checked on the whole plan by the tests)."""
    for i, statement in enumerate(statements):
        problems = statement_problems(statement)
        if problems:
            raise ValueError(
                f"{owner}: statement {i} ({statement.get('Sid', 'no Sid')}) "
                + "; ".join(problems)
                + ": name exact ARNs and actions"
            )


@dataclass(frozen=True)
class DataStagerRoleArgs:
    """Who may stage data (IAM role/user ARNs or account roots) and what they may write
    (`infra.security.statements.staging_statements`)."""

    principal_arns: Sequence[str]
    statements: Sequence[dict[str, Any]]
    max_session_duration_s: int = 12 * 3600  # a large upload outlasts the 1 h default
    description: str = ""


class DataStagerRole(pulumi.ComponentResource):
    """The role `llmcloud stage` assumes (from a laptop or CI) to upload datasets: trusted by
    exactly the configured principals, allowed exactly the staging statements."""

    role: aws.iam.Role
    role_arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: DataStagerRoleArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("llmcloud:security:DataStagerRole", name, None, opts)
        if not args.principal_arns:
            raise ValueError("DataStagerRole needs at least one principal ARN")
        if not args.statements:
            raise ValueError("DataStagerRole needs its staging statements")
        _refuse_wildcards(f"DataStagerRole {name!r}", args.statements)
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(
            f"{name}-role",
            description=args.description or f"{ctx.prefix}: llmcloud stage (datasets upload)",
            assume_role_policy=policy_document(
                [
                    {
                        "Sid": "DataStagers",
                        "Effect": "Allow",
                        "Principal": {"AWS": sorted(args.principal_arns)},
                        "Action": "sts:AssumeRole",
                    }
                ]
            ),
            max_session_duration=args.max_session_duration_s,
            tags={"llmcloud:purpose": "data-staging"},
            opts=child,
        )
        self.role_arn = self.role.arn
        aws.iam.RolePolicy(
            f"{name}-policy",
            role=self.role.name,
            policy=policy_document(list(args.statements)),
            opts=child,
        )
        self.register_outputs({"role_arn": self.role.arn})
