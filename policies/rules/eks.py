"""EKS control plane rules: secrets envelope encryption, a private API endpoint, control
plane logging, a supported Kubernetes version.

A public endpoint restricted to a CIDR allowlist (what dev uses on purpose) is still a
finding: advisory in dev, and anywhere else it needs a waiver.
"""

from __future__ import annotations

from typing import Any

from pulumi_policy import PolicyConfigSchema

from policies.rules.base import (
    PolicySettings,
    Reporter,
    RuleInfo,
    RuleResourcePolicy,
    as_list,
    cis_eks,
    fsbp,
    get,
    is_unknown,
    truthy,
)

CLUSTER = "aws:eks/cluster:Cluster"
REQUIRED_LOG_TYPES = ("api", "audit", "authenticator")
OPEN_CIDRS = ("0.0.0.0/0", "::/0")

SECRETS_ENCRYPTION = RuleInfo(
    id="eks-secrets-encryption",
    title="EKS encrypts Kubernetes secrets with a customer managed KMS key",
    description="Every EKS cluster has envelope encryption of `secrets` with a customer managed "
    "KMS key.",
    severity="high",
    remediation="Set encryption_config=aws.eks.ClusterEncryptionConfigArgs(resources=['secrets'], "
    "provider={'key_arn': <the cluster key ARN>}) on the aws.eks.Cluster.",
    controls=(cis_eks("5.3.1"), fsbp("EKS.3")),
)
PRIVATE_ENDPOINT = RuleInfo(
    id="eks-private-endpoint",
    title="EKS API endpoint is private",
    description="Every EKS cluster has private endpoint access on and public endpoint access off "
    "(a public endpoint with a CIDR allowlist is a deliberate loosening: advisory in dev, a "
    "waiver elsewhere).",
    severity="high",
    remediation="Set vpc_config.endpoint_private_access=True and endpoint_public_access=False "
    "(cluster.endpoint_public_access: false in the stack config); reach the API over VPN or a "
    "bastion.",
    controls=(cis_eks("5.4.2"), fsbp("EKS.1")),
)
CONTROL_PLANE_LOGGING = RuleInfo(
    id="eks-control-plane-logging",
    title="EKS control plane logs api, audit and authenticator",
    description="Every EKS cluster sends at least the api, audit and authenticator control plane "
    "logs to CloudWatch Logs.",
    severity="medium",
    remediation="Set enabled_cluster_log_types to include 'api', 'audit' and 'authenticator' "
    "(cluster.log_types in the stack config).",
    controls=(cis_eks("2.1.1"), fsbp("EKS.8")),
)
SUPPORTED_VERSION = RuleInfo(
    id="eks-supported-version",
    title="EKS runs a supported Kubernetes version",
    description="Every EKS cluster pins a Kubernetes version EKS offers on the day of the check "
    "(infra/data/eks_versions.json: standard or extended support; the plan's cost notes say when "
    "extended support bills $0.60/h).",
    severity="medium",
    remediation="Set version to a supported release (cluster.version in the stack config) and "
    "upgrade before its end of standard support.",
    controls=(fsbp("EKS.2"),),
)


def check_secrets_encryption(
    args: Any, props: dict[str, Any], report: Reporter, settings: PolicySettings
) -> None:
    configs = as_list(props.get("encryptionConfig"))
    for config in configs:
        if not isinstance(config, dict):
            continue
        resources = config.get("resources")
        key = get(config, "provider", "keyArn")
        covers = is_unknown(resources) or "secrets" in as_list(resources)
        if covers and key:
            return
    report(
        f"cluster {args.name!r} does not envelope-encrypt secrets with a KMS key "
        "(encryption_config with resources=['secrets'] and a key ARN)"
    )


def check_private_endpoint(
    args: Any, props: dict[str, Any], report: Reporter, settings: PolicySettings
) -> None:
    vpc = props.get("vpcConfig") or {}
    # AWS defaults: public access on, private access off.
    public = truthy(vpc.get("endpointPublicAccess", True))
    private = truthy(vpc.get("endpointPrivateAccess", False))
    if public:
        cidrs = vpc.get("publicAccessCidrs")
        if is_unknown(cidrs):
            report(f"cluster {args.name!r} has a public API endpoint")
        else:
            cidrs = as_list(cidrs)
            if not cidrs or any(c in OPEN_CIDRS for c in cidrs):
                report(
                    f"cluster {args.name!r} has a public API endpoint open to the internet "
                    "(0.0.0.0/0)"
                )
            else:
                report(
                    f"cluster {args.name!r} has a public API endpoint, restricted to "
                    f"{', '.join(map(str, cidrs))}"
                )
    if not private:
        report(
            f"cluster {args.name!r} has private endpoint access off: nodes reach the API server "
            "through the internet"
        )


def check_logging(args: Any, props: dict[str, Any], report: Reporter, s: PolicySettings) -> None:
    enabled = props.get("enabledClusterLogTypes")
    if is_unknown(enabled):
        return
    missing = [t for t in REQUIRED_LOG_TYPES if t not in as_list(enabled)]
    if missing:
        report(f"cluster {args.name!r} does not log {', '.join(missing)}")


def check_version(
    args: Any, props: dict[str, Any], report: Reporter, settings: PolicySettings
) -> None:
    version = props.get("version")
    if is_unknown(version):
        return
    supported = tuple(args.get_config().get("supportedVersions") or ()) or (
        settings.supported_eks_versions()
    )
    if not version:
        report(
            f"cluster {args.name!r} pins no Kubernetes version: EKS picks its default, which "
            "changes under you"
        )
    elif str(version) not in supported:
        report(
            f"cluster {args.name!r} runs Kubernetes {version}, not a supported version "
            f"({', '.join(supported)})"
        )


VERSION_SCHEMA = PolicyConfigSchema(
    properties={
        "supportedVersions": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Kubernetes versions in EKS standard support",
        }
    }
)


def policies(settings: PolicySettings) -> list[Any]:
    return [
        RuleResourcePolicy(SECRETS_ENCRYPTION, settings, check_secrets_encryption, [CLUSTER]),
        RuleResourcePolicy(PRIVATE_ENDPOINT, settings, check_private_endpoint, [CLUSTER]),
        RuleResourcePolicy(CONTROL_PLANE_LOGGING, settings, check_logging, [CLUSTER]),
        RuleResourcePolicy(
            SUPPORTED_VERSION, settings, check_version, [CLUSTER], config_schema=VERSION_SCHEMA
        ),
    ]
