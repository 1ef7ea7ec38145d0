#!/usr/bin/env bash
# The GPU path in one script: the CUDA-marked tests, then one table of timings (SynFlow x100 on
# VGG-16-BN, one ResNet-20 epoch with and without masks, structured and 2:4 against dense; under 8
# minutes on one H100), then the stacked-training table (issue 22: per network-step and network-epoch,
# one at a time against sketchprune.stack and torch.func vmap at K = 16 and 64, eager, bf16 autocast,
# channels-last and CUDA graphs; whether a stacked network trains bit for bit as it does alone here;
# not yet run on a GPU, budget a few minutes more). Run from the repository root on a machine with a
# GPU:  bash benchmarks/gpu_check.sh   (STACK_ONLY=1: the stacked table alone)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
command -v "$PY" >/dev/null || { make .venv/.installed >/dev/null && PY=.venv/bin/python; }
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device: run this on a GPU machine'"
if [ -n "${STACK_ONLY:-}" ]; then
    exec "$PY" benchmarks/gpu_check.py --device cuda --only stack
fi
echo "== CUDA-marked tests"
"$PY" -m pytest -q -p no:cacheprovider -m cuda tests
echo "== timings"
"$PY" benchmarks/gpu_check.py --device cuda
