#!/usr/bin/env bash
# The prepared check for a lent GPU machine (an H200 takes a few minutes; the limit is 8):
#   bash benchmarks/gpu_check.sh            # writes benchmarks/results/gpu-check.json
# Needs python3 with torch (CUDA), numpy, scipy and scikit-image; nothing is installed or
# downloaded. Without a CUDA device it says so and exits 2: it stays ready until one is lent.
# What it measures: benchmarks/gpu_check.py. The CUDA tests of the suite run too when pytest
# is there.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
status=0
if python3 -c "import pytest" 2>/dev/null; then
  timeout 120 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_predictor.py || status=1
else
  echo "pytest is not installed here: the suite's CUDA tests are skipped (gpu_check.py covers the same ground)"
fi
timeout 360 python3 benchmarks/gpu_check.py --out "$OUT/gpu-check.json" || status=$?
exit $status
