"""The stable ids of the pack's rules: waivers, reports and the drift audit name them.

Kept free of imports so the stack config can validate waiver rule ids without loading the
policy SDK.
"""

from __future__ import annotations

RULE_IDS: tuple[str, ...] = (
    "s3-bucket-kms-encryption",
    "s3-public-access-block",
    "s3-tls-only",
    "s3-versioning",
    "s3-access-logging",
    "kms-key-rotation",
    "kms-no-wildcard-grants",
    "eks-secrets-encryption",
    "eks-private-endpoint",
    "eks-control-plane-logging",
    "eks-supported-version",
    "ec2-imdsv2-required",
    "ebs-encrypted",
    "ec2-no-public-ip",
    "sg-no-open-ingress",
    "iam-no-wildcard-actions",
    "iam-no-write-on-wildcard-resources",
    "iam-no-admin-on-workloads",
    "fsx-kms-encryption",
    "fsx-lustre-ports-only",
    "vpc-flow-logs",
    "k8s-no-privileged",
    "k8s-no-host-namespaces",
    "k8s-resources-set",
    "k8s-image-pinned",
    "k8s-gpu-toleration",
    "k8s-serving-api-key",
    "k8s-network-policy",
    "tags-required",
    "gpu-budget",
    "waiver-expired",
)

# A waiver cannot waive the finding that a waiver has expired.
WAIVABLE_RULE_IDS: tuple[str, ...] = tuple(r for r in RULE_IDS if r != "waiver-expired")
