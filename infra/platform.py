"""The composition root: builds every component of one environment from its stack config.

Order follows the dependencies: keys first (everything is encrypted with them), then the
network, IAM, the cluster and its node groups, the data stores, the workloads.
"""

from __future__ import annotations

from typing import Any

import pulumi

from infra.config import StackConfig
from infra.context import Context, make_context
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

    def outputs(self) -> dict[str, Any]:
        """Stack outputs: what operators and the next tools need."""
        return {
            "region": self.config.region,
            "environment": self.config.environment,
            "cluster_name": self.cluster_name,
            "vpc_id": self.network.vpc_id,
            "private_subnet_ids": self.network.private_subnet_ids,
            "kms_key_arns": self.keys.arns(),
        }


def export_all(platform: Platform) -> None:
    for key, value in platform.outputs().items():
        pulumi.export(key, value)
