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
#   4. the T4 path: fp32 / fp16 / bf16 x channels_last x torch.compile at 64 and 192 px, the loader
#      (2 workers, pinned memory) against the step, and a resume parity check (benchmarks/gpu.py).
# bash benchmarks/gpu.sh --dry-run: every code path on the CPU with tiny settings (< 2 min), written
# to ${TMPDIR:-/tmp}/gpu_dry_run.json, docs/results untouched: run it before the GPU is there
# (tests/test_gpu_dry_run.py does; what it checks and what it cannot: benchmarks/gpu.py's docstring).
# Extra arguments go to benchmarks/gpu.py. Set PYTHON to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
if [[ "${1:-}" == "--dry-run" ]]; then
  exec "$PYTHON" -m benchmarks.gpu --out "${TMPDIR:-/tmp}/gpu_dry_run.json" "$@"
fi
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"  # the resume check's deterministic cuBLAS

"$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu.sh: no CUDA device visible to torch; run it on a GPU machine")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

"$PYTHON" -m benchmarks.gpu --out docs/results/gpu.json "$@"
"$PYTHON" benchmarks/render.py
