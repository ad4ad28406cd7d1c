#!/usr/bin/env bash
# Pearce & Song (2024) reproduced: the simulation of simulate.py and small_scaling's shipped runs fitted with
# N_total and with N non-embedding, written into README.md by report.py. Under a minute on a quiet CPU. See README.md.
#
#     bash experiments/pearce_song/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
"$PYTHON" -m experiments.pearce_song.report
