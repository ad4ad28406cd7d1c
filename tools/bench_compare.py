"""bmjax's train step against the PyTorch nanoGPT-style loop on the shakespeare_char recipe, side by side.

    python tools/bench_compare.py --data data/tinyshakespeare.txt [--rounds 5]
    python tools/bench_compare.py --data ... --jax_arg=--config.train.steps_per_call=1   # any bench_step flag

The machine is shared and noisy, so the two are measured in alternating runs (A B, B A, A B, ...), each a
fresh process: tools/bench_step.py (the trainer's own jitted step, `configs/gpt/shakespeare_char.py`) and
tools/bench_nanogpt_torch.py (2 threads). Every run reports its median wall ms/step, its CPU ms/step (the work
done, which other jobs disturb much less than wall time) and the load average around it. The summary is the
median over runs of each, and the ratio torch / bmjax of the medians and of each round's pair (> 1: bmjax is
faster).
"""
import json
import os
import pathlib
import statistics
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's bmjax comes first

from absl import flags  # noqa: E402

from bmjax.cli import common  # noqa: E402

FLAGS = flags.FlagValues()
flags.DEFINE_string("data", "data/tinyshakespeare.txt", "The tinyshakespeare text file.", flag_values=FLAGS)
flags.DEFINE_integer("rounds", 5, "Pairs of runs.", flag_values=FLAGS)
flags.DEFINE_integer("jax_steps", 100, "Timed steps per bmjax run.", flag_values=FLAGS)
flags.DEFINE_integer("torch_steps", 40, "Timed iterations per torch run.", flag_values=FLAGS)
flags.DEFINE_integer("threads", 2, "Torch threads (nanoGPT's CPU recipe: 2).", flag_values=FLAGS)
flags.DEFINE_multi_string("jax_arg", [], "Extra flag for bench_step.py (repeatable).", flag_values=FLAGS)


def run_json(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main():
    common.parse_or_exit(FLAGS, sys.argv[1:], usage=__doc__)

    data = str(pathlib.Path(FLAGS.data).resolve())
    python = sys.executable
    jax_cmd = [python, "tools/bench_step.py", "--config", "configs/gpt/shakespeare_char.py",
               f"--config.data.path={data}", f"--steps={FLAGS.jax_steps}", "--warmup=50", "--window=50",
               "--json", *FLAGS.jax_arg]
    torch_cmd = [python, "tools/bench_nanogpt_torch.py", "--data", data, f"--steps={FLAGS.torch_steps}",
                 "--warmup=10", f"--threads={FLAGS.threads}", "--json"]

    runs = {"bmjax": [], "torch": []}
    print(f"{'round':>5} {'which':>6} {'ms/step':>8} {'cpu ms':>8} {'load':>12}", flush=True)
    for r in range(FLAGS.rounds):
        order = ["bmjax", "torch"] if r % 2 == 0 else ["torch", "bmjax"]
        for which in order:
            res = run_json(jax_cmd if which == "bmjax" else torch_cmd)
            runs[which].append(res)
            print(f"{r:>5} {which:>6} {res['ms_per_step']:8.1f} {res['cpu_ms_per_step']:8.1f} "
                  f"{res['load_before']:5.2f}->{res['load_after']:5.2f}", flush=True)

    def med(which, key):
        return statistics.median(res[key] for res in runs[which])

    jax_ms, torch_ms = med("bmjax", "ms_per_step"), med("torch", "ms_per_step")
    pair_ratios = [t["ms_per_step"] / j["ms_per_step"] for t, j in zip(runs["torch"], runs["bmjax"])]
    loads = [res[k] for rs in runs.values() for res in rs for k in ("load_before", "load_after")]
    print(f"\nmedian ms/step: bmjax {jax_ms:.1f}, torch {torch_ms:.1f}  ->  torch/bmjax {torch_ms / jax_ms:.2f}x "
          f"(per-round pairs: median {statistics.median(pair_ratios):.2f}x, "
          f"range {min(pair_ratios):.2f}-{max(pair_ratios):.2f})")
    print(f"median cpu ms/step: bmjax {med('bmjax', 'cpu_ms_per_step'):.1f}, "
          f"torch {med('torch', 'cpu_ms_per_step'):.1f}  ->  "
          f"torch/bmjax {med('torch', 'cpu_ms_per_step') / med('bmjax', 'cpu_ms_per_step'):.2f}x")
    print(f"load average (1 min) over the runs: {min(loads):.2f}-{max(loads):.2f}, median {statistics.median(loads):.2f}"
          f" on {os.cpu_count()} cores; steps_per_call {runs['bmjax'][0]['steps_per_call']}")


if __name__ == "__main__":
    main()
