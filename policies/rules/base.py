"""What every rule is built from: its metadata, the settings a stack hands the pack, waivers,
and helpers that read resource properties the way CrossGuard hands them over.

A rule is a `ResourceValidationPolicy` or `StackValidationPolicy` of pulumi-policy, subclassed
here only to carry its metadata and to apply waivers; the same objects run under
`pulumi preview --policy-pack policies` and under `llmcloud plan`.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyComplianceFramework,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError, _DictProxy, _is_unknown, _ListProxy

# GitHub code scanning's score per severity: one map, next to the SARIF levels.
from infra.reporting.findings import SECURITY_SEVERITY

# --------------------------------------------------------------------------- metadata

CIS_AWS = ("CIS AWS Foundations Benchmark", "3.0.0")
CIS_EKS = ("CIS Amazon EKS Benchmark", "1.7.0")
AWS_FSBP = ("AWS Foundational Security Best Practices", "")


@dataclass(frozen=True)
class Control:
    """One control of a compliance framework a rule maps to."""

    framework: tuple[str, str]
    control: str

    def __str__(self) -> str:
        name, version = self.framework
        return f"{name}{' v' + version if version else ''} {self.control}"

    @property
    def tag(self) -> str:
        """Short form for tags: `CIS-AWS-3.0.0:2.1.1`, `CIS-EKS-1.7.0:5.3.1`, `AWS-FSBP:S3.5`."""
        short = {CIS_AWS: "CIS-AWS", CIS_EKS: "CIS-EKS", AWS_FSBP: "AWS-FSBP"}[self.framework]
        version = self.framework[1]
        return f"{short}{'-' + version if version else ''}:{self.control}"


def cis_aws(control: str) -> Control:
    return Control(CIS_AWS, control)


def cis_eks(control: str) -> Control:
    return Control(CIS_EKS, control)


def fsbp(control: str) -> Control:
    return Control(AWS_FSBP, control)


@dataclass(frozen=True)
class RuleInfo:
    """Id, title, description, severity, remediation and framework controls of one rule."""

    id: str
    title: str
    description: str
    severity: str  # "low" | "medium" | "high" | "critical"
    remediation: str
    controls: tuple[Control, ...] = ()
    kind: str = "resource"  # "resource" | "stack"
    # False for a rule no waiver may silence (`waiver-expired`). Written as a literal: the
    # registry reads it from the source (policies/rules/__init__.py).
    waivable: bool = True

    @property
    def default_enforcement(self) -> str:
        """The rule's own enforcement where nothing configures it (a project that is not an
        llmcloud stack): mandatory for high and critical findings, advisory otherwise."""
        return "mandatory" if self.severity in ("high", "critical") else "advisory"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.title,
            "description": self.description,
            "severity": self.severity,
            "security_severity": SECURITY_SEVERITY[self.severity],
            "remediation": self.remediation,
            "frameworks": [str(c) for c in self.controls],
            "tags": [c.tag for c in self.controls],
            "kind": self.kind,
        }


# --------------------------------------------------------------------------- settings

# DaemonSets that may run privileged or in the host's namespaces: the node agents of EKS and
# of the GPU/EFA/storage stack, which must touch the host to do their job. `namespace/name`
# globs, matched against the DaemonSet's namespace and name.
DEFAULT_PRIVILEGED_ALLOWLIST: tuple[str, ...] = (
    "kube-system/aws-node*",
    "kube-system/kube-proxy*",
    "kube-system/eks-pod-identity-agent*",
    "kube-system/ebs-csi-node*",
    "kube-system/fsx-csi-node*",
    "kube-system/efs-csi-node*",
    "kube-system/nvidia-device-plugin*",
    "kube-system/aws-efa-k8s-device-plugin*",
    "kube-system/efa-device-plugin*",
    "kube-system/neuron-device-plugin*",
    "gpu-operator/*",
    "*/dcgm-exporter*",
    "*/node-exporter*",
    "*/prometheus-node-exporter*",
)


@dataclass(frozen=True)
class Waiver:
    """A finding accepted on purpose: one rule, resources by name or URN glob, until a date."""

    rule: str
    resource: str
    reason: str
    expires: date

    def covers(self, rule_id: str, urn: str | None, *names: str) -> bool:
        """The one waiver matcher (plan, pack and audit): same rule, and the resource glob
        matches the URN, its logical name, or another name of the resource (`names`: the
        audit passes the live ARN and physical name). `*` alone also covers the stack."""
        if rule_id != self.rule:
            return False
        if urn is None and not names:
            return self.resource == "*"
        candidates = [*names]
        if urn is not None:
            candidates += [urn, urn.rsplit("::", 1)[-1]]
        return any(fnmatch.fnmatchcase(c, self.resource) for c in candidates)

    def expired(self, today: date) -> bool:
        """A waiver is good through its expiry date and expired the day after."""
        return self.expires < today


# Findings no stack may take as advice: a pod that can never be placed is a broken deploy, in
# dev as anywhere (the scheduling simulation's findings are mandatory in every format).
ALWAYS_MANDATORY = ("k8s-schedulable",)


@dataclass(frozen=True)
class PolicySettings:
    """What one stack tells the rules. From the stack config for `llmcloud plan`; from the same
    stack config (handed to the pack by the Pulumi CLI) under `pulumi preview`.

    `environment` is None for projects that are not llmcloud stacks: each rule then has its
    own default enforcement and no project-specific requirement (no required tags), unless a
    policy-pack config or an `llmcloud:policies` section says otherwise."""

    environment: str | None = None
    enforcement: str = "mandatory"
    required_tags: tuple[str, ...] = ("team", "cost-center")
    gpu_budget: int | None = None
    waivers: tuple[Waiver, ...] = ()
    key_admin_arns: tuple[str, ...] = ()
    public_ingress_ports: tuple[int, ...] = ()
    privileged_allowlist: tuple[str, ...] = DEFAULT_PRIVILEGED_ALLOWLIST
    eks_versions: tuple[str, ...] = ()
    today: date = field(default_factory=date.today)
    # CrossGuard has no "waived" state: under `pulumi preview` a waived finding is not reported
    # (else a mandatory policy would fail the preview). `llmcloud plan` keeps it and marks it.
    drop_waived: bool = True
    # A CrossGuard policy-pack config (`pulumi preview --policy-pack-config`), reconciled:
    # rule id -> enforcement level, rule id -> its config properties (`args.get_config()`).
    rule_levels: Mapping[str, str] = field(default_factory=dict)
    rule_properties: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # True for a project that is not an llmcloud stack: a rule nothing configures gets its
    # own default enforcement (`RuleInfo.default_enforcement`), not `enforcement`.
    rule_defaults: bool = False

    def level(self, rule_id: str, default: str | None = None) -> str:
        """Enforcement of one rule: the stack's level, except that an expired waiver is
        mandatory outside dev whatever the stack says (waivers are how loosening is held to
        account)."""
        if rule_id == "waiver-expired":
            return "advisory" if self.environment == "dev" else "mandatory"
        if rule_id in ALWAYS_MANDATORY:
            return "mandatory"
        if rule_id in self.rule_levels:
            return self.rule_levels[rule_id]
        if self.rule_defaults and default is not None:
            return default
        return self.enforcement

    def waiver_for(self, rule_id: str, urn: str | None, *names: str) -> Waiver | None:
        """The live (unexpired) waiver covering this finding, if any."""
        for waiver in self.waivers:
            if not waiver.expired(self.today) and waiver.covers(rule_id, urn, *names):
                return waiver
        return None

    def supported_eks_versions(self) -> tuple[str, ...]:
        if self.eks_versions:
            return self.eks_versions
        # the EKS calendar on the day of the check: released and not past extended support
        from infra.config.eks_versions import load_eks_calendar

        return load_eks_calendar().allowed(self.today)

    def with_(self, **changes: Any) -> PolicySettings:
        return replace(self, **changes)

    @classmethod
    def from_stack_config(cls, config: Any, **overrides: Any) -> PolicySettings:
        """Settings of an llmcloud stack (`infra.config.StackConfig`)."""
        policies = config.policies
        values: dict[str, Any] = {
            "environment": config.environment,
            "enforcement": config.policy_enforcement,
            "required_tags": tuple(policies.required_tags),
            "gpu_budget": policies.gpu_budget,
            "waivers": tuple(
                Waiver(w.rule, w.resource, w.reason, w.expires) for w in policies.waivers
            ),
            "key_admin_arns": tuple(config.security.key_admin_arns),
            "public_ingress_ports": tuple(policies.public_ingress_ports),
        }
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_pulumi_config(cls) -> PolicySettings:
        """Settings inside the policy pack under `pulumi preview`/`up`: the CLI hands the
        analyzer the stack's config (PULUMI_CONFIG, PULUMI_PROJECT, PULUMI_STACK), so the pack
        parses the same `llmcloud:` keys `llmcloud plan` reads, waivers included. A stack
        without them gets the hardened defaults."""
        from pulumi.runtime import config as runtime_config

        from infra.config import NAMESPACE, config_from_pulumi

        raw = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
        if not any(str(k).startswith(f"{NAMESPACE}:") for k in raw):
            return cls.for_stack(None)
        from infra.plan.policy_config import foreign_policies_section, settings_of_policies

        section = foreign_policies_section(raw)
        if section is not None:  # a foreign project with only `llmcloud:policies`
            return settings_of_policies(section, source="stack config")
        return cls.from_stack_config(config_from_pulumi())

    @classmethod
    def for_stack(cls, config: Any | None, **overrides: Any) -> PolicySettings:
        """From a StackConfig; for a project without one, each rule's own default
        enforcement and no project-specific requirements (no required tags)."""
        if config is None:
            return cls(**{"required_tags": (), "rule_defaults": True, **overrides})
        return cls.from_stack_config(config, **overrides)


# --------------------------------------------------------------------------- properties


_PLAIN_SCALARS = frozenset({str, int, float, bool, type(None)})


def plain(value: Any) -> Any:
    """Props as plain dicts and lists. Unknown values (preview) stay as pulumi-policy's
    sentinel strings, so a rule can tell "unset" from "set to something not yet known"
    without tripping the proxy; `known()` raises where a rule needs the actual value."""
    kind = type(value)  # fast paths first: this runs on every prop of every resource
    if kind in _PLAIN_SCALARS:
        return value
    if kind is dict:
        return {k: plain(v) for k, v in value.items()}
    if kind is list:
        return [plain(v) for v in value]
    if isinstance(value, _DictProxy | _ListProxy):
        value = value["__target"]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def is_unknown(value: Any) -> bool:
    return _is_unknown(value)


def known(value: Any, *path: str) -> Any:
    """The value, or UnknownValueError (CrossGuard reports "can't run during preview")."""
    if _is_unknown(value):
        raise UnknownValueError(value, list(path))
    return value


def get(props: Any, *path: str | int, default: Any = None) -> Any:
    """`props[a][b][c]`, or `default` where a step is missing, None or not a container."""
    node = props
    for step in path:
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                return default
        elif not isinstance(node, dict) or step not in node:
            return default
        node = node[step]
        if node is None:
            return default
    return node


def truthy(value: Any) -> bool:
    """Booleans as the providers send them: True, "true"; an unknown value counts as set."""
    if _is_unknown(value):
        return True
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def json_document(value: Any, *path: str) -> dict[str, Any] | None:
    """An IAM/S3/KMS policy document given as a JSON string or an object; None if absent or
    not a JSON object."""
    value = known(value, *path)
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            doc = json.loads(value)
        except json.JSONDecodeError:
            return None
        return doc if isinstance(doc, dict) else None
    return None


def statements(doc: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not doc:
        return []
    return [s for s in as_list(doc.get("Statement")) if isinstance(s, dict)]


def resource_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


# --------------------------------------------------------------------------- policies

Reporter = Callable[[str, str | None], None]
ResourceCheck = Callable[[ResourceValidationArgs, dict[str, Any], Reporter, PolicySettings], None]
StackCheck = Callable[[StackValidationArgs, Reporter, PolicySettings], None]


def _framework(info: RuleInfo) -> PolicyComplianceFramework | None:
    if not info.controls:
        return None
    first = info.controls[0]
    name, version = first.framework
    return PolicyComplianceFramework(
        name=name, version=version or None, reference=first.control, specification=str(first)
    )


def _policy_kwargs(
    info: RuleInfo, settings: PolicySettings, config_schema: PolicyConfigSchema | None
) -> dict[str, Any]:
    return {
        "name": info.id,
        "description": info.description,
        "enforcement_level": EnforcementLevel(settings.level(info.id, info.default_enforcement)),
        "config_schema": config_schema,
        "display_name": info.title,
        "severity": Severity(info.severity),
        "framework": _framework(info),
        "tags": [c.tag for c in info.controls] or None,
        "remediation_steps": info.remediation,
    }


class RuleResourcePolicy(ResourceValidationPolicy):
    """A resource rule: runs `check` on resources of `resource_types` with plain props."""

    def __init__(
        self,
        info: RuleInfo,
        settings: PolicySettings,
        check: ResourceCheck,
        resource_types: Iterable[str] | None,
        config_schema: PolicyConfigSchema | None = None,
        matches: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__(**_policy_kwargs(info, settings, config_schema))
        self.info = info
        self.settings = settings
        self.resource_types = frozenset(resource_types) if resource_types is not None else None
        self._matches = matches
        self._check = check

    def applies_to(self, resource_type: str) -> bool:
        if self.resource_types is not None and resource_type in self.resource_types:
            return True
        return self._matches is not None and self._matches(resource_type)

    def validate(self, args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if not self.applies_to(args.resource_type):
            return None
        settings = self.settings

        def report(message: str, urn: str | None = None) -> None:
            if settings.drop_waived and settings.waiver_for(self.name, args.urn):
                return
            report_violation(message, None)

        self._check(args, plain(args.props), report, settings)
        return None


class RuleStackPolicy(StackValidationPolicy):
    """A stack rule: sees every resource at once (bucket and its encryption resource, pods and
    NetworkPolicies, all node groups against the GPU budget).

    `resource_types`, where given, are the types the rule reports on (the bucket types for the
    S3 rules): `applies_to` answers for them, and `llmcloud audit` runs the rule when it reads
    resources of those types from AWS."""

    def __init__(
        self,
        info: RuleInfo,
        settings: PolicySettings,
        check: StackCheck,
        config_schema: PolicyConfigSchema | None = None,
        resource_types: Iterable[str] | None = None,
    ) -> None:
        super().__init__(**_policy_kwargs(info, settings, config_schema))
        self.info = info
        self.settings = settings
        self.resource_types = frozenset(resource_types) if resource_types is not None else None
        self._check = check

    def applies_to(self, resource_type: str) -> bool:
        return self.resource_types is not None and resource_type in self.resource_types

    def validate(self, args: StackValidationArgs, report_violation: ReportViolation) -> None:
        settings = self.settings

        def report(message: str, urn: str | None = None) -> None:
            if settings.drop_waived and settings.waiver_for(self.name, urn):
                return
            report_violation(message, urn)

        self._check(args, report, settings)
        return None


# --------------------------------------------------------------------------- stack helpers


class StackView:
    """The stack's resources indexed for cross-resource rules, props made plain once.

    Built once per policy run (`of` shares it between the stack rules): resources by type and
    position, and per candidate list the identifying values rules link by, so no rule scans
    the whole stack per resource."""

    def __init__(self, resources: list[Any], props: dict[str, dict[str, Any]]) -> None:
        self.resources = resources
        self.props = props
        self._position = {id(r): i for i, r in enumerate(resources)}
        self._by_type: dict[str, list[Any]] = {}
        for r in resources:
            self._by_type.setdefault(r.resource_type, []).append(r)
        # id(candidates) -> (candidates, urn -> positions, (keys, value -> positions))
        self._links: dict[int, tuple[list[Any], dict[str, list[int]], dict[Any, Any]]] = {}

    @classmethod
    def of(cls, args: StackValidationArgs) -> StackView:
        """One view per args object (the policy runner hands every stack rule of one run the
        same view)."""
        view = getattr(args, "_llmcloud_view", None)
        if view is None:
            view = cls.build(args.resources)
            args._llmcloud_view = view  # type: ignore[attr-defined]
        return view

    @classmethod
    def build(cls, resources: Iterable[Any]) -> StackView:
        resources = list(resources)
        return cls(resources, {r.urn: plain(r.props) for r in resources})

    def of_type(self, *types: str) -> Iterator[Any]:
        """The resources of `types`, in stack order."""
        if len(types) == 1:
            return iter(self._by_type.get(types[0], ()))
        found = [r for t in set(types) for r in self._by_type.get(t, ())]
        found.sort(key=lambda r: self._position[id(r)])
        return iter(found)

    def _link_index(
        self, candidates: list[Any], keys: tuple[str, ...]
    ) -> tuple[dict[str, list[int]], dict[Any, list[int]]]:
        entry = self._links.get(id(candidates))
        if entry is None or entry[0] is not candidates or entry[1]["n"] != len(candidates):
            by_urn: dict[str, list[int]] = {}
            for i, c in enumerate(candidates):
                by_urn.setdefault(c.urn, []).append(i)
            entry = (candidates, {"n": len(candidates), "urn": by_urn}, {})
            self._links[id(candidates)] = entry
        by_value = entry[2].get(keys)
        if by_value is None:
            by_value = {}
            for i, c in enumerate(candidates):
                props = self.props[c.urn]
                for k in (*keys, "id"):
                    v = props.get(k)
                    if isinstance(v, str):
                        positions = by_value.setdefault(v, [])
                        if not positions or positions[-1] != i:
                            positions.append(i)
            entry[2][keys] = by_value
        return entry[1]["urn"], by_value

    def linked(self, child: Any, prop: str, candidates: list[Any], *keys: str) -> list[Any]:
        """The resources among `candidates` that `child.props[prop]` refers to.

        First the property dependencies CrossGuard hands over (exact, and known even in a
        preview where the referenced id is not); then the value, compared with each
        candidate's identifying props `keys` (as on `pulumi up` or offline); then, if the
        child depends on exactly one candidate, that one."""
        by_urn, by_value = self._link_index(candidates, keys)

        def among(urns: Iterable[str]) -> list[Any]:
            positions = sorted({i for u in urns for i in by_urn.get(u, ())})
            return [candidates[i] for i in positions]

        deps = (getattr(child, "property_dependencies", None) or {}).get(prop)
        if deps:
            found = among({d.urn for d in deps})
            if found:
                return found
        values = {v for v in as_list(self.props[child.urn].get(prop)) if isinstance(v, str)}
        values = {v for v in values if not is_unknown(v)}
        if values:
            positions = sorted({i for v in values for i in by_value.get(v, ())})
            if positions:
                return [candidates[i] for i in positions]
        found = among({d.urn for d in getattr(child, "dependencies", []) or []})
        return found if len(found) == 1 else []
