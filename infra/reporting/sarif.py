"""SARIF 2.1.0 for GitHub code scanning, shared by `llmcloud plan` and `llmcloud audit`.

Both report findings under the policy pack's rule ids, located in the stack file (what a
user edits to fix or waive a finding), with the resource (URN or live ARN) as the logical
location, so code scanning tracks one alert per rule and resource across runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from typing import Any

from infra.reporting.findings import SECURITY_SEVERITY, Finding, sarif_level

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/llmcloud/llmcloud"


def rule_descriptor(rule_id: str, meta: dict[str, Any]) -> dict[str, Any]:
    """A `reportingDescriptor` from the policy pack's rule metadata."""
    description = meta.get("description", rule_id)
    remediation = meta.get("remediation", "")
    frameworks = list(meta.get("frameworks", []))
    severity = meta.get("severity", "medium")
    help_md = f"**{meta.get('name', rule_id)}**\n\n{description}\n\n**Remediation:** {remediation}"
    if frameworks:
        help_md += "\n\n**Frameworks:** " + "; ".join(frameworks)
    return {
        "id": rule_id,
        "name": "".join(part.capitalize() for part in rule_id.split("-")),
        "shortDescription": {"text": meta.get("name", rule_id)},
        "fullDescription": {"text": description},
        "help": {"text": remediation or description, "markdown": help_md},
        "defaultConfiguration": {"level": sarif_level(severity)},
        "properties": {
            "tags": ["security", *meta.get("tags", [])],
            "precision": "very-high",
            "security-severity": SECURITY_SEVERITY.get(severity, "5.5"),
        },
    }


def document(
    *,
    automation_id: str,
    location: str,
    findings: Iterable[Finding],
    rules: Iterable[dict[str, Any]] = (),
    version: str = "0.0.0",
    stack_name: str = "",
    line: Callable[[Finding], int] = lambda finding: 1,
) -> str:
    """The SARIF log: every rule of the metadata (plus any unknown id a finding uses) and one
    result per finding. The logical location is the live ARN (audit) or the URN (plan), or
    `stack_name` for a stack-level finding; `line` gives each finding's line in `location`."""

    def qualified(f: Finding) -> str:
        return f.resource or f.urn or stack_name

    findings = sorted(findings, key=lambda f: (f.policy, qualified(f), f.message))
    metadata = {r["id"]: r for r in rules}
    ids = list(metadata) + sorted({f.policy for f in findings} - set(metadata))
    results = []
    for f in findings:
        result: dict[str, Any] = {
            "ruleId": f.policy,
            "ruleIndex": ids.index(f.policy),
            "level": sarif_level(f.severity, f.enforcement),
            "message": {"text": f"{f.label}: {f.message}"},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": location},
                        "region": {"startLine": line(f)},
                    },
                    "logicalLocations": [
                        {
                            "name": f.label,
                            "fullyQualifiedName": qualified(f),
                            "kind": "resource" if (f.urn or f.resource) else "module",
                        }
                    ],
                }
            ],
            "partialFingerprints": {
                "llmcloudFinding/v1": hashlib.sha256(
                    f"{f.policy}|{qualified(f)}".encode()
                ).hexdigest()
            },
            "properties": {"enforcement": f.enforcement, "severity": f.severity},
        }
        if f.suppression is not None:
            result["suppressions"] = [
                {"kind": "external", "status": "accepted", "justification": f.suppression}
            ]
        results.append(result)
    doc = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "llmcloud",
                        "informationUri": INFORMATION_URI,
                        "semanticVersion": version,
                        "rules": [rule_descriptor(i, metadata.get(i, {})) for i in ids],
                    }
                },
                "automationDetails": {"id": automation_id},
                "invocations": [{"executionSuccessful": True}],
                "results": results,
            }
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def llmcloud_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llmcloud")
    except PackageNotFoundError:
        return "0.0.0"
