#!/usr/bin/env bash
# The μP transfer experiment (README.md), ~45 minutes on 2 busy CPU cores:
#   1. the base width's (lr x output multiplier) grid under μP (base_tuning.json, ~4 minutes);
#   2. the transfer grid, both parametrisations, μP at the base grid's best output multiplier (results.json);
#   3. one run pair per hypothesis for why the untuned μP did not gain from width (hypotheses.json);
#   4. report.py: the tables (into README.md) and transfer.png.
#   bash experiments/mup/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python}"
HERE=experiments/mup
nice -n 10 "$PYTHON" $HERE/run.py --widths 64 --parametrizations mup --output_mults 1,2,4,8,16,32 \
    --lrs 0.001,0.002,0.004,0.008,0.016 --seeds 0,1,2 --results $HERE/base_tuning.json | tee $HERE/base_tuning.log
read -r ALPHA _ < <("$PYTHON" $HERE/report.py --best-base)
nice -n 10 "$PYTHON" $HERE/run.py --output_mults "$ALPHA" --lrs 0.00025,0.0005,0.001,0.002,0.004,0.008,0.016 \
    --results $HERE/results.json | tee $HERE/runs.log
nice -n 10 "$PYTHON" $HERE/hypotheses.py | tee $HERE/hypotheses.log
"$PYTHON" $HERE/report.py
