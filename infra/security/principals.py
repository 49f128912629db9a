"""The IAM principals the stack's policies name that must exist before a deploy: the
service-linked roles and the key policies' principals.

Plain data and functions, no Pulumi: `llmcloud preflight` checks these in the account and
must start without the Pulumi SDK; the components (`service_roles`, `keys`) use the same
definitions.
"""

from __future__ import annotations

from typing import Any

# service principal -> the role IAM creates for it (IAM user guide, "AWS services that work
# with IAM", service-linked role column; names as each service documents them).
SERVICE_LINKED_ROLES: dict[str, str] = {
    "autoscaling.amazonaws.com": "AWSServiceRoleForAutoScaling",  # node groups' ASGs; EBS key
    "eks-nodegroup.amazonaws.com": "AWSServiceRoleForAmazonEKSNodegroup",  # managed node groups
    "elasticloadbalancing.amazonaws.com": "AWSServiceRoleForElasticLoadBalancing",  # LB controller
    "spot.amazonaws.com": "AWSServiceRoleForEC2Spot",  # only with spot capacity
}


def needed_services(config: Any) -> list[str]:
    """The services whose roles this stack relies on (Spot only when a group uses it)."""
    spot = any(g.capacity.type == "spot" for g in config.cluster.gpu_node_groups)
    return [s for s in SERVICE_LINKED_ROLES if s != "spot.amazonaws.com" or spot]


def key_policy_principals(config: Any, account_id: str, partition: str = "aws") -> list[str]:
    """The IAM principals the key policies name (what `Keys` puts in them): the account root,
    the key administrators, the Auto Scaling service-linked role. `llmcloud preflight` checks
    they exist; KMS refuses a policy naming one that does not."""
    root = f"arn:{partition}:iam::{account_id}:root"
    asg = (
        f"arn:{partition}:iam::{account_id}:role/aws-service-role/autoscaling.amazonaws.com/"
        + SERVICE_LINKED_ROLES["autoscaling.amazonaws.com"]
    )
    return [root, *config.security.key_admin_arns, asg]
