"""The deploy path of a private cluster: a stack whose EKS endpoint is private declares where its
Kubernetes layer is deployed from, and the identity that deploys it has a cluster-admin access
entry.

EKS: "All traffic to your cluster API server must come from within your cluster's VPC or a
connected network"; with API authentication and no bootstrap admin, only access entries reach
the API. Without both, `pulumi up` creates the AWS resources and then times out on every
namespace, Helm release and workload. The declaration is a resource that admits 443 on the
cluster security group or runs in the VPC (the CodeBuild runner project, a connected network's
ingress rule), tagged with the cluster it deploys and its deployers
(infra/security/deploy_runner.py).
"""

from __future__ import annotations

from typing import Any

from policies.rules.base import (
    PolicySettings,
    Reporter,
    RuleInfo,
    RuleStackPolicy,
    StackView,
    get,
    is_unknown,
)

CLUSTER = "aws:eks/cluster:Cluster"
PROJECT = "aws:codebuild/project:Project"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
ACCESS_ENTRY = "aws:eks/accessEntry:AccessEntry"
ASSOCIATION = "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"
ADMIN_POLICY_SUFFIX = ":cluster-access-policy/AmazonEKSClusterAdminPolicy"
# Keep in step with infra/security/deploy_runner.py (a test checks they are the same strings).
DEPLOYS_TAG = "llmcloud:deploys-kubernetes-of"
DEPLOYERS_TAG = "llmcloud:deployers"

DEPLOY_PATH = RuleInfo(
    id="eks-private-deploy-path",
    title="A private cluster declares where its Kubernetes layer is deployed from",
    description="Every EKS cluster with a private endpoint has a declared deploy path (an in-VPC "
    "runner or a connected network admitted on 443) whose deploying identities each have a "
    "cluster-admin access entry.",
    severity="high",
    remediation="Set llmcloud:deploy.kubernetes_from (codebuild_runner with a runner, or "
    "connected_network with connected_cidrs) and let the CI deploy role (llmcloud:ci) or "
    "deploy.deployer_arns deploy; see README 'Deploy path'.",
    kind="stack",
)


def _tags(props: dict[str, Any]) -> dict[str, Any]:
    tags = props.get("tags") or {}
    return tags if isinstance(tags, dict) else {}


def check_deploy_path(args: Any, report: Reporter, settings: PolicySettings) -> None:
    view = StackView.of(args)
    declarations = [
        r for r in view.of_type(PROJECT, INGRESS_RULE) if DEPLOYS_TAG in _tags(view.props[r.urn])
    ]
    entries = {view.props[r.urn].get("principalArn") for r in view.of_type(ACCESS_ENTRY)}
    admins = {
        view.props[r.urn].get("principalArn")
        for r in view.of_type(ASSOCIATION)
        if str(view.props[r.urn].get("policyArn", "")).endswith(ADMIN_POLICY_SUFFIX)
    }
    for cluster in view.of_type(CLUSTER):
        props = view.props[cluster.urn]
        public = get(props, "vpcConfig", "endpointPublicAccess")
        if is_unknown(public) or public:
            continue
        name = props.get("name")
        mine = [
            d
            for d in declarations
            if is_unknown(_tags(view.props[d.urn])[DEPLOYS_TAG])
            or is_unknown(name)
            or _tags(view.props[d.urn])[DEPLOYS_TAG] == name
        ]
        if not mine:
            report(
                f"cluster {cluster.name!r} has a private endpoint and the stack declares no place "
                "its Kubernetes layer is deployed from (llmcloud:deploy.kubernetes_from)",
                cluster.urn,
            )
            continue
        deployers: set[str] = set()
        unknown = False
        for d in mine:
            value = _tags(view.props[d.urn]).get(DEPLOYERS_TAG)
            if value is None:
                continue
            if is_unknown(value):
                unknown = True
                continue
            deployers |= set(str(value).split())
        if not deployers and not unknown:
            report(
                f"cluster {cluster.name!r}: its deploy path names no deploying identity "
                "(llmcloud:ci or deploy.deployer_arns)",
                cluster.urn,
            )
        for arn in sorted(deployers):
            if any(is_unknown(e) for e in entries | admins):
                break
            if arn not in entries or arn not in admins:
                report(
                    f"cluster {cluster.name!r}: deploying identity {arn} has no cluster-admin "
                    "access entry, so the Kubernetes API refuses it",
                    cluster.urn,
                )


def policies(settings: PolicySettings) -> list[Any]:
    return [RuleStackPolicy(DEPLOY_PATH, settings, check_deploy_path)]
