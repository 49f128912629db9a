"""The llmcloud CrossGuard policy pack.

`pulumi preview --policy-pack policies` runs `policies/__main__.py`, the only place that builds
the `PolicyPack` (its constructor starts the analyzer's gRPC server and blocks). The rules live
in `policies.rules`, importable without starting anything, so `llmcloud plan` runs the same
policy objects on its recorded resources.
"""
