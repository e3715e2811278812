#!/usr/bin/env bash
# Every GPU figure of the project in one command (scripts/gpu_check.py says what each part runs and how long
# it may take). On a lent GPU machine, in the repository root with the pack (make gpu-pack) carried as .gpu:
#     bash scripts/gpu_check.sh --results "$OUT"
# Here, at toy sizes on CPU:  PYTHON=.venv/bin/python bash scripts/gpu_check.sh --device cpu --tiny --results /tmp/r
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
