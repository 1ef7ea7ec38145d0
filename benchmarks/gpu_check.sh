#!/usr/bin/env bash
# The GPU path in one script (under 8 minutes on one H100): the CUDA-marked tests, then one table of
# timings (SynFlow x100 on VGG-16-BN, one ResNet-20 epoch with and without masks, structured and 2:4
# against dense). Run from the repository root on a machine with a GPU:  bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
command -v "$PY" >/dev/null || { make .venv/.installed >/dev/null && PY=.venv/bin/python; }
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device: run this on a GPU machine'"
echo "== CUDA-marked tests"
"$PY" -m pytest -q -p no:cacheprovider -m cuda tests
echo "== timings"
"$PY" benchmarks/gpu_check.py --device cuda
