"""The trainer's config: every knob a named, typed value with a default, read from a YAML
(or JSON) file and overridden by `--flag value` on the command line.

Standard library only: the stack config (`infra/config/`) validates a TrainingJob's
`trainer:` map with this same module, and the container's entry point checks flags with it
before torch is imported. Bad input raises `ConfigError` with one message that names the
key, the value and what is allowed; the entry point turns it into exit code 2.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A trainer config that cannot be used; the message is for the user as is."""


@dataclass(frozen=True)
class ModelShape:
    """A named GPT size: layers, width, heads, vocabulary and default context."""

    n_layer: int
    d_model: int
    n_head: int
    vocab_size: int
    seq_len: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def parameters(self) -> int:
        """Parameters of `GPT(shape)`, the tied embedding once, position embeddings included:
        embeddings (V + T)·d; per block 12·d² (qkv 3d², proj d², MLP 8d²) and two norms."""
        d = self.d_model
        return (self.vocab_size + self.seq_len) * d + self.n_layer * (12 * d * d + 2 * d) + d


GPT2_VOCAB_PADDED = 50304  # GPT-2's 50257 tokens padded to a multiple of 128

# `tiny` is for CPU tests (~0.9M params); the rest follow GPT-2 / llm-foundry widths.
MODEL_SIZES: dict[str, ModelShape] = {
    "tiny": ModelShape(n_layer=4, d_model=128, n_head=4, vocab_size=512, seq_len=128),
    "small": ModelShape(
        n_layer=6, d_model=384, n_head=6, vocab_size=GPT2_VOCAB_PADDED, seq_len=1024
    ),
    "125m": ModelShape(
        n_layer=12, d_model=768, n_head=12, vocab_size=GPT2_VOCAB_PADDED, seq_len=2048
    ),
    "350m": ModelShape(
        n_layer=24, d_model=1024, n_head=16, vocab_size=GPT2_VOCAB_PADDED, seq_len=2048
    ),
    "760m": ModelShape(
        n_layer=24, d_model=1536, n_head=16, vocab_size=GPT2_VOCAB_PADDED, seq_len=2048
    ),
    "1b": ModelShape(
        n_layer=24, d_model=2048, n_head=16, vocab_size=GPT2_VOCAB_PADDED, seq_len=2048
    ),
}

DEFAULT_MICRO_BATCH = 8


def _choices(*values: str) -> dict[str, Any]:
    return {"choices": values}


@dataclass(frozen=True)
class TrainConfig:
    """One training run. `None` means "derived": see `Resolved`."""

    steps: int = field(default=1000, metadata={"min": 1, "help": "optimizer steps to train"})
    data: str = field(
        default="synthetic",
        metadata={"help": "'synthetic', or a directory of token shards (*.bin raw, *.npy)"},
    )
    data_dtype: str = field(
        default="uint16", metadata={**_choices("uint16", "uint32"), "help": "dtype of *.bin"}
    )
    checkpoint_dir: str = field(
        default="", metadata={"help": "where checkpoints go; empty: no checkpoints"}
    )
    checkpoint_every: int = field(default=500, metadata={"min": 1, "help": "steps between saves"})
    keep_checkpoints: int = field(
        default=3, metadata={"min": 1, "help": "complete checkpoints to keep"}
    )
    async_checkpoint: bool = field(
        default=False, metadata={"help": "save in the background (dcp.async_save)"}
    )
    checkpoint_upload: str = field(
        default="", metadata={"help": "s3://bucket/prefix to mirror checkpoints to (boto3)"}
    )
    metrics_file: str = field(default="", metadata={"help": "JSON lines file of step metrics"})
    log_every: int = field(default=1, metadata={"min": 1, "help": "steps between metric lines"})
    seed: int = field(default=0, metadata={"min": 0, "help": "seed of init, data and RNG"})
    model: str = field(default="tiny", metadata={**_choices(*MODEL_SIZES), "help": "model size"})
    vocab_size: int | None = field(
        default=None, metadata={"min": 2, "help": "default: the model size's"}
    )
    batch_size: int | None = field(
        default=None,
        metadata={"min": 1, "help": "global batch, sequences/step (default: micro x world)"},
    )
    micro_batch_size: int | None = field(
        default=None,
        metadata={"min": 1, "help": "sequences per rank per micro step (default: batch/world)"},
    )
    seq_len: int | None = field(
        default=None, metadata={"min": 8, "help": "tokens per sequence (default: model's)"}
    )
    lr: float = field(default=3e-4, metadata={"min_exclusive": 0.0, "help": "peak learning rate"})
    min_lr_ratio: float = field(
        default=0.1, metadata={"min": 0.0, "max": 1.0, "help": "final lr / peak lr (cosine)"}
    )
    warmup_steps: int = field(default=100, metadata={"min": 0, "help": "linear warmup steps"})
    weight_decay: float = field(default=0.1, metadata={"min": 0.0, "help": "AdamW decay"})
    grad_clip: float = field(default=1.0, metadata={"min": 0.0, "help": "max grad norm; 0: off"})
    parallel: str = field(default="ddp", metadata={**_choices("ddp", "fsdp"), "help": "DDP/FSDP2"})
    precision: str = field(
        default="auto",
        metadata={**_choices("auto", "bf16", "fp32"), "help": "auto: bf16 autocast on GPU"},
    )
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})

    @property
    def shape(self) -> ModelShape:
        base = MODEL_SIZES[self.model]
        return dataclasses.replace(
            base,
            vocab_size=self.vocab_size or base.vocab_size,
            seq_len=self.seq_len or base.seq_len,
        )


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


