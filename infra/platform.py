"""The composition root: builds every component of one environment from its stack config.

Order follows the dependencies: keys first (everything is encrypted with them), then the
network, IAM, the cluster and its node groups, the data stores, the workloads.
"""

from __future__ import annotations

from typing import Any

import pulumi

from infra.config import StackConfig
from infra.context import Context, make_context
from infra.iam import ClusterRoles, ClusterRolesArgs
from infra.kms import Keys, KeysArgs
from infra.network import Network, NetworkArgs


class Platform:
    """All components of one stack. Not a resource itself: components sit directly under
    the stack, so URNs stay short and stable."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.ctx: Context = make_context(config)
        ctx = self.ctx
        self.cluster_name = f"{ctx.prefix}-eks"
        self._outputs: dict[str, Any] = {
            "region": config.region,
            "environment": config.environment,
            "cluster_name": self.cluster_name,
        }

        # --- keys and network (foundation) ---------------------------------------------
        self.keys = Keys(
            "keys",
            KeysArgs(
                deletion_window_days=config.security.kms_deletion_window_days,
                key_admin_arns=list(config.security.key_admin_arns),
            ),
            ctx,
            ctx.opts(),
        )
        self.network = Network(
            "network",
            NetworkArgs(
                config=config.network,
                cluster_name=self.cluster_name,
                flow_logs_key_arn=self.keys.logs.arn,
            ),
            ctx,
            ctx.opts(),
        )
        self._outputs.update(
            vpc_id=self.network.vpc_id,
            private_subnet_ids=self.network.private_subnet_ids,
            kms_key_arns=self.keys.arns(),
        )

        # --- security: IAM roles (issue 3) ---------------------------------------------
        self.roles = ClusterRoles(
            "cluster-roles",
            ClusterRolesArgs(cluster_name=self.cluster_name, cluster_key_arn=self.keys.cluster.arn),
            ctx,
            ctx.opts(),
        )

        # --- storage: S3 data lake (issue 5) -------------------------------------------

        # --- cluster and node groups (issue 4) -----------------------------------------

        # --- security on the cluster: access entries, namespaces, audit (issue 3) -------

        # --- storage on the cluster: FSx for Lustre, PV/PVC (issue 5) ------------------

        # --- workloads: training (issue 6) ---------------------------------------------

        # --- workloads: serving (issue 7) ----------------------------------------------

    def outputs(self) -> dict[str, Any]:
        """Stack outputs: what operators and the next tools need."""
        return dict(self._outputs)


def export_all(platform: Platform) -> None:
    for key, value in platform.outputs().items():
        pulumi.export(key, value)
