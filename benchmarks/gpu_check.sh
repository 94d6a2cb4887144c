#!/usr/bin/env bash
# GPU check for maintainers with a CUDA GPU (at most about 10 minutes). From the repository root, after
# `python3 -m pip install -e .` with a CUDA build of PyTorch:
#
#     bash benchmarks/gpu_check.sh [output_dir]            # default output_dir: runs/gpu_check
#
# Prints, and writes to <output_dir>/:
#   gpu.txt         the GPU, driver and PyTorch/CUDA versions
#   throughput.txt  training throughput of the DEFAULT recipe (configs/train.json: 256 px, 6.49 M parameter UNet,
#                   4 healthy images + healthy copy + 1-3 ART-ASyn variants per step) with AMP: iterations/s and
#                   images/s for the training step alone and with the real input pipeline (CacheDataset + online
#                   synthesis in 0, 2, 4, 8 DataLoader workers), the share of time spent waiting for data, the
#                   sampled GPU utilisation, and the peak GPU memory
#   curve.txt/.json/.png  the demo recipe (configs/demo.json) on the GPU: full ART-ASyn and plain reconstruction,
#                   image AUROC and pixel Dice on the demo test set at fixed iteration counts
# Each step has its own time limit, so the whole check ends within about 10 minutes even when a step hangs.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/gpu_check}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)

if ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch.cuda.is_available() is False: install a CUDA build of PyTorch and run on a GPU machine." >&2
    exit 1
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
    python3 -c "import torch, monai; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'monai', monai.__version__, 'cpus', __import__('os').cpu_count())"
} | tee "$out/gpu.txt"

# 1. throughput of the default recipe with AMP, sweeping the DataLoader workers; GPU utilisation sampled meanwhile
util="$out/utilisation.csv"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 250 >"$util" 2>/dev/null &
    smi=$!
fi
timeout 300 python3 benchmarks/bench_training.py --device cuda --amp true --image_size 256 --batch_size 4 \
    --iters 40 --n_images 96 --num_workers 0,2,4,8 2>&1 | grep -v "Warning\|warn(" | tee "$out/throughput.txt"
if [ -n "${smi:-}" ]; then
    kill "$smi" 2>/dev/null
    python3 - "$util" <<'EOF' | tee -a "$out/throughput.txt"
import sys
rows = [line.split(",") for line in open(sys.argv[1]) if line.count(",") == 2]
busy = [float(r[1]) for r in rows]
mem = [float(r[2]) for r in rows]
if busy:
    print(f"nvidia-smi over the benchmark: GPU utilisation mean {sum(busy) / len(busy):.0f} %, "
          f"max memory used {max(mem):.0f} MiB ({len(busy)} samples; includes set-up phases)")
EOF
fi

# 2. demo metrics after a fixed number of iterations (the quick start's recipe, here on the GPU)
left=$(( 570 - ($(date +%s) - start) ))
if [ "$left" -lt 60 ]; then
    echo "gpu_check: not enough time left for the demo curve ($left s)." | tee "$out/curve.txt"
    exit 0
fi
timeout "$left" python3 benchmarks/bench_training.py --curve --recipes full,plain --every 500 \
    --workdir "$out/curve_runs" --output "$out/curve.png" --json "$out/curve.json" 2>&1 \
    | grep -a -o "\(full\|plain\) *it .*Dice [0-9.na]*\|wrote .*" | tee "$out/curve.txt"
echo "gpu_check: done in $(( $(date +%s) - start )) s; results in $out/"
