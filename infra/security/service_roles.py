"""The service-linked roles the stack depends on, created by the stack in an account that has
never had them (`security.create_service_linked_roles`, default on).

A service-linked role normally appears the first time its service acts (the first Auto Scaling
group, node group, load balancer, Spot request). The EBS key policy names the Auto Scaling role
before any group exists, and KMS refuses a policy with a principal that does not exist
(`MalformedPolicyDocumentException: ... invalid principals`), so on a fresh account the key, and
every launch template, node group and encrypted StorageClass behind it, would fail. The key
depends on these roles; `llmcloud preflight` checks them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.context import Context
from infra.security.principals import (  # noqa: F401 (needed_services: re-exported)
    SERVICE_LINKED_ROLES,
    needed_services,
)


def role_arn(ctx: Context, service: str) -> str:
    """ARN of a service-linked role (its path is `aws-service-role/<service>/`)."""
    return ctx.arn(
        "iam", f"role/aws-service-role/{service}/{SERVICE_LINKED_ROLES[service]}", region=False
    )


@dataclass(frozen=True)
class ServiceLinkedRolesArgs:
    services: list[str]


class ServiceLinkedRoles(pulumi.ComponentResource):
    """One `aws.iam.ServiceLinkedRole` per service. Kept when the stack is destroyed: other
    stacks and the services themselves use them, and AWS deletes them only when unused."""

    roles: dict[str, aws.iam.ServiceLinkedRole]

    def __init__(
        self,
        name: str,
        args: ServiceLinkedRolesArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("llmcloud:security:ServiceLinkedRoles", name, None, opts)
        self.roles = {
            service: aws.iam.ServiceLinkedRole(
                f"{name}-{service.split('.')[0]}",
                aws_service_name=service,
                description=f"{ctx.prefix}: created by llmcloud on an account without it",
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
            )
            for service in args.services
        }
        self.register_outputs({"services": sorted(self.roles)})
