#!/usr/bin/env bash
# Throughput of the trainer's own step on one NVIDIA GPU, in one unattended call of under ten minutes: GPT-2 350M
# then 124M, bfloat16 compute (float32 master weights), cuDNN flash attention, sequences of 1024, scanned layers.
# Per size: ms/step, tokens/s and MFU against the GPU's dense bfloat16 peak (bmjax.train.mfu: 989 TFLOP/s for an
# H100/H200), a jax.profiler trace of a few steps and its per-op summary (tools/trace_summary.py).
#
#     bash tools/bench_gpu.sh                          # from anywhere; runs in the repository root
#     OUT=/tmp/gpu bash tools/bench_gpu.sh             # where results go ($OUT on the device machine)
#     STEPS=60 BATCH_350M=32 LIMIT_350M_S=300 bash tools/bench_gpu.sh
#     REHEARSE=1 bash tools/bench_gpu.sh               # on a CPU: the same phases on runlocal-sized models
#
# Leaves under $OUT (default ./bench_gpu_out): results.json (one record per size: ms/step, tokens/s, MFU, the
# load average, exit status), SIZE.log (the benchmark's own output), prof/SIZE/ (the .xplane.pb and
# .trace.json.gz) and SIZE.trace_summary.txt/.json (top ops, time per group of work).
#
# Needs jax with CUDA in $PYTHON's environment and bmjax's other dependencies. Wheels carried with the working
# tree in $WHEELS (default .whl/: cp312 wheels of grain, ml-collections, array-record, portpicker, as
# experiments/gpt2_h200/README.md fetches them) are installed first, without any registry, into a temporary
# site directory. The models are fed from the builtin corpus (byte tokens, no download). Each size runs as its
# own process under its own time limit, so one's memory or compile time never stops the other.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
# Let XLA take most of the GPU up front (no growth pauses).
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}

PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${OUT:-bench_gpu_out}
WHEELS=${WHEELS:-.whl}
STEPS=${STEPS:-30}       # timed steps per size (after WARMUP untimed ones, compilation included)
WARMUP=${WARMUP:-5}
WINDOW=${WINDOW:-5}      # steps per timing window; the last window is traced again for the profile
# Global batch (sequences of 1024 tokens) per size: 32k tokens per step keeps an H200 busy and fits without remat.
BATCH_350M=${BATCH_350M:-32}
BATCH_124M=${BATCH_124M:-32}
# Per size, compilation and profile included; the two together stay under ten minutes with the set-up.
LIMIT_350M_S=${LIMIT_350M_S:-250}
LIMIT_124M_S=${LIMIT_124M_S:-190}
REHEARSE=${REHEARSE:-}

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
phase() { echo "[bench_gpu $(date -u +%H:%M:%S)] $*"; }

phase "set-up: python $PYTHON, output $OUT"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  SITE=$(mktemp -d)
  phase "installing $(ls "$WHEELS"/*.whl | wc -l) carried wheels from $WHEELS into $SITE"
  timeout 120 "$PYTHON" -m pip install -q --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl \
    || { phase "wheel install failed"; exit 1; }
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

if [ -n "$REHEARSE" ]; then
  export JAX_PLATFORMS=cpu
  MODEL_ARGS=(--config.model.attention=xla)
  SIZE_ARG=",runlocal"  # the same code path on a model a CPU runs in seconds
else
  MODEL_ARGS=(--config.model.dtype=bfloat16 --config.model.param_dtype=float32 --config.model.attention=cudnn
              --config.data.seq_len=1024)
  SIZE_ARG=""
fi

timeout 120 "$PYTHON" - "$REHEARSE" <<'PY' || { phase "environment check failed"; exit 1; }
import sys

import jax

import bmjax  # noqa: F401  (bmjax and its dependencies import)

device = jax.devices()[0]
if device.platform != "gpu" and not sys.argv[1]:
    raise SystemExit(f"bench_gpu.sh: jax sees no GPU (platform {device.platform!r}); "
                     f"install jax[cuda]=={jax.__version__} in this environment (or REHEARSE=1 on a CPU)")
print(f"jax {jax.__version__}: {jax.device_count()} x {device.device_kind}", flush=True)
PY

