#!/usr/bin/env bash
# Throughput of the trainer's own step on one NVIDIA GPU: GPT-2 124M and 350M, bfloat16 compute (float32
# master weights), cuDNN flash attention, sequences of 1024. Prints ms/step, tokens/s and MFU against the
# GPU's dense bfloat16 peak (bmjax.train.mfu: 989 TFLOP/s for an H100/H200). Target: >= 45% MFU for 350M.
#
#     bash tools/bench_gpu.sh                 # from anywhere; runs in the repository root
#     PYTHON=/path/to/python STEPS=200 bash tools/bench_gpu.sh
#
# Needs jax with CUDA (pip install "jax[cuda12]==<the pinned jax>") in $PYTHON's environment; the models are
# built from configs/gpt/gpt2.py, fed from the builtin corpus (byte tokens, no download). Each size runs as its
# own process so one's memory never limits the other; nothing is written outside a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
STEPS=${STEPS:-100}     # timed steps per size (after WARMUP untimed ones, compilation included)
WARMUP=${WARMUP:-20}
# Global batch (sequences of 1024 tokens) per size: enough tokens per step to keep an H200 busy.
BATCH_124M=${BATCH_124M:-64}
BATCH_350M=${BATCH_350M:-32}

# Let XLA take most of the GPU up front (no growth pauses) and overlap what it can.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"

"$PYTHON" - <<'PY'
import jax

device = jax.devices()[0]
if device.platform != "gpu":
    raise SystemExit(f"bench_gpu.sh: jax sees no GPU (platform {device.platform!r}); "
                     f"install jax[cuda12]=={jax.__version__} in this environment")
print(f"jax {jax.__version__}: {jax.device_count()} x {device.device_kind}", flush=True)
PY

for size in 124m 350m; do
  batch_var="BATCH_${size^^}"
  batch=${!batch_var}
  echo "=== GPT-2 ${size}: batch ${batch} x 1024 tokens, bfloat16, cudnn attention, 10 steps per call"
  "$PYTHON" tools/bench_step.py --config "configs/gpt/gpt2.py:size=${size}" \
    --config.model.dtype=bfloat16 --config.model.param_dtype=float32 --config.model.attention=cudnn \
    --config.model.remat=none --config.data.seq_len=1024 --config.data.batch_size="${batch}" \
    --config.mesh.data=1 --config.train.steps_per_call=10 \
    --steps "${STEPS}" --warmup "${WARMUP}" --window 20
done
