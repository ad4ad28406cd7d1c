#!/usr/bin/env bash
# The costs of bmjax's evals on the tiny GPT (configs/gpt/tiny.py): seconds per pass of each data.eval_sets entry
# against the train step, and the lm-evaluation-harness adapter's tokens/s (scoring, and generation) on the run's
# mesh and on one device.
# A few minutes on the 2-core CPU (nice 10); report.py writes the tables into README.md.
#
#     bash experiments/evals/run.sh [WORKDIR]        (default runs/evals)
set -euo pipefail
cd "$(dirname "$0")/../.."

WORKDIR=${1:-runs/evals}
PYTHON=${PYTHON:-.venv/bin/python}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's bmjax, whichever the interpreter installed
OUT=experiments/evals/results
mkdir -p "$OUT"

nice -n 10 "$PYTHON" -m bmjax.cli.train --config configs/gpt/tiny.py:runlocal --workdir "$WORKDIR/tiny" \
  --config.train.progress=False > /dev/null
for seed in 0 1; do  # two measurements of each: the spread says how much the machine's load moves them
  nice -n 10 "$PYTHON" experiments/evals/eval_sets_overhead.py --repeats 5 > "$OUT/eval_sets_overhead.$seed.json"
  nice -n 10 "$PYTHON" experiments/evals/adapter_throughput.py "$WORKDIR/tiny" > "$OUT/adapter_throughput.$seed.json"
  nice -n 10 "$PYTHON" experiments/evals/generate_throughput.py "$WORKDIR/tiny" > "$OUT/generate_throughput.$seed.json"
done
"$PYTHON" experiments/evals/report.py "$OUT" experiments/evals/README.md
