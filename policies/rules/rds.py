"""RDS rules for the databases people put next to a platform: not publicly accessible,
storage encrypted, automated backups kept, deletion protection in production.

Defaults are the AWS API's where a property is unset (CreateDBInstance: PubliclyAccessible
false in a VPC with private subnets, StorageEncrypted false, BackupRetentionPeriod 1 day,
DeletionProtection false).
"""

from __future__ import annotations

from typing import Any

from policies.rules.base import (
    PolicySettings,
    Reporter,
    RuleInfo,
    RuleResourcePolicy,
    cis_aws,
    fsbp,
    is_unknown,
    truthy,
)

INSTANCE = "aws:rds/instance:Instance"
CLUSTER = "aws:rds/cluster:Cluster"
CLUSTER_INSTANCE = "aws:rds/clusterInstance:ClusterInstance"

# FSBP RDS.11: automated backups kept at least this many days (its default parameter).
MIN_BACKUP_RETENTION_DAYS = 7
PRODUCTION_STACKS = frozenset({"prod", "production"})

NOT_PUBLIC = RuleInfo(
    id="rds-not-public",
    title="Databases are not publicly accessible",
    description="No RDS instance or Aurora cluster instance is publicly accessible (a public "
    "DNS name that resolves to a public IP).",
    severity="critical",
    remediation="Set publicly_accessible=False and place the database in private subnets "
    "(db_subnet_group_name); reach it through the VPC.",
    controls=(cis_aws("2.3.3"), fsbp("RDS.2")),
)
ENCRYPTED = RuleInfo(
    id="rds-storage-encrypted",
    title="Database storage is encrypted",
    description="Every RDS instance and Aurora cluster encrypts its storage (and so its "
    "snapshots and backups) at rest.",
    severity="high",
    remediation="Set storage_encrypted=True (with kms_key_id for a customer managed key); an "
    "existing database is encrypted by restoring an encrypted snapshot copy.",
    controls=(cis_aws("2.3.1"), fsbp("RDS.3")),
)
BACKUPS = RuleInfo(
    id="rds-backups",
    title="Databases keep automated backups",
    description=f"Every RDS instance and Aurora cluster keeps automated backups at least "
    f"{MIN_BACKUP_RETENTION_DAYS} days (unset: the API's 1 day).",
    severity="medium",
    remediation=f"Set backup_retention_period to {MIN_BACKUP_RETENTION_DAYS} or more.",
    controls=(fsbp("RDS.11"),),
)
DELETION_PROTECTION = RuleInfo(
    id="rds-deletion-protection",
    title="Production databases have deletion protection",
    description="In a production stack (environment prod, or a stack named prod or "
    "production) every RDS instance and Aurora cluster has deletion protection on.",
    severity="medium",
    remediation="Set deletion_protection=True.",
    controls=(fsbp("RDS.8"),),
)


def _what(args: Any) -> str:
    kind = "cluster" if args.resource_type == CLUSTER else "database"
    return f"{kind} {args.name!r}"


def check_not_public(args: Any, props: dict[str, Any], report: Reporter, s: PolicySettings) -> None:
    value = props.get("publiclyAccessible")
    if value is not None and not is_unknown(value) and truthy(value):
        report(f"{_what(args)} is publicly accessible: its endpoint resolves to a public IP")


def check_encrypted(args: Any, props: dict[str, Any], report: Reporter, s: PolicySettings) -> None:
    value = props.get("storageEncrypted")
    if is_unknown(value) or truthy(value or False):
        return
    if args.resource_type == CLUSTER and str(props.get("engineMode") or "") == "serverless":
        return  # Aurora Serverless v1 is always encrypted
    report(f"{_what(args)} stores its data unencrypted (storage_encrypted is not true)")


def check_backups(args: Any, props: dict[str, Any], report: Reporter, s: PolicySettings) -> None:
    value = props.get("backupRetentionPeriod")
    if is_unknown(value):
        return
    if props.get("replicateSourceDb"):
        return  # a read replica's backups are its source's
    days = 1 if value is None else int(value)
    if days < MIN_BACKUP_RETENTION_DAYS:
        shown = "off" if days == 0 else f"{days} day(s)"
        report(
            f"{_what(args)} keeps automated backups {shown}; keep at least "
            f"{MIN_BACKUP_RETENTION_DAYS} days"
        )


def _production(args: Any, s: PolicySettings) -> bool:
    if s.environment is not None:
        return s.environment == "prod"
    stack = str(args.urn).removeprefix("urn:pulumi:").split("::", 1)[0]
    return stack.lower() in PRODUCTION_STACKS


def check_deletion_protection(
    args: Any, props: dict[str, Any], report: Reporter, s: PolicySettings
) -> None:
    value = props.get("deletionProtection")
    if not _production(args, s) or is_unknown(value) or truthy(value or False):
        return
    report(f"{_what(args)} in a production stack has no deletion protection")


def policies(settings: PolicySettings) -> list[Any]:
    return [
        RuleResourcePolicy(NOT_PUBLIC, settings, check_not_public, [INSTANCE, CLUSTER_INSTANCE]),
        RuleResourcePolicy(ENCRYPTED, settings, check_encrypted, [INSTANCE, CLUSTER]),
        RuleResourcePolicy(BACKUPS, settings, check_backups, [INSTANCE, CLUSTER]),
        RuleResourcePolicy(
            DELETION_PROTECTION, settings, check_deletion_protection, [INSTANCE, CLUSTER]
        ),
    ]
