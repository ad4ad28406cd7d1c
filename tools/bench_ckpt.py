"""What asynchronous checkpointing costs the training loop: steady-state ms/step with and without saves.

    python tools/bench_ckpt.py --config configs/gpt/tiny.py [--ckpt_every 10] [--rounds 5] [--window 50]

Runs the trainer's own jitted step (same shardings, same donation) on batches prepared up front, and times
windows of `--window` steps, alternating windows without checkpoints and windows that save a checkpoint every
`--ckpt_every` steps through the trainer's Checkpointer (state + data iterator, asynchronous), in ABBA order, so
both see the same machine load. Each "with" window ends by waiting for its last save, so the cost of a save that
outlives its window is counted too. Reports the median wall-clock ms/step of each and the overhead in percent,
the part of it the loop spends waiting inside save() (orbax's copy to the host; the rest is the background
writes taking cores from the step, which only happens where the host's cores also compute, as on CPU), and the
same for the process's CPU time (all its threads, the background writer's included), which other jobs on a
shared machine disturb less. Writes checkpoints to a throwaway directory.
"""
import os
import shutil
import statistics
import sys
import tempfile
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from bmjax import checkpoint as ckpt_lib
from bmjax import runtime, validate
from bmjax.cli import common
from bmjax.train import loop, setup

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file: path.py[:args].")
_CKPT_EVERY = flags.DEFINE_integer("ckpt_every", 10, "Steps between checkpoints in the timed windows.")
_WINDOW = flags.DEFINE_integer("window", 50, "Steps per timed window (a multiple of --ckpt_every).")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Pairs of windows (without, with checkpoints).")
_WARMUP = flags.DEFINE_integer("warmup", 10, "Untimed steps first (compilation included).")


def run_window(step_fn, state, feeds, checkpointer, data_iter, first_step, ckpt_every):
    """Steps as the trainer's loop runs them (at most 3 in flight); saves every ckpt_every when a
    checkpointer is given. Returns (state, wall seconds, CPU seconds, seconds the loop spent inside save)."""
    pending, in_save = [], 0.0
    start, cpu_start = time.perf_counter(), time.process_time()
    for i, feed in enumerate(feeds):
        state, out = step_fn(state, feed)
        pending.append(out)
        if len(pending) > 2:
            jax.block_until_ready(pending[-3])
        step = first_step + i + 1
        if checkpointer is not None and step % ckpt_every == 0:
            jax.block_until_ready(state)  # save waits for the step anyway; time only the save itself
            save_start = time.perf_counter()
            checkpointer.save(step, state, data_iter)
            in_save += time.perf_counter() - save_start
    jax.block_until_ready(pending[-1])
    if checkpointer is not None:
        checkpointer.wait()
    return state, time.perf_counter() - start, time.process_time() - cpu_start, in_save


def main(argv):
    del argv
    common.exit_on_config_error(benchmark)  # a bad config: one line, as bmjax-train prints it


def benchmark():
    logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    window, ckpt_every = _WINDOW.value, _CKPT_EVERY.value
    if int(config.train.steps_per_call) != 1 or window % ckpt_every:
        sys.exit("error: needs train.steps_per_call=1 and --window a multiple of --ckpt_every")
    workdir = tempfile.mkdtemp(prefix="bmjax-bench-ckpt-")
    runtime.set_process_defaults()  # PJRT_NPROC and malloc, as bmjax-train, before jax starts its backend
    runtime.use_cpu_devices(config)  # as the trainer does, before any device is touched
    checked = validate.validate_config(config, workdir)  # as the trainer: its config, mesh, tokenizer and model
    config, mesh = checked.config, checked.mesh
    data, _ = setup.load_data(config, workdir, mesh, checked.rules, checked.tokenizer)
    training = setup.build_training(config, mesh, int(config.train.steps), rules=checked.rules,
                                    abstract_model=checked.abstract_model)
    step_fn, feed_sharding = training.step_fn, training.feed_sharding
    state = training.init(int(config.train.seed))
    checkpointer = ckpt_lib.Checkpointer(workdir, keep=int(config.train.keep_ckpts))

    # Batches prepared up front: the timing is the step's and the checkpoint's, not the input pipeline's.
    feeds = [loop.to_global(next(data.train_iter), feed_sharding, int(config.data.seq_len)) for _ in range(window)]
    state, _, _, _ = run_window(step_fn, state, feeds[:_WARMUP.value], checkpointer, data.train_iter, 0, 1)

    step, times = _WARMUP.value, {"plain": [], "saving": [], "plain_cpu": [], "saving_cpu": []}
    in_save = []  # per "with" window: the loop's time inside save() per step
    for i in range(_ROUNDS.value):
        order = (("plain", None), ("saving", checkpointer))
        for name, ckpt in order if i % 2 == 0 else order[::-1]:  # ABBA order: a drifting load favours neither
            state, wall, cpu, saving = run_window(step_fn, state, feeds, ckpt, data.train_iter, step, ckpt_every)
            if ckpt is not None:
                in_save.append(saving / window)
            times[name].append(wall / window)
            times[name + "_cpu"].append(cpu / window)
            step += window
    checkpointer.close()
    shutil.rmtree(workdir, ignore_errors=True)

    print(f"devices {jax.device_count()}, {window}-step windows x {_ROUNDS.value} rounds, "
          f"a checkpoint every {ckpt_every} steps, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for label, suffix in (("wall", ""), ("CPU", "_cpu")):
        without, with_ckpt = (statistics.median(times[name + suffix]) * 1e3 for name in ("plain", "saving"))
        for name, value in (("without", without), ("with", with_ckpt)):
            windows = ", ".join(f"{t * 1e3:.1f}" for t in times[("plain" if name == "without" else "saving") + suffix])
            print(f"{label:4s} ms/step {name + ' checkpoints:':21s} {value:8.2f}  (windows: {windows})")
        print(f"{label:4s} overhead: {100 * (with_ckpt - without) / without:+.1f}% of step time")
        if label == "wall":
            blocked = statistics.median(in_save) * 1e3
            print(f"     of which the loop waits inside save() (the host copy): {blocked:.2f} ms/step, "
                  f"{100 * blocked / without:.1f}% of step time; the rest is the background writes' share of the cores")
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main, flags_parser=common.parse_config_flags)
