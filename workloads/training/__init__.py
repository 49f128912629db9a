"""The packaged trainer: `torchrun [torchrun flags] -m workloads.training [--config FILE]
[--flag value ...]`. A GPT decoder trained with DDP or FSDP2 on token shards or synthetic
data, sharded atomic checkpoints, JSON-lines metrics. Importing the package imports no
torch: `workloads.training.config` is the stdlib-only schema the stack config reuses."""
