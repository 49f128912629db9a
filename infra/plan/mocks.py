"""Pulumi mocks that answer like AWS would, so the real program runs offline.

Every resource gets a synthetic id and ARN and echoes its inputs back as outputs; every
output property its SDK class declares that the inputs do not give (a cluster's endpoint, a
Service's `status.loadBalancer.ingress[0].hostname`, a component's `kubeconfig`) is
synthesized from the declared output type (`infra.plan.schema`): nested objects in full,
lists with one plausible element (one per zone for subnet and zone lists), strings shaped by
their name (ids with the EC2 prefix of the resource they name, ARNs, DNS names, endpoints
and IPs in the stack's region). Remote components (awsx, pulumi-eks) get the resources their
outputs reference as synthetic children the SDK can resolve, never recorded as planned.
Auto-named resources get a stable physical name (`<logical name>-<7 hex>`), as Pulumi's
auto-naming would. Every invoke answers with its declared result type; the facts (zones,
partition, region) come from the region's catalog entry, everything else is synthesized and
counted in `synthesized_lookups`. Everything is derived from the URN, so two plans of the
same stack are byte-identical.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections import Counter
from typing import Any

import pulumi
from pulumi.runtime import rpc

from infra.catalog import load_catalog
from infra.plan.schema import (
    Shape,
    input_fields,
    invoke_result_shapes,
    nested_input_fields,
    object_fields,
    resource_class,
    resource_output_names,
    resource_output_shapes,
    resource_token,
)

MOCK_ACCOUNT_ID = "123456789012"

# Resources whose auto-named physical name lives in a property other than `name`.
_AUTONAME_PROPERTY = {
    "aws:s3/bucket:Bucket": "bucket",
    "aws:eks/cluster:Cluster": "name",
    "aws:eks/nodeGroup:NodeGroup": "nodeGroupName",
}

# Id prefixes of the EC2-style resources, so ids read like AWS's.
_ID_PREFIX = {
    "aws:ec2/vpc:Vpc": "vpc-",
    "aws:ec2/subnet:Subnet": "subnet-",
    "aws:ec2/internetGateway:InternetGateway": "igw-",
    "aws:ec2/natGateway:NatGateway": "nat-",
    "aws:ec2/eip:Eip": "eipalloc-",
    "aws:ec2/routeTable:RouteTable": "rtb-",
    "aws:ec2/securityGroup:SecurityGroup": "sg-",
    "aws:ec2/launchTemplate:LaunchTemplate": "lt-",
    "aws:ec2/vpcEndpoint:VpcEndpoint": "vpce-",
    "aws:ec2/flowLog:FlowLog": "fl-",
    "aws:ec2/placementGroup:PlacementGroup": "pg-",
    "aws:fsx/lustreFileSystem:LustreFileSystem": "fs-",
    "aws:fsx/dataRepositoryAssociation:DataRepositoryAssociation": "dra-",
    "aws:ec2/instance:Instance": "i-",
    "aws:ec2/ami:Ami": "ami-",
    "aws:ec2/networkInterface:NetworkInterface": "eni-",
    "aws:ec2/networkAcl:NetworkAcl": "acl-",
    "aws:ec2/vpcDhcpOptions:VpcDhcpOptions": "dopt-",
    "aws:ec2/transitGateway:TransitGateway": "tgw-",
    "aws:ec2/volume:Volume": "vol-",
    "aws:ec2/keyPair:KeyPair": "key-",
    "aws:kms/key:Key": "",
}
# A field `<noun>Id` / `<noun>Ids` names a resource of this prefix (`clusterSecurityGroupId`
# -> "sg-"); the nouns are the class names above, plus the fields AWS names otherwise.
_ID_NOUNS = sorted(
    [(token.rsplit(":", 1)[1].lower(), prefix) for token, prefix in _ID_PREFIX.items()]
    + [("allocation", "eipalloc-"), ("image", "ami-"), ("snapshot", "snap-")],
    key=lambda item: -len(item[0]),
)
_ACCOUNT_FIELDS = frozenset({"accountid", "ownerid", "registryid", "owner"})
_HOST_PORT_SERVICES = frozenset({"rds", "docdb", "elasticache", "redshift", "neptune"})
_IAM_NOUNS = frozenset({"role", "policy", "profile", "user", "group"})
_MAX_DEPTH = 7  # nested output objects synthesized this deep (Kubernetes types recurse)
_MOCK_TIME = "2026-12-01T00:00:00Z"

# ARN resource part per type; `{name}` is the physical name, `{id}` the id.
_ARN_RESOURCE = {
    "aws:iam/role:Role": ("iam", "", "role/{name}"),
    "aws:iam/policy:Policy": ("iam", "", "policy/{name}"),
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": ("iam", "", "oidc-provider/{oidc_host}"),
    "aws:iam/instanceProfile:InstanceProfile": ("iam", "", "instance-profile/{name}"),
    "aws:s3/bucket:Bucket": ("s3", None, "{name}"),
    "aws:kms/key:Key": ("kms", "r", "key/{id}"),
    "aws:kms/alias:Alias": ("kms", "r", "{name}"),
    "aws:eks/cluster:Cluster": ("eks", "r", "cluster/{name}"),
    "aws:eks/nodeGroup:NodeGroup": ("eks", "r", "nodegroup/{cluster}/{name}/{hash}"),
    "aws:eks/addon:Addon": ("eks", "r", "addon/{cluster}/{addon}/{hash}"),
    "aws:cloudwatch/logGroup:LogGroup": ("logs", "r", "log-group:{name}"),
    "aws:cloudtrail/trail:Trail": ("cloudtrail", "r", "trail/{name}"),
    "aws:fsx/lustreFileSystem:LustreFileSystem": ("fsx", "r", "file-system/{id}"),
    "aws:sns/topic:Topic": ("sns", "r", "{name}"),
}


def _hash(text: str, n: int = 7) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    if name.endswith("sses"):
        return name[:-2]
    if name.endswith("s") and not name.endswith("ss"):
        return name[:-1]
    return name


def _is_component(token: str) -> bool:
    cls = resource_class(token)
    return cls is not None and issubclass(cls, pulumi.ComponentResource)


def _fits(value: Any, shape: Shape) -> bool:
    """Whether an echoed input value has the shape the output property declares."""
    kind = shape[0]
    if value is None or kind in ("any", "lit") or rpc.is_rpc_secret(value):
        return True
    if kind in ("obj", "map"):
        return isinstance(value, dict)
    if kind == "list":
        return isinstance(value, list)
    if kind == "res":
        return isinstance(value, pulumi.Resource)
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("int", "float"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str)


class _Context:
    """What one synthesized value may depend on: the resource (or invoke) it belongs to."""

    def __init__(
        self,
        mocks: PlanMocks,
        token: str,
        key: str,
        physical: str,
        resource_id: str,
        inputs: dict,
        urn: str | None = None,
        list_len: int = 1,
    ) -> None:
        self.mocks, self.token, self.key = mocks, token, key
        self.physical, self.id, self.inputs, self.urn = physical, resource_id, inputs, urn
        package, module = ([*token.split(":"), ""])[:2]
        module = module.split("/")[0].lower()
        # The AWS service an ARN or host names: the token's module (`eks:index:Cluster`: eks).
        self.service = package if module == "index" and package != "aws" else module
        self.list_len = list_len
        self.state: dict[str, Any] = {}


class PlanMocks(pulumi.runtime.Mocks):
    """Answers resource registrations and invokes for one stack in one region."""

    def __init__(self, region: str, account_id: str = MOCK_ACCOUNT_ID, salt: str = "") -> None:
        self.region = region
        self.account_id = account_id
        self.salt = salt  # project/stack, so two stacks never share ids
        catalog_region = load_catalog().regions.get(region)
        self.zones: dict[str, str] = (
            dict(catalog_region.zones)
            if catalog_region
            else {f"{region}{s}": f"{region}-az{i}" for i, s in enumerate("abc", 1)}
        )
        # Resources a remote component's outputs reference (its VPC, subnets, cluster), as
        # the SDK resolves them by URN: urn -> (type, id, state). Never planned resources.
        self.synthetic: dict[str, tuple[str, str, dict[str, Any]]] = {}
        self.synthesized_lookups: Counter[str] = Counter()

    # ------------------------------------------------------------------ resources

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        return self.resource_state(args.typ, args.name, dict(args.inputs), None)

    def resource_state(
        self, token: str, name: str, inputs: dict[str, Any], urn: str | None
    ) -> tuple[str, dict]:
        """(id, outputs) of one registration; `urn` lets a component's outputs reference
        synthetic children under it."""
        key = f"{self.salt}::{token}::{name}"
        outputs: dict[str, Any] = dict(inputs)
        physical = self._physical_name(token, name, inputs, outputs)
        resource_id = self._id(token, key, physical, inputs)
        outputs.setdefault("id", resource_id)
        arn = self._arn(token, key, physical, resource_id, inputs)
        if arn and "arn" in resource_output_names(token) | {"arn"}:
            outputs.setdefault("arn", arn)
        self._computed(token, key, physical, inputs, outputs)
        self._declared(_Context(self, token, key, physical, resource_id, inputs, urn), outputs)
        return resource_id, outputs

    def _declared(self, ctx: _Context, outputs: dict[str, Any]) -> None:
        """Every output property the SDK class declares: an echoed input that fits its
        declared type, with the output-only fields nested inside it filled in; a property
        that only the provider computes, synthesized; an input not given stays absent (the
        provider's default is unknown offline)."""
        shapes = resource_output_shapes(ctx.token)
        if not shapes:
            return
        # A component's outputs are all computed by its provider: one that shares its name
        # with an input not given (pulumi-eks's `instanceRoles`) is still synthesized.
        declared_inputs = {} if _is_component(ctx.token) else input_fields(ctx.token)
        ctx.state = outputs
        for prop, shape in shapes.items():
            if prop in outputs and prop in ctx.inputs:
                value = outputs[prop]
                if _fits(value, shape):
                    outputs[prop] = self._fill(ctx, prop, value, shape, declared_inputs.get(prop))
                    continue
                outputs[prop] = self._value(ctx, prop, shape, prop, 0)
            elif prop not in outputs and prop not in declared_inputs:
                outputs[prop] = self._value(ctx, prop, shape, prop, 0)
        self._link_ids(outputs, shapes)
        if "kubeconfig" in shapes:
            kubeconfig = self._kubeconfig(ctx, outputs)
            outputs["kubeconfig"] = kubeconfig
            if "kubeconfigJson" in shapes:
                outputs["kubeconfigJson"] = json.dumps(kubeconfig)

    def _fill(self, ctx: _Context, name: str, value: Any, shape: Shape, typ: Any) -> Any:
        kind = shape[0]
        if kind == "list" and isinstance(value, list):
            return [self._fill(ctx, name, v, shape[1], typ) for v in value]
        if kind != "obj" or not isinstance(value, dict) or rpc.is_rpc_secret(value):
            return value
        given = nested_input_fields(typ) if typ is not None else None
        out = dict(value)
        for field, field_shape in object_fields(shape[1]).items():
            if field in out:
                sub = (given or {}).get(field)
                if sub is not None and _fits(out[field], field_shape):
                    out[field] = self._fill(ctx, field, out[field], field_shape, sub)
            elif given is not None and field not in given:
                out[field] = self._value(ctx, field, field_shape, f"{name}.{field}", 1)
        return out

    def _value(self, ctx: _Context, name: str, shape: Shape, path: str, depth: int) -> Any:
        kind = shape[0]
        if kind == "lit":
            return shape[1]
        if kind == "obj":
            if depth >= _MAX_DEPTH:
                return {}
            return {
                field: self._value(ctx, field, sub, f"{path}.{field}", depth + 1)
                for field, sub in object_fields(shape[1]).items()
            }
        if kind == "list":
            if shape[1][0] == "any":
                return []  # an untyped list (a Helm chart's `resources`): nothing to invent
            count = self._list_len(ctx, name, shape[1])
            item = _singular(name)
            return [
                self._value(ctx, item, shape[1], f"{path}[{i}]", depth + 1) for i in range(count)
            ]
        if kind == "map":
            if name == "tagsAll":
                return dict(ctx.inputs.get("tags") or {})
            return {}
        if kind == "res":
            return self._reference(ctx, path, shape[1])
        if kind == "bool":
            return False
        if kind == "int":
            return self._int(name)
        if kind == "float":
            return 0.0
        if kind == "any":
            return None
        return self._string(ctx, name, path)

    def _list_len(self, ctx: _Context, name: str, item: Shape) -> int:
        low = name.lower()
        if "subnet" in low or "zone" in low or (ctx.list_len > 1 and low.endswith("ids")):
            # A lookup answers every zone of the region; a component spreads over what it
            # is given, or awsx's documented default, the region's first 3 zones.
            default = len(self.zones) if ctx.list_len > 1 else 3
            wanted = ctx.inputs.get("numberOfAvailabilityZones") or default
            return max(1, min(int(wanted), len(self.zones)))
        return 1

    @staticmethod
    def _int(name: str) -> int:
        low = name.lower()
        if "port" in low:
            return 443
        return 1

    def _string(self, ctx: _Context, name: str, path: str) -> str:
        """A string output shaped by its name: ids, ARNs, hosts, IPs, times in the region."""
        low = name.lower()
        h = _hash(f"{ctx.key}::{path}", 17)
        zones = list(self.zones)
        index = int(m.group(1)) if (m := re.search(r"\[(\d+)\]$", path)) else 0
        if name == "id" and "." not in path and "[" not in path:
            return ctx.id
        if low in _ACCOUNT_FIELDS:
            return self.account_id
        if "issuer" in low or low == "oidcproviderurl":
            # EKS's OIDC issuer; pulumi-eks's `oidcIssuer` is the URL without its scheme.
            host = f"oidc.eks.{self.region}.amazonaws.com/id/{_hash(ctx.key, 32).upper()}"
            return host if low == "oidcissuer" else f"https://{host}"
        if low.endswith("arn"):
            noun = re.sub(r"(?<!^)(?=[A-Z])", "-", name[:-3]).lower() or ctx.service
            if noun == "oidc-provider":
                host = f"oidc.eks.{self.region}.amazonaws.com/id/{_hash(ctx.key, 32).upper()}"
                return f"arn:aws:iam::{self.account_id}:oidc-provider/{host}"
            if ctx.service == "iam" or noun.rsplit("-", 1)[-1] in _IAM_NOUNS:
                return f"arn:aws:iam::{self.account_id}:{noun}/{ctx.physical}"
            return (
                f"arn:aws:{ctx.service or 'mock'}:{self.region}:{self.account_id}:"
                f"{noun}/{ctx.physical}-{h[:8]}"
            )
        if low == "region":
            return self.region
        if low in ("availabilityzone", "zone", "availabilityzonename", "name") and (
            "zone" in path.lower()
        ):
            return zones[index % len(zones)]
        if low in ("availabilityzoneid", "zoneid") and "hosted" not in path.lower():
            return list(self.zones.values())[index % len(zones)]
        if "kubeconfig" in low:
            return json.dumps(self._kubeconfig(ctx, ctx.state))
        if low.endswith("id") or low.endswith("ids"):
            if "hostedzone" in low or (low == "zoneid" and ctx.service in ("lb", "alb", "elb")):
                return "Z" + h[:13].upper()
            stem = low[:-3] if low.endswith("ids") else low[:-2]
            prefix = next((p for noun, p in _ID_NOUNS if stem and stem.endswith(noun)), None)
            return (prefix if prefix is not None else "") + h
        host = self._host(ctx, h)
        if low.endswith("endpoint") or low.endswith("url") or low.endswith("uri"):
            if ctx.service in _HOST_PORT_SERVICES:
                return f"{host}:5432"
            return f"https://{host}"
        if (
            "dnsname" in low
            or "hostname" in low
            or low.endswith("domainname")
            or low
            in (
                "dns",
                "address",
                "fqdn",
            )
        ):
            return host
        if low == "ip" or low.endswith("ip") or low.endswith("ipaddress"):
            n = int(h[:4], 16)
            return (
                f"10.0.{n % 250}.{n % 200 + 10}"
                if "private" in low
                else f"198.51.100.{n % 250 + 1}"
            )
        if "cidr" in low:
            return "10.0.0.0/16"
        if low == "data" and "certificate" in path.lower():
            return base64.b64encode(f"mock CA for {ctx.physical}".encode()).decode()
        if "token" in low:
            return base64.b64encode(f"AWS:{h}".encode()).decode()
        if low in ("password", "secret") or low.endswith("secret"):
            return h
        if low == "username" and ctx.service == "ecr":
            return "AWS"  # ECR GetAuthorizationToken: the token is base64("AWS:<password>")
        if low.endswith("status") or low.endswith("state"):
            return "True" if ctx.token.startswith("kubernetes:") else "available"
        if low.endswith("at") or "time" in low or "date" in low:
            return _MOCK_TIME
        if "version" in low:
            return "1"
        if low == "name" or low.endswith("name"):
            return ctx.physical
        return f"{ctx.physical}-{name}"

    def _host(self, ctx: _Context, h: str) -> str:
        label = re.sub(r"[^a-z0-9-]", "-", ctx.physical.lower())[:32].strip("-") or "mock"
        if ctx.token.startswith("kubernetes:"):
            # A LoadBalancer Service's ingress is the NLB/ELB AWS created for it.
            return (
                f"{h[:16]}{_hash(h, 16)}-{int(h[:8], 16) % 10**10}.elb.{self.region}.amazonaws.com"
            )
        if ctx.service in ("lb", "alb", "elb", "elasticloadbalancing", "elasticloadbalancingv2"):
            return f"{label}-{int(h[:8], 16) % 10**10}.{self.region}.elb.amazonaws.com"
        return f"{label}.{h[:12]}.{self.region}.{ctx.service or 'mock'}.amazonaws.com"

    def _reference(self, ctx: _Context, path: str, cls: type) -> dict[str, Any] | None:
        """A reference to a synthetic resource a component output names, registered so the
        SDK can resolve it by URN (`pulumi:pulumi:getResource`)."""
        token = resource_token(cls)
        if token is None or ctx.urn is None:
            return None
        child_name = f"{ctx.physical}-{re.sub(r'[^A-Za-z0-9-]', '-', path).strip('-')}"
        head, rest = ctx.urn.split("::", 2)[:2], ctx.urn.split("::", 3)[2]
        child_urn = f"{head[0]}::{head[1]}::{rest}${token}::{child_name}"
        if child_urn not in self.synthetic:
            child_id, state = self.resource_state(token, child_name, {}, None)
            self.synthetic[child_urn] = (token, child_id, state)
        _, child_id, _ = self.synthetic[child_urn]
        return {
            rpc._special_sig_key: rpc._special_resource_sig,
            "urn": child_urn,
            "id": child_id,
            "packageVersion": "",
        }

    @staticmethod
    def _link_ids(outputs: dict[str, Any], shapes: dict[str, Shape]) -> None:
        """`privateSubnetIds` are the ids of `privateSubnets`, `vpcId` the id of `vpc`."""
        for prop in shapes:
            if prop.endswith("Ids") and shapes.get(prop[:-3] + "s", ("",))[0] == "list":
                refs = outputs.get(prop[:-3] + "s") or []
                ids = [r["id"] for r in refs if isinstance(r, dict) and "id" in r]
                if ids:
                    outputs[prop] = ids
            elif prop.endswith("Id") and shapes.get(prop[:-2], ("",))[0] == "res":
                ref = outputs.get(prop[:-2])
                if isinstance(ref, dict) and "id" in ref:
                    outputs[prop] = ref["id"]

    def _kubeconfig(self, ctx: _Context, outputs: dict[str, Any]) -> dict[str, Any]:
        """A kubeconfig for the component's cluster as pulumi-eks writes it: the cluster's
        endpoint and CA, a user that runs `aws eks get-token`."""
        cluster: dict[str, Any] = {}
        ref = outputs.get("eksCluster")
        if isinstance(ref, dict) and ref.get("urn") in self.synthetic:
            cluster = self.synthetic[ref["urn"]][2]
        name = str(cluster.get("name") or ctx.physical)
        endpoint = (
            cluster.get("endpoint")
            or f"https://{_hash(ctx.key, 32).upper()}.gr7.{self.region}.eks.amazonaws.com"
        )
        ca = (cluster.get("certificateAuthority") or {}).get("data") or base64.b64encode(
            f"mock CA for {name}".encode()
        ).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kubernetes",
                    "cluster": {"server": endpoint, "certificate-authority-data": ca},
                }
            ],
            "contexts": [{"name": "aws", "context": {"cluster": "kubernetes", "user": "aws"}}],
            "current-context": "aws",
            "preferences": {},
            "users": [
                {
                    "name": "aws",
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "aws",
                            "args": [
                                "eks",
                                "get-token",
                                "--cluster-name",
                                name,
                                "--region",
                                self.region,
                            ],
                        }
                    },
                }
            ],
        }

    def _physical_name(self, token: str, name: str, inputs: dict, outputs: dict) -> str:
        prop = _AUTONAME_PROPERTY.get(token, "name")
        if inputs.get(prop):
            return str(inputs[prop])
        if token.startswith("kubernetes:"):
            meta = inputs.get("metadata") or {}
            if not isinstance(meta, dict):
                return name
            if meta.get("name"):
                return str(meta["name"])
            # pulumi-kubernetes auto-names an object without metadata.name: `<name>-<8 chars>`.
            physical = f"{name}-{_hash(token + name, 8)}"
            outputs["metadata"] = {**meta, "name": physical}
            return physical
        if prop in resource_output_names(token) and not inputs.get(f"{prop}Prefix"):
            physical = f"{name}-{_hash(token + name)}"
            outputs[prop] = physical
            return physical
        return name

    def _id(self, token: str, key: str, physical: str, inputs: dict) -> str:
        if token == "aws:kms/key:Key":
            h = hashlib.sha256(key.encode()).hexdigest()
            return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"
        if token in _ID_PREFIX:
            return _ID_PREFIX[token] + _hash(key, 17)
        if token.startswith("kubernetes:"):
            meta = inputs.get("metadata") or {}
            ns = meta.get("namespace")
            return f"{ns}/{physical}" if ns else physical
        return physical

    def _arn(
        self, token: str, key: str, physical: str, resource_id: str, inputs: dict
    ) -> str | None:
        if not token.startswith("aws:"):
            return None
        service, scope, resource = _ARN_RESOURCE.get(token, (None, "r", None))
        if service is None:
            module = token.split(":")[1].split("/")[0]
            service = module.lower()
            kind = re.sub(r"(?<!^)(?=[A-Z])", "-", token.rsplit(":", 1)[1]).lower()
            # EC2-style ARNs name the id (`security-group/sg-...`), the others the name.
            resource = f"{kind}/{resource_id if token in _ID_PREFIX else physical}"
        fields = {
            "name": physical,
            "id": resource_id,
            "hash": _hash(key, 8),
            "cluster": inputs.get("clusterName", ""),
            "addon": inputs.get("addonName", ""),
            "oidc_host": str(inputs.get("url", "")).removeprefix("https://")
            or f"oidc.eks.{self.region}.amazonaws.com/id/{_hash(key, 32).upper()}",
        }
        resource = resource.format(**fields)
        if scope is None:
            return f"arn:aws:{service}:::{resource}"
        region = "" if scope == "" else self.region
        return f"arn:aws:{service}:{region}:{self.account_id}:{resource}"

    def _computed(self, token: str, key: str, physical: str, inputs: dict, out: dict) -> None:
        """Outputs AWS computes that programs go on to read."""
        h = _hash(key, 32).upper()
        if token == "aws:eks/cluster:Cluster":
            out.setdefault("endpoint", f"https://{h}.gr7.{self.region}.eks.amazonaws.com")
            ca = base64.b64encode(f"mock CA for {physical}".encode()).decode()
            out.setdefault("certificateAuthority", {"data": ca})
            out.setdefault(
                "identities",
                [{"oidcs": [{"issuer": f"https://oidc.eks.{self.region}.amazonaws.com/id/{h}"}]}],
            )
            out.setdefault("clusterId", _hash(key, 36))
            out.setdefault("platformVersion", "eks.1")
            out.setdefault("status", "ACTIVE")
            vpc = dict(out.get("vpcConfig") or {})
            vpc.setdefault("clusterSecurityGroupId", "sg-" + _hash(key + "cluster-sg", 17))
            vpc.setdefault("vpcId", "vpc-" + _hash(key + "vpc", 17))
            out["vpcConfig"] = vpc
        elif token == "aws:ec2/vpc:Vpc":
            out.setdefault("defaultSecurityGroupId", "sg-" + _hash(key + "default", 17))
            out.setdefault("mainRouteTableId", "rtb-" + _hash(key + "main", 17))
            out.setdefault("defaultNetworkAclId", "acl-" + _hash(key + "acl", 17))
        elif token == "aws:ec2/eip:Eip":
            n = int(_hash(key, 4), 16)
            out.setdefault("publicIp", f"198.51.100.{n % 250 + 1}")
        elif token == "aws:ec2/launchTemplate:LaunchTemplate":
            out.setdefault("latestVersion", 1)
            out.setdefault("defaultVersion", 1)
        elif token == "aws:fsx/lustreFileSystem:LustreFileSystem":
            out.setdefault("dnsName", f"{out['id']}.fsx.{self.region}.amazonaws.com")
            out.setdefault("mountName", _hash(key, 8))
        elif token == "aws:s3/bucket:Bucket":
            out.setdefault("bucketDomainName", f"{physical}.s3.amazonaws.com")
            out.setdefault("bucketRegionalDomainName", f"{physical}.s3.{self.region}.amazonaws.com")
            out.setdefault("region", self.region)
        elif token == "aws:kms/key:Key":
            out.setdefault("keyId", out["id"])
        elif token == "aws:iam/role:Role":
            out.setdefault("uniqueId", "AROA" + h[:17])
        elif token == "aws:eks/nodeGroup:NodeGroup":
            out.setdefault("status", "ACTIVE")
            # EKS names a managed node group's one ASG eks-<node group>-<uuid>
            group = out.get("nodeGroupName") or physical
            if inputs.get("nodeGroupNamePrefix") and not inputs.get("nodeGroupName"):
                group = f"{inputs['nodeGroupNamePrefix']}{_hash(key, 26)}"  # EKS's suffix
            uuid = _hash(key + "asg", 32)
            asg = f"eks-{group}-{uuid[:8]}-{uuid[8:12]}-{uuid[12:16]}-{uuid[16:20]}-{uuid[20:]}"
            out.setdefault("resources", [{"autoscalingGroups": [{"name": asg}]}])
        elif token == "aws:eks/podIdentityAssociation:PodIdentityAssociation":
            out.setdefault("associationId", "a-" + _hash(key, 17))
            out.setdefault(
                "associationArn",
                f"arn:aws:eks:{self.region}:{self.account_id}:podidentityassociation/{out.get('clusterName', '')}/a-{_hash(key, 17)}",
            )
        elif token.startswith("random:") and "result" in resource_output_names(token):
            length = int(inputs.get("length") or 32)
            out.setdefault("result", hashlib.sha256(key.encode()).hexdigest()[:length])

    # ------------------------------------------------------------------ invokes

    # Invokes whose answer is a fact of the region or the catalog, not a guess.
    _FACTS = frozenset(
        {
            "aws:index/getAvailabilityZones:getAvailabilityZones",
            "aws:index/getPartition:getPartition",
            "aws:index/getRegion:getRegion",
        }
    )

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        """The invoke's declared result type, synthesized around the arguments it was given,
        with the region's facts and the mock account where they apply."""
        token, a = args.token, dict(args.args)
        function = token.rsplit(":", 1)[-1]
        noun = re.sub(r"^get", "", function)
        physical = str(a.get("name") or a.get("repositoryName") or noun[:1].lower() + noun[1:])
        key = f"{self.salt}::{token}::{json.dumps(a, sort_keys=True, default=str)}"
        # The resource the lookup finds names its id prefix: getSubnets -> "subnet-".
        stem = _singular(noun).lower()
        prefix = next((p for n, p in _ID_NOUNS if stem.endswith(n)), None)
        resource_id = (prefix + _hash(key, 17)) if prefix is not None else physical
        ctx = _Context(self, token, key, physical, resource_id, a, list_len=len(self.zones))
        result: dict[str, Any] = {}
        shapes = invoke_result_shapes(token)
        for field, shape in (shapes or {}).items():
            if field in a and _fits(a[field], shape):
                result[field] = a[field]
            elif field == "ids" and prefix is not None:
                result[field] = [prefix + _hash(f"{key}::{i}", 17) for i in range(len(self.zones))]
            else:
                result[field] = self._value(ctx, field, shape, field, 0)
        result.update(self._facts(token, a))
        if token not in self._FACTS and (shapes is not None or token.startswith("aws:")):
            self.synthesized_lookups[token] += 1
        return result

    def _facts(self, token: str, a: dict[str, Any]) -> dict[str, Any]:
        """What an invoke answers that is known offline: the region's zones (catalog), the
        partition and region, the mock account; SSM AMI parameters as AMI ids."""
        zones = self.zones
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {
                "names": list(zones),
                "zoneIds": list(zones.values()),
                "groupNames": [self.region] * len(zones),
                "id": self.region,
                "state": a.get("state") or "available",
            }
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": self.account_id,
                "arn": f"arn:aws:iam::{self.account_id}:user/llmcloud-plan",
                "userId": "AIDAPLANMOCK",
                "id": self.account_id,
            }
        if token == "aws:index/getPartition:getPartition":
            return {
                "partition": "aws",
                "dnsSuffix": "amazonaws.com",
                "reverseDnsPrefix": "com.amazonaws",
                "id": "aws",
            }
        if token == "aws:index/getRegion:getRegion":
            return {
                "name": self.region,
                "region": self.region,
                "id": self.region,
                "endpoint": f"ec2.{self.region}.amazonaws.com",
                "description": self.region,
            }
        if token == "aws:ssm/getParameter:getParameter":
            name = str(a.get("name", ""))
            return {
                "name": name,
                "value": "ami-" + _hash(name, 17),
                "type": "String",
                "arn": f"arn:aws:ssm:{self.region}::parameter{name}",
                "id": name,
                "version": 1,
            }
        if token == "aws:ec2/getAmi:getAmi":
            return {"id": "ami-" + _hash(str(a), 17), "imageId": "ami-" + _hash(str(a), 17)}
        if token == "aws:eks/getAddonVersion:getAddonVersion":
            return {
                "addonName": a.get("addonName"),
                "kubernetesVersion": a.get("kubernetesVersion"),
                "version": "v1.0.0-eksbuild.1",
                "id": str(a.get("addonName")),
            }
        if token == "aws:ecr/getCredentials:getCredentials":
            # GetAuthorizationToken: base64("AWS:<password>"), the registry's endpoint.
            registry = str(a.get("registryId") or self.account_id)
            password = _hash(f"{self.salt}::{registry}", 32)
            return {
                "authorizationToken": base64.b64encode(f"AWS:{password}".encode()).decode(),
                "userName": "AWS",
                "password": password,
                "proxyEndpoint": f"https://{registry}.dkr.ecr.{self.region}.amazonaws.com",
                "registryId": registry,
                "id": registry,
            }
        return {}
