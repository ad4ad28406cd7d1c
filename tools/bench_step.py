"""Steady-state speed of the train step: ms/step, tokens/s and MFU for a config.

    python tools/bench_step.py --config configs/gpt/shakespeare_char.py \
        --config.data.path=data/tinyshakespeare.txt [--steps 200] [--warmup 20]

Runs the exact jitted step the trainer runs (same shardings, same `train.steps_per_call` fusion) on real
batches from the config's pipeline, after a warm-up that includes compilation, and reports the median time per
step over timing windows. Nothing is written to disk except a throwaway workdir for the tokenizer.
"""
import json
import os
import resource
import statistics
import sys
import tempfile
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from bmjax import runtime, validate
from bmjax.cli import common
from bmjax.data.mlm import max_predictions
from bmjax.errors import ConfigError
from bmjax.models import flops, model_config
from bmjax.train import loop, mfu, setup

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file: path.py[:args].")
_STEPS = flags.DEFINE_integer("steps", 200, "Timed train steps.")
_WARMUP = flags.DEFINE_integer("warmup", 20, "Untimed steps first (compilation included).")
_WINDOW = flags.DEFINE_integer("window", 20, "Steps per timing window; the median window is reported.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON line (read by tools/bench_compare.py) instead of text.")
_PROFILE_DIR = flags.DEFINE_string("profile_dir", "", "If set, also trace the last timing window's steps with "
                                   "jax.profiler into this directory (for TensorBoard/XProf), after the timing.")


def main(argv):
    del argv
    with tempfile.TemporaryDirectory(prefix="bmjax-bench-") as workdir:
        common.exit_on_config_error(lambda: benchmark(workdir))  # a bad config: one line, as bmjax-train prints it


def benchmark(workdir: str):
    config = _CONFIG.value
    k = int(config.train.steps_per_call)
    if _STEPS.value // k < max(_WINDOW.value // k, 1):
        raise ConfigError("--steps", f"{_STEPS.value} timed steps fill no timing window of --window="
                          f"{_WINDOW.value} steps (train.steps_per_call={k}): give --steps >= --window")
    runtime.set_process_defaults()  # PJRT_NPROC and malloc, as bmjax-train, before jax starts its backend
    runtime.use_cpu_devices(config)  # as the trainer does, before any device is touched
    checked = validate.validate_config(config, workdir)  # as the trainer: its config, mesh, tokenizer and model
    config, mesh = checked.config, checked.mesh
    data, _ = setup.load_data(config, workdir, mesh, checked.rules, checked.tokenizer)  # data.task's pipeline
    training = setup.build_training(config, mesh, setup.total_train_steps(config, data), rules=checked.rules,
                                    abstract_model=checked.abstract_model)
    step_fn, feed_sharding = training.step_fn, training.feed_sharding
    state = training.init(int(config.train.seed))

    # Batches are prepared up front so the timing is the step's, not the input pipeline's.
    calls = (_WARMUP.value + _STEPS.value) // k
    feeds = []
    for _ in range(calls):
        batches = [next(data.train_iter) for _ in range(k)]
        batch = loop.stack_batches(batches) if k > 1 else batches[0]
        feeds.append(loop.to_global(batch, feed_sharding, int(config.data.seq_len)))

    warm_calls = _WARMUP.value // k
    for feed in feeds[:warm_calls]:
        state, out = step_fn(state, feed)
    jax.block_until_ready(out)

    window_calls = max(_WINDOW.value // k, 1)
    times = []
    # CPU time and page faults of this process over the timed steps, and the machine's load: on a shared
    # machine the wall time alone does not tell a slow step from a busy neighbour.
    load_before = os.getloadavg()[0]
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    timed = feeds[warm_calls:]
    for start in range(0, len(timed) - window_calls + 1, window_calls):
        t0 = time.perf_counter()
        for feed in timed[start:start + window_calls]:
            state, out = step_fn(state, feed)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / (window_calls * k))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    if _PROFILE_DIR.value:  # traced separately so the tracer's overhead stays out of the figures
        with jax.profiler.trace(_PROFILE_DIR.value):
            for feed in timed[-window_calls:]:
                state, _ = step_fn(state, feed)
            jax.block_until_ready(state)
    timed_steps = len(times) * window_calls * k
    cpu_seconds = usage.ru_utime + usage.ru_stime - usage_before.ru_utime - usage_before.ru_stime
    faults = usage.ru_minflt + usage.ru_majflt - usage_before.ru_minflt - usage_before.ru_majflt
    ms = statistics.median(times) * 1e3
    tokens_per_step = int(config.data.batch_size) * int(config.data.seq_len)
    tokens_per_sec = tokens_per_step / (ms / 1e3)
    seq_len = int(config.data.seq_len)
    flops_per_token = flops.train_flops_per_token(model_config(config.model), seq_len, flops.output_fraction(
        config.data.task, seq_len, max_predictions(seq_len)))
    peak = mfu.total_peak_flops(config.model.dtype, refresh=True)  # a quiet moment raises the cached peak
    loss = float(np.asarray(out["loss"]).reshape(-1)[-1])
    if _JSON.value:
        print(json.dumps({"ms_per_step": ms, "cpu_ms_per_step": cpu_seconds / timed_steps * 1e3,
                          "page_faults_per_step": faults / timed_steps, "timed_steps": timed_steps,
                          "steps_per_call": k, "devices": jax.device_count(), "load_before": load_before,
                          "load_after": os.getloadavg()[0], "loss": loss}), flush=True)
        return
    print(f"devices {jax.device_count()} ({jax.devices()[0].device_kind}), mesh {dict(mesh.shape)}, "
          f"steps_per_call {k}")
    print(f"ms/step {ms:.2f} (min {min(times) * 1e3:.2f}, max {max(times) * 1e3:.2f}, {len(times)} windows)")
    print(f"cpu ms/step {cpu_seconds / timed_steps * 1e3:.2f}  page faults/step {faults / timed_steps:.0f}  "
          f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
    print(f"tokens/s {tokens_per_sec:,.0f}  GFLOP/step {flops_per_token * tokens_per_step / 1e9:.2f}  "
          f"peak {peak / 1e9:,.1f} GFLOP/s  MFU {tokens_per_sec * flops_per_token / peak:.1%}  loss {loss:.4f}")
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main, flags_parser=common.parse_config_flags)
