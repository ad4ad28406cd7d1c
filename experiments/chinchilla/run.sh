#!/usr/bin/env bash
# Chinchilla's approach 3 reproduced from Epoch AI's 240 runs: both fits, the bootstrap, approaches 1 and 2, Hoffmann
# et al.'s Table 3 and the timing against SciPy, written into results.json, plots/ and README.md (between its
# "generated" markers) by run.py. A few minutes of CPU (most of it SciPy's 300 starts). See README.md.
#
#     bash experiments/chinchilla/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
"$PYTHON" -m experiments.chinchilla.run --bootstrap "${BOOTSTRAP:-200}" --scipy-stride "${SCIPY_STRIDE:-15}"
