"""KMS rules: yearly rotation of symmetric keys, and no `kms:*` to anyone but the account root
(AWS's delegation of the key to IAM, without which a key can become unmanageable) and the
key administrators named in config.

A key policy's `"Resource": "*"` means "this key"; it is not a wildcard grant and is not
judged here (nor by the IAM rules, which read IAM policies only).
"""

from __future__ import annotations

import re
from typing import Any

from pulumi_policy import PolicyConfigSchema

from policies.rules.base import (
    PolicySettings,
    Reporter,
    RuleInfo,
    RuleResourcePolicy,
    as_list,
    cis_aws,
    fsbp,
    is_unknown,
    json_document,
    statements,
    truthy,
)

KEY = "aws:kms/key:Key"
KEY_POLICY = "aws:kms/keyPolicy:KeyPolicy"
_ROOT = re.compile(r"^(arn:aws[a-z-]*:iam::\d{12}:root|\d{12})$")
_FULL_ACCESS = ("kms:*", "*")

ROTATION = RuleInfo(
    id="kms-key-rotation",
    title="KMS keys rotate",
    description="Every symmetric customer managed KMS key has automatic key rotation enabled.",
    severity="medium",
    remediation="Set enable_key_rotation=True on the aws.kms.Key (rotation_period_in_days "
    "defaults to 365).",
    controls=(cis_aws("3.6"), fsbp("KMS.4")),
)
NO_WILDCARD_GRANTS = RuleInfo(
    id="kms-no-wildcard-grants",
    title="KMS key policies grant kms:* only to the account root and key admins",
    description="No key policy statement allows kms:* (or *, or NotAction) to a principal other "
    "than the account root delegation and the key administrators of the stack config.",
    severity="high",
    remediation="Grant workloads the operations they use (kms:Decrypt, kms:GenerateDataKey*, "
    "...) instead of kms:*, or add the principal to security.key_admin_arns if it really "
    "administers keys.",
)


def check_rotation(
    args: Any, props: dict[str, Any], report: Reporter, settings: PolicySettings
) -> None:
    spec = props.get("customerMasterKeySpec") or "SYMMETRIC_DEFAULT"
    usage = props.get("keyUsage") or "ENCRYPT_DECRYPT"
    if is_unknown(spec) or is_unknown(usage):
        return
    if spec != "SYMMETRIC_DEFAULT" or usage != "ENCRYPT_DECRYPT" or props.get("customKeyStoreId"):
        return  # asymmetric, HMAC and external-store keys cannot rotate automatically
    if not truthy(props.get("enableKeyRotation", False)):
        report(f"key {args.name!r} does not rotate (enable_key_rotation is off)")


def _principals(statement: dict[str, Any]) -> list[str]:
    principal = statement.get("Principal")
    if principal == "*":
        return ["*"]
    if not isinstance(principal, dict):
        return []
    out: list[str] = []
    for kind, values in principal.items():
        for value in as_list(values):
            out.append("*" if value == "*" else f"{kind}:{value}" if kind != "AWS" else str(value))
    return out


def check_wildcard_grants(
    args: Any, props: dict[str, Any], report: Reporter, settings: PolicySettings
) -> None:
    document = json_document(props.get("policy"), "policy")
    if document is None:
        return  # no policy: AWS's default key policy (account root only)
    admins = set(settings.key_admin_arns) | set(args.get_config().get("adminArns", []) or [])
    for i, statement in enumerate(statements(document)):
        if statement.get("Effect") != "Allow":
            continue
        actions = as_list(statement.get("Action"))
        full = any(a in _FULL_ACCESS for a in actions) or "NotAction" in statement
        if not full:
            continue
        for principal in _principals(statement):
            if is_unknown(principal) or _ROOT.match(principal) or principal in admins:
                continue
            sid = statement.get("Sid") or f"#{i}"
            report(
                f"key policy of {args.name!r} (statement {sid}) allows "
                f"{'everything but NotAction' if 'NotAction' in statement else 'kms:*'} "
                f"to {principal}"
            )


ADMIN_SCHEMA = PolicyConfigSchema(
    properties={
        "adminArns": {
            "type": "array",
            "items": {"type": "string"},
            "description": "principals besides security.key_admin_arns that may hold kms:*",
        }
    }
)


def policies(settings: PolicySettings) -> list[Any]:
    return [
        RuleResourcePolicy(ROTATION, settings, check_rotation, [KEY]),
        RuleResourcePolicy(
            NO_WILDCARD_GRANTS,
            settings,
            check_wildcard_grants,
            [KEY, KEY_POLICY],
            config_schema=ADMIN_SCHEMA,
        ),
    ]
