#!/usr/bin/env bash
# The μP transfer experiment (README.md): the learning-rate grid, then report.py's tables and plot.
#   bash experiments/mup/run.sh            # ~15-25 minutes on 2 CPU cores
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python}"
nice -n 10 "$PYTHON" experiments/mup/run.py "$@" | tee experiments/mup/runs.log
"$PYTHON" experiments/mup/report.py
