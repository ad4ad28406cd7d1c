#!/usr/bin/env bash
# The closed loop end to end (experiments/ladder/README.md): the branching sweep of configs/sweeps/ladder.py, the
# Chinchilla fits (approach 3 and 2, bootstrap intervals), `bmjax-scaling predict` and `plan` at C* = 10x the
# largest budget, the forecast run and one size either side trained at C*, then report.py's tables (SCALE.md, and
# the README's block between its SCALE markers). Re-running skips finished runs and resumes interrupted ones, branches included.
#
#     bash experiments/ladder/run.sh [full|session|centred|runlocal] [WORKDIR]   (default: full, runs/ladder-SCALE)
#
# Besides the pre-registered fit (every finished run, N = N_total), two variants are fitted and scored on the same
# forecast runs (README: sensitivity): "floor", the runs of at least 100 steps only (--min_tokens), and "nonemb",
# N = non-embedding parameters (results.csv's N).
set -euo pipefail
cd "$(dirname "$0")/../.."

SCALE=${1:-full}
WORKDIR=${2:-runs/ladder-$SCALE}
PYTHON=${PYTHON:-.venv/bin/python}
BOOTSTRAP=${BOOTSTRAP:-200}
OUT=experiments/ladder/$SCALE
SWEEP=configs/sweeps/ladder.py:scale=$SCALE
mkdir -p "$OUT"
# One compilation cache for every run: a branch compiles the same step as its parent.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$WORKDIR/jax-cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
run() { echo "+ $*" >&2; nice -n "${NICE:-5}" "$@"; }
ladder() { "$PYTHON" -c "import sys; sys.path.insert(0, 'configs/sweeps'); import ladder; s = ladder.SCALES['$SCALE']; $1"; }

start=$(date +%s)
run "$PYTHON" -m bmjax.cli.sweep --config "$SWEEP" --workdir "$WORKDIR" --dry_run | tail -n 1 > "$OUT/cost.txt"
run "$PYTHON" -m bmjax.cli.sweep --config "$SWEEP" --workdir "$WORKDIR" --launcher local
echo "$(( $(date +%s) - start ))" > "$OUT/sweep_wall_s.txt"
cp "$WORKDIR/results.csv" "$OUT/results.csv"

FIT=(--runs "$WORKDIR" --law chinchilla --bootstrap "$BOOTSTRAP")
CSTAR=$(ladder "print(s['forecast'])")
RULE=($(ladder "r = s['rule']; print('--aspect_ratio', r.aspect_ratio, '--head_dim', r.head_dim, '--min_layers', r.min_layers)"))
FLOOR=$(ladder "c = ladder.get_config('scale=$SCALE'); print(100 * c.data.batch_size * c.data.seq_len)")  # 100 steps
declare -A VARIANT=([floor]="--min_tokens $FLOOR" [nonemb]="--params_col N")
run "$PYTHON" -m bmjax.cli.scaling fit "${FIT[@]}" --approach 3 --budgets "$CSTAR" --json > "$OUT/fit3.json"
run "$PYTHON" -m bmjax.cli.scaling fit "${FIT[@]}" --approach 2 --budgets "$CSTAR" --json > "$OUT/fit2.json" \
  || echo '{"refused": "see the log"}' > "$OUT/fit2.json"
run "$PYTHON" -m bmjax.cli.scaling predict "${FIT[@]}" --flops "$CSTAR" --json > "$OUT/predict.json"
run "$PYTHON" -m bmjax.cli.scaling plan "${FIT[@]}" --flops "$CSTAR" --config "$SWEEP" \
  "${RULE[@]}" --workdir "$WORKDIR/forecast" --json > "$OUT/plan.json"

# The forecast runs: plan's shape for D_opt tokens, and the family's shapes at 2 N_opt and N_opt / 2 at its C.
start=$(date +%s)
run "$PYTHON" -m bmjax.cli.sweep --config "configs/sweeps/ladder.py:scale=$SCALE,forecast=$OUT/plan.json" \
  --workdir "$WORKDIR/forecast" --launcher local
echo "$(( $(date +%s) - start ))" > "$OUT/forecast_wall_s.txt"
cp "$WORKDIR/forecast/results.csv" "$OUT/forecast.csv"
# The law's loss (95% interval) at each forecast run's own N_total and D.
"$PYTHON" - "$OUT/forecast.csv" > "$OUT/forecast_points.txt" <<'EOF'
import csv, sys
for row in csv.DictReader(open(sys.argv[1])):
    print(row["run"], row["N_total"], row["N"], row["D"])
EOF
: > "$OUT/forecast_predicted.jsonl"
while read -r name n_total n d; do
  run "$PYTHON" -m bmjax.cli.scaling predict "${FIT[@]}" --n "$n_total" --d "$d" --json \
    | "$PYTHON" -c "import json, sys; r = json.load(sys.stdin); r['run'] = '$name'; print(json.dumps(r))" \
    >> "$OUT/forecast_predicted.jsonl"
done < "$OUT/forecast_points.txt"
# The sensitivity variants: each one's fit, and its loss for every forecast run (N as that variant counts it).
if [ "$SCALE" = centred ]; then
  for variant in floor nonemb; do
    run "$PYTHON" -m bmjax.cli.scaling fit "${FIT[@]}" ${VARIANT[$variant]} --approach 3 --budgets "$CSTAR" --json \
      > "$OUT/fit3_$variant.json"
    : > "$OUT/forecast_predicted_$variant.jsonl"
    while read -r name n_total n d; do
      [ "$variant" = nonemb ] && n_total=$n
      run "$PYTHON" -m bmjax.cli.scaling predict "${FIT[@]}" ${VARIANT[$variant]} --n "$n_total" --d "$d" --json \
        | "$PYTHON" -c "import json, sys; r = json.load(sys.stdin); r['run'] = '$name'; print(json.dumps(r))" \
        >> "$OUT/forecast_predicted_$variant.jsonl"
    done < "$OUT/forecast_points.txt"
  done
fi

"$PYTHON" experiments/ladder/report.py "$OUT"
