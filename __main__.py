"""llmcloud: one Pulumi program for every environment; stacks/Pulumi.<env>.yaml differ."""

import pulumi

from infra.config import ConfigError, config_from_pulumi
from infra.platform import Platform, export_all

try:
    config = config_from_pulumi()
except ConfigError as error:
    raise pulumi.RunError(str(error)) from None

export_all(Platform(config))
