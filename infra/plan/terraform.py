"""The plan as Terraform plan JSON (`terraform show -json`), for Terraform scanners.

checkov, trivy and KICS read Terraform plan JSON and have no Pulumi support; pulumi-aws and
pulumi-random are bridged from the Terraform providers, so each of their resources is a
Terraform resource under another name. This module writes the shape Terraform's JSON output
format documents (developer.hashicorp.com/terraform/internals/json-format): `planned_values`
(what every resource will look like, as far as the plan knows), `resource_changes` (all
creates: an offline plan has no prior state) and `configuration` (each resource's
expressions, with `references` to the resources its inputs come from, which is what the
scanners' graph checks follow: bucket <-> public access block, VPC <-> flow log).

Names are pulumi-aws's own: the resource type from its bridge metadata's token mapping and
each property's Terraform name from its renamed properties (infra/data/
pulumi-aws-bridge.json, a dated extract). A name the extract does not cover is derived the
way the bridge derives names (camelCase -> snake_case) and the report says which ones.
Shapes follow the SDK's declarations: a nested object the SDK types as one object is a
Terraform block with at most one item, so it becomes a list of one (the bridge flattens
those); maps (tags) stay maps.

What the plan cannot know, it leaves unknown as Terraform would on a first apply: an input
whose value is another resource's computed output (an id, an ARN) is absent from `after`,
`true` in `after_unknown`, and a reference in `configuration`. Secrets are never written:
they are marked sensitive. Kubernetes objects and component resources have no Terraform
equivalent here (scan the Kubernetes objects with `--framework kubernetes`); they are
listed under the top-level `llmcloud` key, which Terraform's format lets readers ignore.
"""

from __future__ import annotations

import collections.abc
import json
import re
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from infra.plan.engine import SECRET_PLACEHOLDER, Plan, Resource

BRIDGE_FILE = Path(__file__).resolve().parent.parent / "data" / "pulumi-aws-bridge.json"
# The JSON output format's version this writer follows (Terraform's docs: minor versions
# only add properties; 1.2 is the current one), and a Terraform release whose plan JSON has
# every key written here (`complete` and `applyable` first appeared in 1.8:
# hashicorp/terraform-json#131).
FORMAT_VERSION = "1.2"
TERRAFORM_VERSION = "1.9.0"
PROVIDERS = {  # Pulumi package -> the Terraform provider it is bridged from
    "aws": "registry.terraform.io/hashicorp/aws",
    "random": "registry.terraform.io/hashicorp/random",
}
_NAME_OK = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Bridge:
    """pulumi-aws's names: token -> Terraform type, token -> {pulumiName: tf_name}.

    The extract is keyed by the metadata's (v5) tokens; `v7_resources` and `v7_prefixes`
    map today's S3 tokens onto them (v7 renamed BucketV2 to Bucket and each Bucket*V2 to
    Bucket*, per its upgrade guide).
    """

    resources: dict[str, str]
    renamed: dict[str, dict[str, str]]
    verified: frozenset[str]  # tokens known to have no renamed property
    v7_resources: dict[str, str] = field(default_factory=dict)
    v7_prefixes: dict[str, str] = field(default_factory=dict)

    def _metadata_tokens(self, token: str) -> list[str]:
        """The metadata's tokens for `token`: itself, or for a v7 S3 type the v5 tokens it
        was renamed from (most specific first)."""
        if token in self.v7_resources:
            return [self.v7_resources[token]]
        package, module, name = [*token.split(":"), "", ""][:3]
        if not module.startswith("s3/") or not name[:1].isupper() or module[3:] != name:
            return [token]
        candidates = []
        for prefix in sorted(self.v7_prefixes, key=len, reverse=True):
            if name.startswith(prefix):
                old = self.v7_prefixes[prefix] + name[len(prefix) :]
                candidates.append(f"{package}:s3/{old}:{old}")
        return [*candidates, token]  # the v5 token of the same name is another type

    def _known(self, token: str) -> str | None:
        for candidate in self._metadata_tokens(token):
            if candidate in self.renamed or candidate in self.verified:
                return candidate
        return None

    def tf_type(self, token: str) -> tuple[str, bool]:
        """The Terraform type of a resource token and whether the metadata gave it."""
        for candidate in self._metadata_tokens(token):
            if candidate in self.resources:
                return self.resources[candidate], True
        package, module, name = token.split(":")
        if package == "random":  # RandomPassword -> random_password
            return f"random_{_snake(name.removeprefix('Random'))}", False
        return f"{package}_{module.split('/')[0]}_{_snake(name)}", False

    def tf_name(self, token: str | None, name: str) -> tuple[str, bool]:
        """The Terraform name of a property of `token` and whether the metadata gave it."""
        known = self._known(token) if token else None
        if known is not None and name in self.renamed.get(known, {}):
            return self.renamed[known][name], True
        return _snake(name), known is not None


