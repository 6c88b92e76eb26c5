#!/usr/bin/env bash
# bash benchmarks/gpu.sh [--steps 20] [--samples 1600] [--batch 64] [--workers 8]
#
# One prepared command for a CUDA machine (e.g. a Colab GPU runtime, after `pip install -e .`):
#   1. benchmarks/model.py's training/inference step for MaskDepthNet and the seed baseline at
#      64/128/192 px with AMP bf16 + channels_last, torch.compile off and on (img/s, peak memory);
#   2. make-data at 192 px, then a short `maskdepth.train.fit` run (configs/full192.yaml, 2 epochs
#      of at most --steps steps, the real DataLoader pipeline): img/s, the projected time of a
#      400k-sample epoch, peak GPU memory (torch.cuda.max_memory_allocated);
#   3. writes docs/results/gpu.json, then renders the tables of docs/results.md from the data files.
# Extra arguments go to benchmarks/gpu.py. Set PYTHON to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

"$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu.sh: no CUDA device visible to torch; run it on a GPU machine")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

"$PYTHON" -m benchmarks.gpu --out docs/results/gpu.json "$@"
"$PYTHON" benchmarks/render.py
