"""llmcloud's platform code: one package per area (config, network, security, cluster, storage,
registry, plan, ops, reporting), the composition root (`platform`) and the `llmcloud` CLI."""