@cache
def bridge() -> Bridge:
    data = json.loads(BRIDGE_FILE.read_text())
    return Bridge(
        resources=data["resources"],
        renamed=data["renamedProperties"],
        verified=frozenset(data["noRenamedProperties"]),
        v7_resources=data["v7"]["resourceTokens"],
        v7_prefixes=data["v7"]["nestedTypePrefixes"],
    )


def _snake(name: str) -> str:
    out = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    out = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", out)
    return out.lower()


# ------------------------------------------------------------ the SDK's declared shapes


def _type_token(cls: type) -> str | None:
    """`pulumi_aws.s3._inputs.BucketLoggingArgs` -> `aws:s3/BucketLogging:BucketLogging`."""
    parts = cls.__module__.split(".")
    if len(parts) < 2 or parts[0] != "pulumi_aws":
        return None
    module = parts[1].rstrip("_")  # `lambda_` is the `lambda` module
    name = cls.__name__.removesuffix("Args")
    return f"aws:{module}/{name}:{name}"


def _field_kind(declared: Any) -> tuple[str, type | None]:
    """("object", cls) | ("list", cls) | ("value", None) for a declared input annotation:
    "object" is one nested input type (a Terraform block of at most one item, which the
    bridge flattens), "list" a list of them."""
    from pulumi import _types as pulumi_types

    from infra.plan import schema

    for candidate in schema._candidates(declared):
        origin = typing.get_origin(candidate)
        if isinstance(candidate, type) and pulumi_types.is_input_type(candidate):
            return "object", candidate
        if origin in (list, collections.abc.Sequence):
            (inner,) = typing.get_args(candidate) or (Any,)
            for item in schema._candidates(inner):
                if isinstance(item, type) and pulumi_types.is_input_type(item):
                    return "list", item
            return "value", None
    return "value", None


@cache
def _fields_of(cls: type) -> dict[str, Any]:
    from pulumi import _types as pulumi_types

    return pulumi_types.input_type_types(cls)


# ------------------------------------------------------------------------- conversion


@dataclass
class _Converted:
    address: str
    type: str
    name: str
    provider: str
    values: dict[str, Any]
    unknown: dict[str, Any]
    sensitive: dict[str, Any]
    expressions: dict[str, Any]


@dataclass
class _Notes:
    derived_types: set[str] = field(default_factory=set)
    derived_properties: set[str] = field(default_factory=set)
    skipped: dict[str, int] = field(default_factory=dict)


