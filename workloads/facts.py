"""`ClusterFacts`: what the platform hands every workload about the cluster and the data stores.

One typed bundle (as pulumi-eks hands `CoreData` to its node groups) instead of a dozen
loose arguments per workload: the cluster and how pods get AWS credentials, the data lake's
buckets and key, the S3 prefixes, the FSx claim. The platform builds it once after the data
layer; a test builds it from literals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pulumi

from infra.security.roles import PodRoleArgs
from infra.storage.lake import BucketRef

__all__ = ["BucketRef", "ClusterFacts"]


@dataclass(frozen=True)
class ClusterFacts:
    """The cluster, its data stores and how its pods get AWS credentials."""

    cluster_name: pulumi.Input[str]
    environment: str
    datasets: BucketRef
    checkpoints: BucketRef
    models: BucketRef
    data_key_arn: pulumi.Input[str]  # the data lake's KMS key: every bucket object uses it
    datasets_prefix: str = "datasets/"
    checkpoints_prefix: str = "checkpoints/"
    # the FSx for Lustre claim (`Lustre.pvc_name`) in the FSx namespace; None: no FSx
    fsx_pvc_name: str | None = None
    pod_identity: Literal["pod_identity", "irsa"] = "pod_identity"
    oidc_provider_arn: pulumi.Input[str] | None = None
    oidc_issuer: pulumi.Input[str] | None = None

    def pod_role_args(
        self,
        *,
        namespace: str,
        service_account: str,
        statements: Sequence[dict[str, Any]],
        description: str,
    ) -> PodRoleArgs:
        """The pod role of one service account, trusted the way this cluster hands out
        credentials (Pod Identity association or IRSA web identity)."""
        return PodRoleArgs(
            cluster_name=self.cluster_name,
            namespace=namespace,
            service_account=service_account,
            statements=statements,
            mode=self.pod_identity,
            oidc_provider_arn=self.oidc_provider_arn,
            oidc_issuer=self.oidc_issuer,
            description=description,
        )
