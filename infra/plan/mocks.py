"""Pulumi mocks that answer like AWS would, so the real program runs offline.

Every resource gets a synthetic id and ARN and echoes its inputs back as outputs, plus the
computed outputs that programs read (a cluster's endpoint, a role's name, an OIDC issuer).
Auto-named resources get a stable physical name (`<logical name>-<7 hex>`), as Pulumi's
auto-naming would. Invokes (zones, caller identity, partition, SSM AMI parameters) are
answered from the region's catalog entry. Everything is derived from the URN, so two plans
of the same stack are byte-identical.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pulumi

from infra.catalog import load_catalog
from infra.plan.schema import resource_output_names

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
    "aws:kms/key:Key": "",
}

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


class PlanMocks(pulumi.runtime.Mocks):
    """Answers resource registrations and invokes for one stack in one region."""

    def __init__(self, region: str, account_id: str = MOCK_ACCOUNT_ID, salt: str = "") -> None:
        self.region = region
        self.account_id = account_id
        self.salt = salt  # project/stack, so two stacks never share ids

    # ------------------------------------------------------------------ resources

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        token, name, inputs = args.typ, args.name, dict(args.inputs)
        key = f"{self.salt}::{token}::{name}"
        outputs: dict[str, Any] = dict(inputs)
        physical = self._physical_name(token, name, inputs, outputs)
        resource_id = self._id(token, key, physical, inputs)
        outputs.setdefault("id", resource_id)
        arn = self._arn(token, key, physical, resource_id, inputs)
        if arn and "arn" in resource_output_names(token) | {"arn"}:
            outputs.setdefault("arn", arn)
        self._computed(token, key, physical, inputs, outputs)
        return resource_id, outputs

    def _physical_name(self, token: str, name: str, inputs: dict, outputs: dict) -> str:
        prop = _AUTONAME_PROPERTY.get(token, "name")
        if inputs.get(prop):
            return str(inputs[prop])
        if token.startswith("kubernetes:"):
            meta = inputs.get("metadata") or {}
            return str(meta.get("name") or name)
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
            resource = f"{token.rsplit(':', 1)[1].lower()}/{physical}"
        fields = {
            "name": physical,
            "id": resource_id,
            "hash": _hash(key, 8),
            "cluster": inputs.get("clusterName", ""),
            "addon": inputs.get("addonName", ""),
            "oidc_host": str(inputs.get("url", "")).removeprefix("https://"),
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

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        token, a = args.token, dict(args.args)
        catalog = load_catalog()
        region = catalog.regions.get(self.region)
        zones = (
            region.zones
            if region
            else {f"{self.region}{s}": f"{self.region}-az{i}" for i, s in enumerate("abc", 1)}
        )
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {
                "names": list(zones),
                "zoneIds": list(zones.values()),
                "groupNames": [self.region] * len(zones),
                "id": self.region,
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
        return {}
