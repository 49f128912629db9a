"""SARIF 2.1.0 for GitHub code scanning, shared by `llmcloud plan` and `llmcloud audit`.

Both report findings under the policy pack's rule ids, located in the stack file (what a
user edits to fix or waive a finding), with the resource (URN or live ARN) as the logical
location, so code scanning tracks one alert per rule and resource across runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/llmcloud/llmcloud"
# GitHub ranks security alerts by this score: low < 4, medium < 7, high < 9, critical.
SECURITY_SEVERITY = {"low": "3.0", "medium": "5.5", "high": "8.0", "critical": "9.5"}


@dataclass(frozen=True)
class Finding:
    """One result, as both commands produce it."""

    rule: str
    level: str  # "error" | "warning" | "note"
    text: str
    name: str  # short resource name
    fully_qualified_name: str  # URN or ARN
    kind: str = "resource"  # or "module" for stack-level findings
    line: int = 1
    properties: dict[str, Any] | None = None
    suppression: str | None = None  # the waiver's justification, when waived


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
        "defaultConfiguration": {
            "level": "error" if severity in ("high", "critical") else "warning"
        },
        "properties": {
            "tags": ["security", *meta.get("tags", [])],
            "precision": "very-high",
            "security-severity": meta.get(
                "security_severity", SECURITY_SEVERITY.get(severity, "5.5")
            ),
        },
    }


def document(
    *,
    automation_id: str,
    location: str,
    findings: Iterable[Finding],
    rules: Iterable[dict[str, Any]] = (),
    version: str = "0.0.0",
) -> str:
    """The SARIF log: every rule of the metadata (plus any unknown id a finding uses) and one
    result per finding."""
    findings = sorted(findings, key=lambda f: (f.rule, f.fully_qualified_name, f.text))
    metadata = {r["id"]: r for r in rules}
    ids = list(metadata) + sorted({f.rule for f in findings} - set(metadata))
    results = []
    for f in findings:
        result: dict[str, Any] = {
            "ruleId": f.rule,
            "ruleIndex": ids.index(f.rule),
            "level": f.level,
            "message": {"text": f"{f.name}: {f.text}"},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": location},
                        "region": {"startLine": f.line},
                    },
                    "logicalLocations": [
                        {
                            "name": f.name,
                            "fullyQualifiedName": f.fully_qualified_name,
                            "kind": f.kind,
                        }
                    ],
                }
            ],
            "partialFingerprints": {
                "llmcloudFinding/v1": hashlib.sha256(
                    f"{f.rule}|{f.fully_qualified_name}".encode()
                ).hexdigest()
            },
        }
        if f.properties:
            result["properties"] = dict(f.properties)
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