failed=0
for size in 350m 124m; do  # the target first
  batch_var="BATCH_${size^^}"; limit_var="LIMIT_${size^^}_S"
  batch=${!batch_var}; limit=${!limit_var}
  [ -n "$REHEARSE" ] && batch=8
  phase "GPT-2 ${size}: batch ${batch}, scanned layers, ${STEPS} timed steps, limit ${limit}s"
  rm -rf "$OUT/prof/$size"
  # Scanned layers: one layer body to compile and autotune (an unrolled model with 10 steps per call had not
  # finished compiling after 9 minutes). --json: one result line on stdout, the log on stderr.
  timeout "$limit" "$PYTHON" tools/bench_step.py --config "configs/gpt/gpt2.py:size=${size}${SIZE_ARG}" \
    "${MODEL_ARGS[@]}" --config.model.remat=none --config.model.scan_layers=true \
    --config.data.source=builtin --config.data.path= --config.data.tokenizer=byte \
    --config.data.batch_size="${batch}" --config.mesh.data=1 --config.train.steps_per_call=1 \
    --steps "$STEPS" --warmup "$WARMUP" --window "$WINDOW" --profile_dir "$OUT/prof/$size" --json \
    > "$OUT/$size.result.json" 2> "$OUT/$size.log"
  status=$?
  echo "$status" > "$OUT/$size.status"
  if [ "$status" -ne 0 ]; then
    phase "GPT-2 ${size}: failed (exit ${status}; 124 = time limit); last lines of $OUT/$size.log:"
    tail -n 5 "$OUT/$size.log"
    failed=1
  else
    phase "GPT-2 ${size}: $(cat "$OUT/$size.result.json")"
  fi
  if [ -n "$(find "$OUT/prof/$size" -name '*.trace.json.gz' 2>/dev/null)" ]; then
    phase "GPT-2 ${size}: trace summary"
    timeout 90 "$PYTHON" tools/trace_summary.py "$OUT/prof/$size" --steps "$WINDOW" --top 30 \
      --json_out "$OUT/$size.trace_summary.json" | tee "$OUT/$size.trace_summary.txt" | head -n 20
  fi
done

phase "results.json"
timeout 120 "$PYTHON" - "$OUT" "$REHEARSE" "$BATCH_350M" "$BATCH_124M" <<'PY'
import datetime
import importlib.util
import json
import os
import pathlib
import sys

import jax

from bmjax.data.mlm import max_predictions
from bmjax.models import flops, model_config
from bmjax.train import mfu

out, rehearse = pathlib.Path(sys.argv[1]), bool(sys.argv[2])
batches = {"350m": int(sys.argv[3]), "124m": int(sys.argv[4])}
spec = importlib.util.spec_from_file_location("gpt2_config", "configs/gpt/gpt2.py")
gpt2 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpt2)
device = jax.devices()[0]
records = []
for size in ("350m", "124m"):
    config = gpt2.get_config(f"size={size}" + (",runlocal" if rehearse else ""))
    record = {"size": size, "status": int((out / f"{size}.status").read_text()),
              "seq_len": int(config.data.seq_len), "batch_size": 8 if rehearse else batches[size]}
    result = out / f"{size}.result.json"
    lines = result.read_text().strip().splitlines() if result.is_file() else []
    if record["status"] == 0 and lines:
        record.update(json.loads(lines[-1]))
        tokens = record["batch_size"] * record["seq_len"]
        per_token = flops.train_flops_per_token(model_config(config.model), record["seq_len"], flops.output_fraction(
            config.data.task, record["seq_len"], max_predictions(record["seq_len"])))
        peak = mfu.total_peak_flops("bfloat16" if not rehearse else config.model.dtype)
        record["tokens_per_s"] = tokens / (record["ms_per_step"] / 1e3)
        record["tflop_per_step"] = per_token * tokens / 1e12
        record["mfu"] = record["tokens_per_s"] * per_token / peak
        record["peak_tflops"] = peak / 1e12
    summary = out / f"{size}.trace_summary.json"
    if summary.is_file() and summary.stat().st_size:
        record["trace_groups_ms_per_step"] = {g: v["ms"] for g, v in json.loads(summary.read_text())["groups"].items()}
    records.append(record)
env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "jax": jax.__version__, "device": f"{jax.device_count()} x {device.device_kind}",
       "load_average": os.getloadavg()[0], "rehearsal": rehearse}
try:
    import flax
    env["flax"] = flax.__version__
except ImportError:
    pass
(out / "results.json").write_text(json.dumps({"environment": env, "sizes": records}, indent=2) + "\n")
for r in records:
    if "mfu" in r:
        print(f"GPT-2 {r['size']}: {r['ms_per_step']:.1f} ms/step, {r['tokens_per_s']:,.0f} tokens/s, "
              f"MFU {r['mfu']:.1%} ({r['tflop_per_step']:.1f} TFLOP/step)", flush=True)
    else:
        print(f"GPT-2 {r['size']}: no result (exit {r['status']})", flush=True)
PY
phase "done (failed=${failed}); results in $OUT"
exit "$failed"
