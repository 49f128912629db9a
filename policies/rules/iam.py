"""IAM rules over the permission documents the program declares (managed policies, inline
role/user/group policies, a role's inline policies): no wildcard actions, no write actions
on `"Resource": "*"`, and no AdministratorAccess-class managed policy on a workload role.

Which actions write is `infra.security.actions` (AWS's access levels): the same classifier
PodRole's guard uses, so a statement the guard accepts is one this pack accepts.

Trust policies (`assumeRolePolicy`) are not permission documents and are not judged here;
neither are KMS key policies, whose `"Resource": "*"` means the key itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from infra.security.actions import allowed_on_any_resource
from policies.rules.base import (
    PolicySettings,
    Reporter,
    RuleInfo,
    RuleResourcePolicy,
    RuleStackPolicy,
    StackView,
    as_list,
    cis_aws,
    fsbp,
    is_unknown,
    json_document,
    statements,
)

ROLE = "aws:iam/role:Role"
DOCUMENT_TYPES = {
    "aws:iam/policy:Policy": "policy",
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:iam/userPolicy:UserPolicy": "policy",
    "aws:iam/groupPolicy:GroupPolicy": "policy",
}
ATTACHMENT_TYPES = (
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:iam/policyAttachment:PolicyAttachment",
)
ADMIN_POLICIES = ("AdministratorAccess", "PowerUserAccess", "IAMFullAccess")
_ADMIN_ARN = re.compile(
    r"^arn:aws[a-z-]*:iam::aws:policy/(?:[\w+=,.@-]+/)*(" + "|".join(ADMIN_POLICIES) + r")$"
)

# Condition keys that scope a "*" statement to tagged resources.
_TAG_SCOPED = re.compile(r"^[a-z0-9-]+:(ResourceTag|RequestTag)/", re.I)

NO_WILDCARD_ACTIONS = RuleInfo(
    id="iam-no-wildcard-actions",
    title="IAM policies name their actions",
    description="No IAM permission statement allows `*`, `<service>:*` or NotAction.",
    severity="high",
    remediation="List the actions the workload calls (s3:GetObject, s3:ListBucket, ...) instead "
    "of a wildcard.",
    controls=(cis_aws("1.16"), fsbp("IAM.21")),
)
NO_WRITE_ON_WILDCARD = RuleInfo(
    id="iam-no-write-on-wildcard-resources",
    title="IAM policies do not write to every resource",
    description='No IAM permission statement allows a write action on "Resource": "*" (or '
    "NotResource) unless it is scoped by resource or request tags.",
    severity="high",
    remediation="Name the ARNs the statement writes to (bucket/prefix, key, log group), or scope "
    "it with an aws:ResourceTag condition.",
)
NO_ADMIN = RuleInfo(
    id="iam-no-admin-on-workloads",
    title="Workload roles carry no administrator policy",
    description="No role that a workload assumes (AWS services, EKS pods, OIDC service accounts) "
    "has AdministratorAccess, PowerUserAccess or IAMFullAccess attached.",
    severity="critical",
    remediation="Give the workload a PodRole with the statements it needs; keep broad access "
    "for the human and CI deploy roles, outside the workload's reach.",
    controls=(cis_aws("1.16"), fsbp("IAM.1")),
    kind="stack",
)


def permission_documents(
    resource_type: str, props: dict[str, Any]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, document) of every permission document the resource declares."""
    field = DOCUMENT_TYPES.get(resource_type)
    if field:
        document = json_document(props.get(field), field)
        if document:
            yield field, document
    elif resource_type == ROLE:
        for i, inline in enumerate(as_list(props.get("inlinePolicies"))):
            if isinstance(inline, dict):
                document = json_document(inline.get("policy"), "inlinePolicies", str(i), "policy")
                if document:
                    yield f"inline policy {inline.get('name') or i}", document


def _sid(statement: dict[str, Any], i: int) -> str:
    return str(statement.get("Sid") or f"#{i}")


def _wildcard(action: str) -> bool:
    return action == "*" or action.endswith(":*")