class _Converter:
    def __init__(self, plan: Plan):
        self.plan = plan
        self.bridge = bridge()
        self.notes = _Notes()
        self.addresses: dict[str, str] = {}  # URN -> Terraform address
        self.records: dict[str, Resource] = {}
        self._by_value: dict[str, dict[str, tuple[str, bool]]] = {}
        taken: set[str] = set()
        for r in plan.resources:
            package = r.type.split(":", 1)[0]
            if not r.custom or package not in PROVIDERS or r.type.startswith("pulumi:"):
                if r.type != "pulumi:pulumi:Stack":
                    self.notes.skipped[r.type] = self.notes.skipped.get(r.type, 0) + 1
                continue
            tf_type, exact = self.bridge.tf_type(r.type)
            if not exact:
                self.notes.derived_types.add(f"{r.type} -> {tf_type}")
            address = f"{tf_type}.{self._unique_name(r, tf_type, taken)}"
            taken.add(address)
            self.addresses[r.urn] = address
            self.records[r.urn] = r

    def _unique_name(self, r: Resource, tf_type: str, taken: set[str]) -> str:
        name = _NAME_OK.sub("_", r.name)
        if not name[:1].isalpha() and name[:1] != "_":
            name = f"_{name}"
        if f"{tf_type}.{name}" not in taken:
            return name
        component = self.plan.component_of(r)
        if component is not None:
            qualified = f"{_NAME_OK.sub('_', component.name)}__{name}"
            if f"{tf_type}.{qualified}" not in taken:
                return qualified
            name = qualified
        n = 2
        while f"{tf_type}.{name}_{n}" in taken:
            n += 1
        return f"{name}_{n}"

    # Where a value came from: the dependencies' outputs, by value.
    def _sources(self, r: Resource, prop: str) -> list[tuple[str, dict[str, tuple[str, bool]]]]:
        """[(address, {value: (tf attribute, known at plan)})] of the resources `prop`
        depends on."""
        found = [
            (self.addresses[urn], self._outputs_by_value(urn))
            for urn in (r.property_dependencies or {}).get(prop, ())
            if urn in self.addresses
        ]
        return sorted(found, key=lambda source: source[0])  # the SDK's set order varies

    def _outputs_by_value(self, urn: str) -> dict[str, tuple[str, bool]]:
        """{output value: (tf attribute, known at plan)} of one resource, once per resource
        (every input that depends on it asks). An id, or an output the resource computes,
        is unknown until apply; an output that echoes one of its inputs is known (Pulumi
        previews echo inputs)."""
        if urn in self._by_value:
            return self._by_value[urn]
        dep = self.records[urn]
        by_value: dict[str, tuple[str, bool]] = {}
        for key, value in (dep.outputs or {}).items():
            if isinstance(value, str) and value and value not in by_value:
                attr, _ = self.bridge.tf_name(dep.type, key)
                by_value[value] = (attr, dep.inputs.get(key) == value)
        if dep.id:
            by_value[dep.id] = ("id", False)  # an id is computed, whatever it echoes
        self._by_value[urn] = by_value
        return by_value

    def convert(self, r: Resource) -> _Converted:
        from infra.plan import schema

        address = self.addresses[r.urn]
        tf_type, name = address.split(".", 1)
        values, unknown, sensitive, expressions = self._object(
            r.inputs, r.type, schema.input_fields(r.type), lambda prop: self._sources(r, prop)
        )
        for key in sorted(schema.resource_output_names(r.type)):
            tf_key, _ = self.bridge.tf_name(r.type, key)
            if tf_key not in values and tf_key not in unknown:
                unknown[tf_key] = True  # computed by the provider at apply
        unknown.setdefault("id", True)
        provider = PROVIDERS[r.type.split(":", 1)[0]]
        return _Converted(address, tf_type, name, provider, values, unknown, sensitive, expressions)

    def _value(
        self, value: Any, declared: Any, sources: list, where: str
    ) -> tuple[Any, Any, Any, Any]:
        """(after value or _UNKNOWN, after_unknown, after_sensitive, configuration
        expression) of one input value, shaped as the SDK declares it."""
        if value == SECRET_PLACEHOLDER:
            return _UNKNOWN, False, True, {}
        kind, cls = _field_kind(declared) if declared is not None else ("value", None)
        if kind in ("object", "list") and isinstance(value, dict | list):
            items = [value] if isinstance(value, dict) else value
            out, unk, sens, expr = [], [], [], []
            for item in items:
                if not isinstance(item, dict):
                    out.append(item)
                    unk.append(False)
                    sens.append(False)
                    expr.append({})
                    continue
                o, u, s, e = self._object(
                    item, _type_token(cls), _fields_of(cls), lambda _: sources, where
                )
                out.append(o)
                unk.append(u)
                sens.append(s)
                expr.append(e)
            return out, _trim(unk), _trim(sens), expr
        refs = list(_references(value, sources))
        found = _exact_source(value, sources)
        if found is not None:
            reference, known = found
            expression = {"references": [reference, reference.rsplit(".", 1)[0]]}
            return (value if known else _UNKNOWN), not known, False, expression
        if isinstance(value, list) and sources:
            exact = [_exact_source(item, sources) for item in value]
            if any(x is not None and not x[1] for x in exact):
                # a list built from computed ids (subnet_ids = [aws_subnet.a.id, ...])
                refs = [r for x in exact if x is not None for r in (x[0], x[0].rsplit(".", 1)[0])]
                return _UNKNOWN, True, False, {"references": refs}
        expression = {"references": refs} if refs else {"constant_value": value}
        return value, False, False, expression

    def _object(
        self,
        obj: dict,
        token: str | None,
        fields: dict[str, Any],
        sources_of: Callable[[str], list],
        where: str | None = None,
    ) -> tuple[dict, dict, dict, dict]:
        """(values, after_unknown, after_sensitive, expressions) of a resource's inputs or of
        one nested block, keyed by Terraform names; `sources_of(prop)` is what `prop`
        depends on (recorded per top-level property, inherited by nested blocks)."""
        where = where or token
        out: dict[str, Any] = {}
        unk: dict[str, Any] = {}
        sens: dict[str, Any] = {}
        expr: dict[str, Any] = {}
        for key, value in obj.items():
            if key.startswith("__") or value is None:
                continue
            tf_key, exact = self.bridge.tf_name(token, key)
            if not exact:
                self.notes.derived_properties.add(f"{where}.{key} -> {tf_key}")
            v, u, s, e = self._value(value, fields.get(key), sources_of(key), f"{where}.{key}")
            if v is not _UNKNOWN:
                out[tf_key] = v
            if u:
                unk[tf_key] = u
            if s:
                sens[tf_key] = s
            if e is not None:
                expr[tf_key] = e
        return out, unk, sens, expr


