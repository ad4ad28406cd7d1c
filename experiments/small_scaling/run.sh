#!/usr/bin/env bash
# The small IsoFLOP sweep end to end: 21 byte-level GPTs (configs/sweeps/small_scaling.py: 3 counted-FLOP budgets,
# 5 sizes each, a second seed at the 2 sizes nearest each optimum) on the builtin corpus, then report.py: the runs
# and seed tables, approaches 1-3 in N_total and in N non-embedding with bootstrap intervals, leave-one-out, plots,
# all written into README.md and plots/. About 22 minutes on a quiet 2-core CPU; re-running skips finished runs and
# resumes an interrupted one. See README.md.
#
#     bash experiments/small_scaling/run.sh [WORKDIR]        (default runs/small_scaling)
#     SWEEP_ARG=runlocal bash experiments/small_scaling/run.sh /tmp/smoke     (two tiny runs, no report)
set -euo pipefail
cd "$(dirname "$0")/../.."

WORKDIR=${1:-runs/small_scaling}
PYTHON=${PYTHON:-.venv/bin/python}
CONFIG=configs/sweeps/small_scaling.py${SWEEP_ARG:+:$SWEEP_ARG}

start=$(date +%s)
"$PYTHON" -m bmjax.cli.sweep --config "$CONFIG" --workdir "$WORKDIR" --launcher local
echo "sweep wall: $(( $(date +%s) - start )) s"
if [ -z "${SWEEP_ARG:-}" ]; then
  "$PYTHON" -m experiments.small_scaling.report "$WORKDIR" --bootstrap "${BOOTSTRAP:-200}"
fi
