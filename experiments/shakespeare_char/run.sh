#!/usr/bin/env bash
# nanoGPT's shakespeare_char CPU recipe on bmjax: train it, print the eval losses, then time bmjax's step
# against a nanoGPT-style PyTorch loop on the same machine (interleaved runs). See README.md for the numbers.
#
#     bash experiments/shakespeare_char/run.sh [DATA] [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/../.."

DATA=${1:-data/tinyshakespeare.txt}
WORKDIR=${2:-runs/shakespeare_char}
PYTHON=${PYTHON:-.venv/bin/python}

if [ ! -s "$DATA" ]; then
  echo "error: no text at $DATA (give the tinyshakespeare file as the first argument)" >&2
  exit 2
fi

start=$(date +%s)
"$PYTHON" -m bmjax.cli.train --config configs/gpt/shakespeare_char.py --config.data.path="$DATA" --workdir "$WORKDIR"
echo "wall: $(( $(date +%s) - start )) s (compilation and the final sample included)"
echo "eval loss by step:"
grep '"split": "eval"' "$WORKDIR/metrics.jsonl"

"$PYTHON" tools/bench_compare.py --data "$DATA" --rounds 5