_UNKNOWN = object()


def _trim(flags: list[Any]) -> Any:
    """A list of per-item flags, or False when no item has any."""
    return flags if any(flags) else False


def _exact_source(value: Any, sources: list) -> tuple[str, bool] | None:
    """("address.attribute", known) of the output `value` is, if it is one. A value several
    dependencies carry (a VPC's id is also its security groups' vpc_id input) is the one a
    resource computes (its id first), never an echo, whatever order the SDK's dependency
    set came in."""
    if not isinstance(value, str):
        return None
    found = [
        (known, attr != "id", address, attr)
        for address, by_value in sources
        if value in by_value
        for attr, known in [by_value[value]]
    ]
    if not found:
        return None
    known, _, address, attr = min(found)
    return f"{address}.{attr}", known


def _references(value: Any, sources: list) -> Iterator[str]:
    """The resources whose outputs appear inside `value` (a policy document naming an ARN):
    referenced, while the value itself stays known so scanners can read it."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    for address, by_value in sources:
        for output, (attr, _) in by_value.items():
            if len(output) >= 8 and output in text:
                yield f"{address}.{attr}"
                yield address
                break


# ---------------------------------------------------------------------------- output


def terraform_plan(plan: Plan) -> dict[str, Any]:
    """The plan in Terraform's plan JSON shape (`terraform show -json PLANFILE`)."""
    converter = _Converter(plan)
    planned: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    configured: list[dict[str, Any]] = []
    for urn in converter.addresses:
        c = converter.convert(converter.records[urn])
        base = {"address": c.address, "mode": "managed", "type": c.type, "name": c.name}
        planned.append(
            {
                **base,
                "provider_name": c.provider,
                "schema_version": 0,
                "values": c.values,
                "sensitive_values": c.sensitive,
            }
        )
        changes.append(
            {
                **base,
                "provider_name": c.provider,
                "change": {
                    "actions": ["create"],
                    "before": None,
                    "after": c.values,
                    "after_unknown": c.unknown,
                    "before_sensitive": False,
                    "after_sensitive": c.sensitive,
                },
            }
        )
        configured.append(
            {
                **base,
                "provider_config_key": c.type.split("_", 1)[0],
                "expressions": c.expressions,
                "schema_version": 0,
            }
        )
    providers = {}
    for package, full_name in PROVIDERS.items():
        if any(c["provider_name"] == full_name for c in planned):
            expressions = {}
            if package == "aws" and plan.region:
                expressions["region"] = {"constant_value": plan.region}
            providers[package] = {
                "name": package,
                "full_name": full_name,
                "expressions": expressions,
            }
    notes = converter.notes
    return {
        "format_version": FORMAT_VERSION,
        "terraform_version": TERRAFORM_VERSION,
        "planned_values": {"root_module": {"resources": planned}},
        "resource_changes": changes,
        "configuration": {"provider_config": providers, "root_module": {"resources": configured}},
        "applyable": True,
        "complete": True,
        "errored": False,
        "llmcloud": {
            "project": plan.project,
            "stack": plan.stack,
            "written_by": "llmcloud plan --format terraform-plan (offline: no prior state)",
            "not_converted": dict(sorted(notes.skipped.items())),
            "derived_types": sorted(notes.derived_types),
            "derived_properties": sorted(notes.derived_properties),
        },
    }


def render_terraform_plan(plan: Plan) -> str:
    return json.dumps(terraform_plan(plan), indent=2, default=str) + "\n"
