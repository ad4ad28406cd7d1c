#!/usr/bin/env bash
# The small IsoFLOP sweep end to end: 30 byte-level GPTs (10 sizes x 3 budgets, configs/sweeps/small_scaling.py)
# on the builtin corpus, then Chinchilla's approaches 2 and 3 fitted to their results. About 40 minutes on a quiet
# 2-core CPU; re-running skips finished runs and resumes an interrupted one. See README.md.
#
#     bash experiments/small_scaling/run.sh [WORKDIR]        (default runs/small_scaling)
#     SWEEP_ARG=runlocal bash experiments/small_scaling/run.sh /tmp/smoke     (two tiny runs, a minute or two)
set -euo pipefail
cd "$(dirname "$0")/../.."

WORKDIR=${1:-runs/small_scaling}
PYTHON=${PYTHON:-.venv/bin/python}
SCALING=${SCALING:-.venv/bin/bmjax-scaling}  # the fit CLI (pyproject entry point)
CONFIG=configs/sweeps/small_scaling.py${SWEEP_ARG:+:$SWEEP_ARG}

start=$(date +%s)
"$PYTHON" -m bmjax.cli.sweep --config "$CONFIG" --workdir "$WORKDIR" --launcher local
echo "sweep wall: $(( $(date +%s) - start )) s"
"$PYTHON" - "$WORKDIR/results.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print(f"{'N':>9} {'D':>11} {'6ND':>9} {'C':>9} {'eval loss':>9} {'bits/byte':>9} {'wall s':>7}  status")
for r in rows:
    print(f"{int(r['N']):>9} {int(r['D']):>11} {6 * int(r['N']) * int(r['D']):>9.2e} {float(r['C']):>9.2e} "
          f"{float(r['final_eval_loss']):>9.4f} "
          f"{float(r['bits_per_byte']):>9.4f} {float(r['wall_time']):>7.0f}  {r['status']}")
PY

# The six highest-loss runs are left out (all large models at small budgets: 6 to 51 updates, D/N <= 0.26), as the
# Chinchilla replication left out its five (D/N < 0.41). Approach 2 fits each budget's parabola on the sizes within
# one decade of its lowest loss: the 0.4M-3.2M models are the profiles' steep right arms, which would pull a
# parabola over all the sizes off the minimum.
for approach in 2 3; do
  echo "--- Chinchilla approach $approach ---"
  "$SCALING" fit --runs "$WORKDIR" --params-col N --law chinchilla --approach "$approach" --drop-highest-loss 6 \
    --isoflop-window 1 --bootstrap 200 --json --plot "$WORKDIR/plots_approach$approach" \
    | tee "$WORKDIR/fit_approach$approach.json"
done
