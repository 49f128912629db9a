"""The model gateway: one HTTPS address per environment in front of every vLLM endpoint.

- `server`: the gateway program (standard library only): team keys, routing by `model`,
  limits with 429 and Retry-After, one audit record per call;
- `config`: renders the program's config and the audit shipper's (Fluent Bit) config;
- `component`: the `Gateway` Pulumi component (namespace, team keys in Secrets Manager, the
  Deployment, the TLS NLB, NetworkPolicies, the audit log group).
"""
