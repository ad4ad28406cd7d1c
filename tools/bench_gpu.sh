#!/usr/bin/env bash
# Throughput of the trainer's own step on one NVIDIA GPU: GPT-2 124M and 350M, bfloat16 compute (float32
# master weights), cuDNN flash attention, sequences of 1024. Prints ms/step, tokens/s and MFU against the
# GPU's dense bfloat16 peak (bmjax.train.mfu: 989 TFLOP/s for an H100/H200). Target: >= 45% MFU for 350M.
#
#     bash tools/bench_gpu.sh                 # from anywhere; runs in the repository root
#     PYTHON=/path/to/python STEPS=200 bash tools/bench_gpu.sh
#     PROFILE_DIR=/tmp/prof bash tools/bench_gpu.sh   # also a jax.profiler trace of a few steps per size
#
# Needs jax with CUDA in $PYTHON's environment (pip install "jax[cuda12]==<the pinned jax>"; bmjax importable,
# e.g. PYTHONPATH=$PWD); the models are built from configs/gpt/gpt2.py, fed from the builtin corpus (byte
# tokens, no download). Each size runs as its own process, under a time limit, so one's memory or compile time
# never stops the other; nothing is written outside a temporary directory (and PROFILE_DIR).
#
# Measured on an H200 (2026-11-28, jax 0.11.2 + CUDA 13, flax 0.12.10), 350M, batch 32: 261-264 ms/step,
# 125k tokens/s, 30.5-30.7% MFU (below the target); 297 ms with 10 steps per call; batch 64 runs out of
# memory without remat, and so does XLA's own attention (it materialises the scores) at batch 32.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
STEPS=${STEPS:-60}       # timed steps per size (after WARMUP untimed ones, compilation included)
WARMUP=${WARMUP:-6}
LIMIT_S=${LIMIT_S:-300}  # per size: compilation included
# Global batch (sequences of 1024 tokens) per size: 32k tokens per step keeps an H200 busy and fits without remat.
BATCH_124M=${BATCH_124M:-32}
BATCH_350M=${BATCH_350M:-32}

# Let XLA take most of the GPU up front (no growth pauses).
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
export PYTHONUNBUFFERED=1

"$PYTHON" - <<'PY' || exit 1
import jax

device = jax.devices()[0]
if device.platform != "gpu":
    raise SystemExit(f"bench_gpu.sh: jax sees no GPU (platform {device.platform!r}); "
                     f"install jax[cuda12]=={jax.__version__} in this environment")
print(f"jax {jax.__version__}: {jax.device_count()} x {device.device_kind}", flush=True)
PY

failed=0
for size in 350m 124m; do  # the target first
  batch_var="BATCH_${size^^}"
  batch=${!batch_var}
  profile=()
  [ -n "${PROFILE_DIR:-}" ] && profile=(--profile_dir "${PROFILE_DIR}/${size}")
  echo "=== GPT-2 ${size}: batch ${batch} x 1024 tokens, bfloat16, cudnn attention, scanned layers"
  # Scanned layers: one layer body to compile and autotune (an unrolled model with 10 steps per call had not
  # finished compiling after 9 minutes).
  timeout "${LIMIT_S}" "$PYTHON" tools/bench_step.py --config "configs/gpt/gpt2.py:size=${size}" \
    --config.model.dtype=bfloat16 --config.model.param_dtype=float32 --config.model.attention=cudnn \
    --config.model.remat=none --config.model.scan_layers=true --config.data.seq_len=1024 \
    --config.data.batch_size="${batch}" --config.mesh.data=1 --config.train.steps_per_call=1 \
    --steps "${STEPS}" --warmup "${WARMUP}" --window 6 "${profile[@]}" || { echo "(${size} failed: exit $?)"; failed=1; }
done
exit "$failed"