def check_wildcard_actions(
    args: Any, props: dict[str, Any], report: Reporter, settings: PolicySettings
) -> None:
    for label, document in permission_documents(args.resource_type, props):
        for i, statement in enumerate(statements(document)):
            if statement.get("Effect") != "Allow":
                continue
            if "NotAction" in statement:
                report(
                    f"{args.name!r} {label} statement {_sid(statement, i)} allows every action "
                    "but its NotAction list"
                )
                continue
            wild = [
                a for a in as_list(statement.get("Action")) if isinstance(a, str) and _wildcard(a)
            ]
            if wild:
                report(
                    f"{args.name!r} {label} statement {_sid(statement, i)} allows {', '.join(wild)}"
                )


def _tag_scoped(statement: dict[str, Any]) -> bool:
    for conditions in (statement.get("Condition") or {}).values():
        if isinstance(conditions, dict) and any(_TAG_SCOPED.match(k) for k in conditions):
            return True
    return False


def check_write_on_wildcard(
    args: Any, props: dict[str, Any], report: Reporter, settings: PolicySettings
) -> None:
    for label, document in permission_documents(args.resource_type, props):
        for i, statement in enumerate(statements(document)):
            if statement.get("Effect") != "Allow":
                continue
            resources = as_list(statement.get("Resource"))
            if "*" not in resources and "NotResource" not in statement:
                continue
            if _tag_scoped(statement):
                continue
            if "NotAction" in statement:
                writes = ["(everything but NotAction)"]
            else:
                writes = [
                    str(a)
                    for a in as_list(statement.get("Action"))
                    if not allowed_on_any_resource(a)
                ]
            if writes:
                report(
                    f"{args.name!r} {label} statement {_sid(statement, i)} allows "
                    f"{', '.join(writes)} on every resource"
                )


def _trusts_workload(role_props: dict[str, Any]) -> bool:
    """A role assumed by an AWS service, EKS pods or a cluster's OIDC service accounts. Roles
    trusted only by accounts, users or a CI identity provider are human/deploy roles."""
    trust = role_props.get("assumeRolePolicy")
    if trust is None or is_unknown(trust):
        return True
    document = json_document(trust, "assumeRolePolicy")
    for statement in statements(document):
        principal = statement.get("Principal")
        if not isinstance(principal, dict):
            continue
        if principal.get("Service"):
            return True
        for federated in as_list(principal.get("Federated")):
            if isinstance(federated, str) and "oidc.eks." in federated:
                return True
    return False


def _admin(arn: Any) -> str | None:
    if not isinstance(arn, str) or is_unknown(arn):
        return None
    match = _ADMIN_ARN.match(arn)
    return match.group(1) if match else None


def check_admin(args: Any, report: Reporter, settings: PolicySettings) -> None:
    view = StackView.of(args)
    roles = list(view.of_type(ROLE))
    for role in roles:
        props = view.props[role.urn]
        for arn in as_list(props.get("managedPolicyArns")):
            name = _admin(arn)
            if name and _trusts_workload(props):
                report(f"workload role {role.name!r} has {name} attached", role.urn)
    for attachment in view.of_type(*ATTACHMENT_TYPES):
        props = view.props[attachment.urn]
        name = _admin(props.get("policyArn"))
        if not name:
            continue
        prop = "role" if "role" in props else "roles"
        targets = view.linked(attachment, prop, roles, "name")
        if not targets:
            # A role this stack does not declare: nothing shows it is not a workload's.
            report(
                f"{attachment.name!r} attaches {name} to a role outside this stack", attachment.urn
            )
        for role in targets:
            if _trusts_workload(view.props[role.urn]):
                report(
                    f"{attachment.name!r} attaches {name} to workload role {role.name!r}",
                    attachment.urn,
                )


def policies(settings: PolicySettings) -> list[Any]:
    document_types = [*DOCUMENT_TYPES, ROLE]
    return [
        RuleResourcePolicy(NO_WILDCARD_ACTIONS, settings, check_wildcard_actions, document_types),
        RuleResourcePolicy(NO_WRITE_ON_WILDCARD, settings, check_write_on_wildcard, document_types),
        RuleStackPolicy(NO_ADMIN, settings, check_admin),
    ]
