"""What one more data.eval_sets entry costs: seconds per eval pass of each set against the run's train step time.

Builds the run exactly as bmjax-train does (validate, load_data, build_training) for configs/gpt/tiny.py with two
eval sets (the builtin corpus's held-out files and data/tinyshakespeare.txt's held-out tail), then times, after
one untimed call each (compilation), REPEATS train steps and REPEATS passes over the held-out split and over each
set (train.eval_steps batches each, as loop.evaluate scores them: packing included). Prints one JSON object.

    PYTHONPATH=. python experiments/evals/eval_sets_overhead.py [--eval_steps K] [--repeats R]   (from the root)
"""
import argparse
import json
import os
import pathlib
import statistics
import tempfile
import time

REPO = pathlib.Path.cwd()  # run from the repository's root (run.sh does)


def load_config(path: str):
    """configs/gpt/tiny.py's get_config(), as bmjax-train loads it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("config", REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--eval_steps", type=int, default=10)  # tiny.py's train.eval_steps
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from bmjax import runtime

    runtime.set_process_defaults()  # what bmjax-train does at start-up
    config = load_config("configs/gpt/tiny.py")
    runtime.use_cpu_devices(config)  # before jax starts: the CPU devices bmjax-train would use

    import jax

    from bmjax import validate
    from bmjax.parallel.batches import to_global
    from bmjax.train import loop, setup

    config.data.eval_sets = f"stdlib=builtin;shakespeare=text:{REPO / 'data/tinyshakespeare.txt'}"
    config.train.eval_steps = args.eval_steps
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="eval-sets-overhead-"))
    checked = validate.validate_config(config, workdir)
    data, _ = setup.load_data(config, str(workdir), checked.mesh, checked.rules)
    training = setup.build_training(config, checked.mesh, setup.total_train_steps(config, data), rules=checked.rules)
    state = training.init(0)
    seq_len = int(config.data.seq_len)

    def train_step():
        nonlocal state
        state, metrics = training.step_fn(state, to_global(next(data.train_iter), training.feed_sharding, seq_len))
        jax.block_until_ready(metrics)

    def timed(fn) -> float:
        fn()  # compiles
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
        return statistics.median(seconds)

    def eval_pass(batches_fn):
        def run():
            total = loop._summed_metrics(training.eval_step, state, batches_fn(), training.batch_sharding, seq_len)
            jax.block_until_ready(total)
        return run

    def eval_set(index):
        return lambda: data.eval_sets()[index][1]

    step = timed(train_step)
    held_out = timed(eval_pass(data.eval_batches))
    sets = {name: timed(eval_pass(eval_set(i))) for i, (name, _) in enumerate(data.eval_sets())}
    print(json.dumps({"config": "configs/gpt/tiny.py", "eval_steps": args.eval_steps, "repeats": args.repeats,
                      "batch": [int(config.data.batch_size), seq_len], "devices": len(jax.devices()),
                      "device": str(jax.devices()[0].device_kind), "train_step_s": step, "held_out_pass_s": held_out,
                      "eval_set_pass_s": sets, "load_average": os.getloadavg()}))


if __name__ == "__main__":
    main()
