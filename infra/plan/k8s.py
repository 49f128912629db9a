"""Kubernetes objects of a plan, as manifests, checked against the upstream schemas.

The plan records each `kubernetes:*` resource's inputs, which are the object itself
(apiVersion, kind, metadata, spec, ...). Helm releases and custom resources without an
upstream schema are not core objects and are skipped by validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.plan.engine import SECRET_PLACEHOLDER, Plan, Resource

# Resource types that are not Kubernetes objects themselves.
_NOT_OBJECTS = ("kubernetes:helm.sh/", "pulumi:providers:kubernetes", "kubernetes:yaml")


@dataclass(frozen=True)
class Manifest:
    urn: str
    object: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.object.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.object.get("metadata") or {}).get("name", ""))

    @property
    def namespace(self) -> str | None:
        return (self.object.get("metadata") or {}).get("namespace")


def is_kubernetes_object(resource: Resource) -> bool:
    return resource.type.startswith("kubernetes:") and not resource.type.startswith(_NOT_OBJECTS)


def manifests(plan: Plan) -> list[Manifest]:
    """Every Kubernetes object the plan declares, in manifest form."""
    out = []
    for r in plan.resources:
        if not is_kubernetes_object(r):
            continue
        obj = dict(r.inputs)
        group_version, kind = r.type.split(":", 1)[1].rsplit(":", 1)
        obj.setdefault("apiVersion", group_version.removeprefix("core/"))
        obj.setdefault("kind", kind)
        if obj.get("apiVersion") == "apiextensions.k8s.io/v1" and kind == "CustomResource":
            continue
        metadata = dict(obj.get("metadata") or {})
        metadata.setdefault("name", r.name)
        obj["metadata"] = metadata
        out.append(Manifest(urn=r.urn, object=obj))
    return out


def validate_manifests(items: list[Manifest], kubernetes_version: str) -> list[str]:
    """Errors (`urn: message`) of objects that do not match the upstream schemas of the
    given Kubernetes minor version (`1.33`). Objects of kinds without an upstream schema
    (custom resources) are skipped."""
    import kubernetes_validate

    version = (
        kubernetes_version if kubernetes_version.count(".") == 2 else f"{kubernetes_version}.0"
    )
    errors = []
    for item in items:
        obj = dict(item.object)
        for key in ("data", "stringData"):
            if obj.get(key) == SECRET_PLACEHOLDER:  # the SDK marks a Secret's whole map secret
                obj[key] = {}
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            continue
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            errors.append(f"{item.urn}: {path}: {e.message}")
    return errors