@dataclass(frozen=True)
class Batching:
    """How the global batch splits over ranks and micro steps."""

    world_size: int
    global_batch: int
    micro_batch: int
    accumulation: int


def batching(cfg: TrainConfig, world_size: int, source: str = "config") -> Batching:
    """Split the global batch; a batch that does not divide evenly is a config error."""
    if cfg.batch_size is None:
        micro = cfg.micro_batch_size or DEFAULT_MICRO_BATCH
        return Batching(world_size, micro * world_size, micro, 1)
    if cfg.batch_size % world_size:
        raise ConfigError(
            f"{source}: batch_size = {cfg.batch_size}: the global batch must be divisible by "
            f"the world size ({world_size} ranks)"
        )
    per_rank = cfg.batch_size // world_size
    micro = cfg.micro_batch_size or per_rank
    if per_rank % micro:
        raise ConfigError(
            f"{source}: micro_batch_size = {micro}: must divide the per-rank batch "
            f"({cfg.batch_size} / {world_size} ranks = {per_rank})"
        )
    return Batching(world_size, cfg.batch_size, micro, per_rank // micro)


# --------------------------------------------------------------------------- parsing


def _type_name(f: dataclasses.Field) -> str:
    t = str(f.type)
    for name in ("bool", "int", "float", "str"):
        if t.startswith(name):
            return name
    raise AssertionError(f"unsupported field type {t}")


def _allowed(f: dataclasses.Field) -> str:
    meta = f.metadata
    kind = _type_name(f)
    if "choices" in meta:
        return "allowed: " + ", ".join(meta["choices"])
    if kind == "bool":
        return "allowed: true or false"
    bounds = []
    if "min" in meta:
        bounds.append(f">= {meta['min']}")
    if "min_exclusive" in meta:
        bounds.append(f"> {meta['min_exclusive']}")
    if "max" in meta:
        bounds.append(f"<= {meta['max']}")
    noun = {"int": "an integer", "float": "a number", "str": "a string"}[kind]
    return f"allowed: {noun}" + (" " + " and ".join(bounds) if bounds else "")


def _coerce(name: str, value: Any, shown_key: str) -> Any:
    """One value, from the file (typed) or the command line (a string), checked."""
    f = FIELDS[name]
    kind = _type_name(f)
    bad = ConfigError(f"{shown_key} = {value!r}: {_allowed(f)}")
    if value is None and "None" in str(f.type):
        return None
    if kind == "bool":
        if isinstance(value, bool):
            out: Any = value
        elif isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            out = True
        elif isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            out = False
        else:
            raise bad
    elif kind == "int":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            out = value
        elif isinstance(value, str):
            try:
                out = int(value)
            except ValueError:
                raise bad from None
        else:
            raise bad
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise bad
        try:
            out = float(value)
        except ValueError:
            raise bad from None
        if not math.isfinite(out):
            raise bad
    else:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise bad
        out = str(value)
    meta = f.metadata
    if "choices" in meta and out not in meta["choices"]:
        raise bad
    if "min" in meta and out < meta["min"]:
        raise bad
    if "min_exclusive" in meta and out <= meta["min_exclusive"]:
        raise bad
    if "max" in meta and out > meta["max"]:
        raise bad
    return out


def _key(raw: str) -> str:
    return raw.replace("-", "_")


def from_mapping(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Checked values of a config mapping (`snake_case` or `kebab-case` keys)."""
    out: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = _key(str(raw_key))
        if key not in FIELDS:
            raise ConfigError(
                f"{source}: {raw_key} = {value!r}: unknown key; allowed keys: " + ", ".join(FIELDS)
            )
        out[key] = _coerce(key, value, f"{source}: {raw_key}")
    return out


def read_file(path: str) -> dict[str, Any]:
    """A YAML file (JSON if PyYAML is not installed, or the file ends in .json)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config = {path!r}: no such file")
    text = p.read_text()
    try:
        import yaml  # optional: the GPU image may ship torch and numpy only
    except ImportError:
        yaml = None
    try:
        if yaml is not None and p.suffix != ".json":
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:
        kind = "YAML" if yaml is not None and p.suffix != ".json" else "JSON"
        hint = "" if yaml is not None else " (PyYAML is not installed: write the file as JSON)"
        raise ConfigError(f"--config = {path!r}: not valid {kind}{hint}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config = {path!r}: must be a mapping of keys to values")
    return data


@dataclass(frozen=True)
class Invocation:
    """What the command line asked for: the config, and the check-only mode."""

    config: TrainConfig
    check_only: bool = False
    world_size: int | None = None


USAGE = "usage: torchrun [torchrun flags] -m workloads.training [--config FILE] [--flag value ...]"


def help_text() -> str:
    lines = [USAGE, "", "flags (each also a key of the config file; a flag overrides the file):"]
    lines.append("  --config FILE             YAML (or JSON) file of the keys below")
    for f in FIELDS.values():
        default = f.default if f.default is not None else "derived"
        allowed = _allowed(f).removeprefix("allowed: ")
        lines.append(
            f"  --{f.name.replace('_', '-'):<24}{f.metadata.get('help', '')} "
            f"[{allowed}; default: {default}]"
        )
    lines.append("  --check-config            validate and exit (0 ok, 2 bad)")
    lines.append(
        "  --world-size N            with --check-config: check the batch split for N ranks"
    )
    return "\n".join(lines)


def parse_args(argv: list[str]) -> Invocation:
    """`--config FILE` first, then every `--flag value` / `--flag=value` over it."""
    pairs: list[tuple[str, str]] = []
    config_path: str | None = None
    check_only = False
    world_size: int | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"argument {arg!r}: expected --flag value\n{USAGE}")
        name, eq, inline = arg[2:].partition("=")
        if name == "check-config" and not eq:
            check_only = True
            i += 1
            continue
        if eq:
            value = inline
            i += 1
        else:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise ConfigError(f"--{name}: needs a value")
            value = argv[i + 1]
            i += 2
        if name == "config":
            config_path = value
        elif name == "world-size":
            try:
                world_size = int(value)
            except ValueError:
                world_size = 0
            if world_size < 1:
                raise ConfigError(f"--world-size = {value!r}: allowed: an integer >= 1")
        elif _key(name) not in FIELDS:
            raise ConfigError(
                f"--{name} = {value!r}: unknown flag; allowed: --config, "
                + ", ".join("--" + k.replace("_", "-") for k in FIELDS)
            )
        else:
            pairs.append((name, value))
    values: dict[str, Any] = {}
    if config_path is not None:
        values.update(from_mapping(read_file(config_path), config_path))
    for name, value in pairs:
        values[_key(name)] = _coerce(_key(name), value, f"--{name}")
    config = TrainConfig(**values)
    check(config, "command line" if config_path is None else f"{config_path} + flags")
    if world_size is not None:
        batching(config, world_size, source="config")
    return Invocation(config=config, check_only=check_only, world_size=world_size)


def check(cfg: TrainConfig, source: str) -> None:
    """Cross-field checks that need no torch and no world size."""
    shape = cfg.shape
    if shape.d_model % shape.n_head:
        raise ConfigError(f"{source}: model = {cfg.model!r}: width not divisible by heads")
    if cfg.data != "synthetic":
        p = Path(cfg.data)
        if not p.is_dir():
            raise ConfigError(
                f"data = {cfg.data!r}: allowed: 'synthetic' or an existing directory of token "
                "shards (*.bin, *.npy)"
            )
    if cfg.checkpoint_upload and not cfg.checkpoint_upload.startswith("s3://"):
        raise ConfigError(
            f"checkpoint_upload = {cfg.checkpoint_upload!r}: allowed: an s3://bucket/prefix URI"
        )
    if cfg.checkpoint_upload and not cfg.checkpoint_dir:
        raise ConfigError(
            f"checkpoint_upload = {cfg.checkpoint_upload!r}: needs checkpoint_dir (checkpoints are "
            "written locally first, then mirrored)"
        )
    if (
        cfg.batch_size is not None
        and cfg.micro_batch_size is not None
        and cfg.batch_size % cfg.micro_batch_size
    ):
        raise ConfigError(
            f"{source}: micro_batch_size = {cfg.micro_batch_size}: must divide batch_size "
            f"({cfg.batch_size})"
        )


# Keys the TrainingJob component sets itself (paths inside the pod).
SET_BY_JOB = ("checkpoint_dir", "checkpoint_upload", "metrics_file")


def mapping_problem(values: dict[str, Any]) -> tuple[str, Any, str] | None:
    """The first bad entry of a stack config's `trainer:` map as (key, value, allowed), or
    None. No file system checks: `data` names a path inside the container."""
    for raw_key, value in values.items():
        key = _key(str(raw_key))
        if key not in FIELDS:
            return (
                str(raw_key),
                value,
                "unknown trainer key; allowed: "
                + ", ".join(k for k in FIELDS if k not in SET_BY_JOB),
            )
        if key in SET_BY_JOB:
            return str(raw_key), value, "set by the TrainingJob (its FSx or local paths)"
        try:
            _coerce(key, value, str(raw_key))
        except ConfigError:
            return str(raw_key), value, _allowed(FIELDS[key])
    return None
