"""The stack config, the interface of an environment: its typed schema (`schema`), the checks
across its sections (`checks`, admission in `capacity`), the EKS version calendar
(`eks_versions`), how a stack file or Pulumi's runtime config becomes one (`loading`), and the
README tables generated from it (`docs`). Importers use this package."""

from infra.config.eks_versions import EksCalendar, EksVersion, load_eks_calendar, plan_day
from infra.config.loading import (
    config_from_pulumi,
    format_validation_error,
    load_stack_config,
    parse_stack_config,
    read_project,
    read_stack_file,
    stack_file,
)
from infra.config.schema import (
    NAMESPACE,
    REQUIRED_CONTROL_PLANE_LOGS,
    AddonsConfig,
    CiConfig,
    ClusterConfig,
    ConfigError,
    FsxConfig,
    GpuNodeGroupConfig,
    NamespaceConfig,
    NetworkConfig,
    PoliciesConfig,
    ServingConfig,
    StackConfig,
    StorageConfig,
    SystemNodeGroupConfig,
    TrainingJobConfig,
    WaiverConfig,
)

__all__ = [
    "NAMESPACE",
    "REQUIRED_CONTROL_PLANE_LOGS",
    "AddonsConfig",
    "CiConfig",
    "ClusterConfig",
    "ConfigError",
    "EksCalendar",
    "EksVersion",
    "FsxConfig",
    "GpuNodeGroupConfig",
    "NamespaceConfig",
    "NetworkConfig",
    "PoliciesConfig",
    "ServingConfig",
    "StackConfig",
    "StorageConfig",
    "SystemNodeGroupConfig",
    "TrainingJobConfig",
    "WaiverConfig",
    "config_from_pulumi",
    "format_validation_error",
    "load_eks_calendar",
    "load_stack_config",
    "parse_stack_config",
    "plan_day",
    "read_project",
    "read_stack_file",
    "stack_file",
]
