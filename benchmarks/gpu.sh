#!/usr/bin/env bash
# bash scripts/bench_gpu.sh [--steps 20] [--samples 1600] [--batch 64] [--workers 8]
#
# One prepared command for a CUDA machine (e.g. a Colab GPU runtime, after `pip install -e .`):
#   1. scripts/bench_model.py's training/inference step for MaskDepthNet and the seed baseline at
#      64/128/192 px with AMP bf16 + channels_last, torch.compile off and on (img/s, peak memory);
#   2. make-data at 192 px, then a short `maskdepth.train.fit` run (configs/full192.yaml, 2 epochs
#      of at most --steps steps, the real DataLoader pipeline): img/s, the projected time of a
#      400k-sample epoch, peak GPU memory (torch.cuda.max_memory_allocated);
#   3. writes docs/results/gpu.json and re-renders the GPU section of docs/results.md from it.
# Extra arguments go to scripts/bench_gpu.py. Set PYTHON to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

"$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "bench_gpu.sh: no CUDA device visible to torch; run it on a GPU machine")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

"$PYTHON" scripts/bench_gpu.py --out docs/results/gpu.json "$@"

if [ -f docs/results.md ]; then
  "$PYTHON" scripts/benchmark.py --gpu-only --gpu-json docs/results/gpu.json
else
  echo "docs/results.md does not exist yet: run python scripts/benchmark.py (it renders docs/results/gpu.json)"
fi
