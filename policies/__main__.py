"""The policy pack's entry point, run by the Pulumi CLI (`--policy-pack policies`).

This is the only module that builds the `PolicyPack`: its constructor starts the analyzer's
gRPC server and blocks. The CLI runs this file with the pack directory on `sys.path`; the
repository root is added so the rules import as `policies.rules` and can read the GPU catalog
and the stack config model from `infra`, exactly as under `llmcloud plan`.

Enforcement: each rule's level comes from the stack config (advisory in dev, mandatory in
staging and prod, `policies.enforcement` to override); a `--policy-pack-config` file
(policies/config/<env>.json) overrides it per rule or for `all`. Waivers and the GPU budget
come from the stack config too.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from infra.config import ConfigError  # noqa: E402
from policies.rules import build_policies  # noqa: E402
from policies.rules.base import PolicySettings  # noqa: E402

try:
    settings = PolicySettings.from_pulumi_config()
except ConfigError as error:
    print(f"llmcloud policy pack: {error}", file=sys.stderr)
    sys.exit(1)

PolicyPack(
    name="llmcloud",
    description="Security, cost and workload rules of the llmcloud LLM platform on AWS.",
    policies=build_policies(settings),
    enforcement_level=EnforcementLevel(settings.enforcement),
)
