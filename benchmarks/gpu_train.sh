#!/usr/bin/env bash
# Train the ~1.3B-parameter GPT (`--model 1b`: 24 layers, d_model 2048, 16 heads, seq 2048)
# on ONE NVIDIA GPU in bf16 for a few hundred steps on synthetic data, through the real
# entry point (torchrun -m workloads.training), and print tokens/s and MFU.
#
# Needs only torch (>= 2.6, CUDA build) and numpy: nothing is downloaded. Finishes in under
# 5 minutes on an H100/H200 (about 0.35 s/step at 45 % MFU plus torch.compile warm-up).
# MFU = (6N + 12·L·H·Q·T) · tokens/s / peak, the peak (bf16, dense) read from
# infra/data/catalog.json for the GPU's name. Anchors: llm-foundry 1B on H100, 42 %.
#
#   benchmarks/gpu_train.sh                      # defaults below
#   STEPS=200 MICRO_BATCH=16 benchmarks/gpu_train.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-300}
MICRO_BATCH=${MICRO_BATCH:-8}   # sequences of 2048 tokens per step (fits 80 GB)
LOG_EVERY=${LOG_EVERY:-10}
SKIP_STEPS=${SKIP_STEPS:-60}    # compile and allocator warm-up, not counted
TIME_LIMIT_S=${TIME_LIMIT_S:-290}

"$PYTHON" - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_train.sh: no CUDA device visible to torch " + torch.__version__)
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, "
      f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
EOF

# torch.compile needs Triton (shipped with torch's CUDA wheels); run eager without it.
COMPILE=false
if "$PYTHON" -c "import triton" 2>/dev/null; then COMPILE=true; fi

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "training: model 1b, seq 2048, micro batch $MICRO_BATCH, $STEPS steps, compile=$COMPILE"
start=$(date +%s)
timeout "$TIME_LIMIT_S" "$PYTHON" -m torch.distributed.run --standalone --nproc-per-node=1 \
  -m workloads.training \
  --model=1b --seq-len=2048 --data=synthetic \
  --batch-size="$MICRO_BATCH" --micro-batch-size="$MICRO_BATCH" \
  --steps="$STEPS" --warmup-steps=30 --lr=3e-4 \
  --precision=bf16 --compile="$COMPILE" \
  --log-every="$LOG_EVERY" --metrics-file="$OUT/metrics.jsonl" \
  > "$OUT/stdout.log" 2> "$OUT/stderr.log" || {
    rc=$?
    echo "gpu_train.sh: the trainer exited with $rc" >&2
    tail -n 40 "$OUT/stderr.log" >&2
    exit "$rc"
  }
echo "wall time: $(( $(date +%s) - start )) s"

"$PYTHON" - "$OUT/metrics.jsonl" "$SKIP_STEPS" <<'EOF'
import json
import statistics
import sys

records = [json.loads(line) for line in open(sys.argv[1])]
skip = int(sys.argv[2])
steady = [r for r in records if r["step"] > skip] or records
tps = statistics.median(r["tokens_per_second"] for r in steady)
mfu = [r["mfu"] for r in steady if "mfu" in r]
print(f"loss: {records[0]['loss']:.3f} (step {records[0]['step']}) -> "
      f"{records[-1]['loss']:.3f} (step {records[-1]['step']})")
print(f"step time: {statistics.median(r['step_time_s'] for r in steady):.3f} s (median after step {skip})")
print(f"tokens/s: {tps:,.0f}")
print(f"MFU: {100 * statistics.median(mfu):.1f} %" if mfu else "MFU: unknown (GPU not in the catalog)")
EOF
