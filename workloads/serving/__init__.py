"""vLLM serving: the `VllmService` component (`workloads.serving.service`), the fit check
(`workloads.serving.fit`) and `llmcloud smoke` (`infra.ops.smoke`).

Kept import-light: config validation imports the fit check, which needs no Pulumi."""
