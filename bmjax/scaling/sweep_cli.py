"""The sweep CLI: expand a sweep file into runs and launch them.

    bmjax-sweep --config configs/sweeps/FILE.py[:ARG] --workdir W [--launcher local|print|slurm] [--only I]
                [--dry_run] [--slurm_args "--nodes=1 --time=4:00:00"]
    python -m bmjax.scaling.sweep_cli ...      (the same)

Each run trains in W/<name>, its name made from its overrides (bmjax/scaling/sweep.py).
- local: runs them one after another (`python -m bmjax.main`). Re-running skips the runs whose summary says
  finished and resumes an interrupted one from its newest checkpoint. A run that fails is reported and the
  sweep goes on (exit 1 at the end); a preempted one (SIGTERM, exit 143) stops the sweep with 143.
- print: one bmjax-train command per run, for any scheduler.
- slurm: one job array through tools/slurm/train.sbatch (`--sbatch_script`), task i training run i; the runs'
  arguments go to W/slurm_runs.txt, one line per run.
Every launcher (re)builds W/results.csv from the summaries found, so `--launcher print` also collects the
results of runs a scheduler ran. --dry_run lists the runs (resolved steps included) and launches nothing.
A bad sweep (an unknown key, a value of the wrong type) prints one line and exits 2 before any run starts.
"""
import os
import pathlib
import shlex
import signal
import subprocess
import sys

from absl import flags

from bmjax.cli import fail
from bmjax.errors import ConfigError
from bmjax.scaling import sweep as sweep_lib

FLAGS = flags.FlagValues()  # its own set: bmjax.main's --config is a config flag, this one a plain path
flags.DEFINE_string("config", None, "Sweep file: path.py[:arg] with get_config(arg) and get_sweep().",
                    flag_values=FLAGS)
flags.DEFINE_string("workdir", None, "Sweep directory: one workdir per run, and results.csv.", flag_values=FLAGS)
flags.DEFINE_enum("launcher", "local", ["local", "print", "slurm"], "How to run the runs.", flag_values=FLAGS)
flags.DEFINE_integer("only", None, "Run only the run of this index.", flag_values=FLAGS)
flags.DEFINE_bool("dry_run", False, "List the runs; launch nothing.", flag_values=FLAGS)
flags.DEFINE_string("sbatch_script", "tools/slurm/train.sbatch", "slurm: the batch script (one run per task).",
                    flag_values=FLAGS)
flags.DEFINE_string("slurm_args", "", "slurm: extra sbatch arguments, e.g. '--nodes=1 --time=4:00:00'.",
                    flag_values=FLAGS)

PREEMPTED_EXIT_CODE = 143  # bmjax.train.faults.PREEMPTED_EXIT_CODE, without importing jax here


def config_overrides(run) -> list[str]:
    return [f"--config.{k}={sweep_lib.format_value(v)}" for k, v in run.args.items()]


def train_args(sweep, run, workdir: pathlib.Path) -> list[str]:
    """bmjax-train's arguments for one run."""
    return ["--config", sweep.config_arg, "--workdir", str(workdir / run.name), *config_overrides(run)]


def run_local(sweep, runs, workdir: pathlib.Path) -> int:
    failed = []
    for run in runs:
        summary = sweep_lib.read_summary(workdir / run.name)
        if summary is not None and summary.get("status") == "finished":
            print(f"[{run.index + 1}/{len(sweep.runs)}] {run.name}: finished, skipped", flush=True)
            continue
        state = "resuming" if (workdir / run.name / "checkpoints").exists() else "starting"
        print(f"[{run.index + 1}/{len(sweep.runs)}] {run.name}: {state}", flush=True)
        code = _run_child([sys.executable, "-m", "bmjax.main", *train_args(sweep, run, workdir)])
        sweep_lib.write_results(sweep, workdir)
        if code == PREEMPTED_EXIT_CODE:
            print(f"{run.name}: preempted; run the same bmjax-sweep command again to resume", flush=True)
            return PREEMPTED_EXIT_CODE
        if code != 0:
            print(f"{run.name}: failed with exit code {code}", file=sys.stderr, flush=True)
            failed.append(run.name)
    if failed:
        print(f"error: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr, flush=True)
        return 1
    return 0


def _run_child(command: list[str]) -> int:
    """Runs one training process; a SIGTERM sent to the sweep alone is passed on, so the run checkpoints."""
    child = subprocess.Popen(command)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signal.SIGTERM))
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_print(sweep, runs, workdir: pathlib.Path) -> int:
    for run in runs:
        print(shlex.join(["bmjax-train", *train_args(sweep, run, workdir)]), flush=True)
    return 0


def run_slurm(sweep, runs, workdir: pathlib.Path) -> int:
    """One array job; task i reads line i of W/slurm_runs.txt (all the sweep's runs, so indices match)."""
    script = FLAGS.sbatch_script
    if not os.path.isfile(script):
        fail(f"--sbatch_script: {script!r} does not exist (submit from the repository root)")
    runs_file = workdir / "slurm_runs.txt"
    runs_file.write_text("".join(shlex.join([sweep.config_arg, str(workdir / run.name), *config_overrides(run)]) + "\n"
                                 for run in sweep.runs))  # train.sbatch's CONFIG WORKDIR [--config.KEY=VALUE ...]
    indices = ",".join(str(run.index) for run in runs)
    (workdir / "slurm").mkdir(exist_ok=True)
    command = ["sbatch", f"--array={indices}", f"--job-name={sweep.name}",
               f"--output={workdir / 'slurm' / '%x-%A_%a.out'}", *shlex.split(FLAGS.slurm_args),
               script, "--runs", str(runs_file)]
    print(shlex.join(command), flush=True)
    try:
        return subprocess.run(command).returncode
    except FileNotFoundError:
        fail("--launcher=slurm: sbatch is not on PATH")


LAUNCHERS = {"local": run_local, "print": run_print, "slurm": run_slurm}


def main(argv: list[str]) -> int:
    FLAGS.unparse_flags()  # main() may run more than once in a process (tests): no value carries over
    try:
        rest = FLAGS(argv)
    except flags.Error as e:
        fail(str(e).splitlines()[0])
    if len(rest) > 1:
        fail(f"unexpected arguments: {' '.join(rest[1:])}")
    if not FLAGS.config:
        fail("--config: required (a sweep file such as configs/sweeps/chinchilla_isoflop.py)")
    if not FLAGS.workdir:
        fail("--workdir: required (the sweep's directory)")
    try:
        sweep = sweep_lib.load_sweep(FLAGS.config)
    except ConfigError as e:
        fail(str(e))
    runs = sweep.runs
    if FLAGS.only is not None:
        if not 0 <= FLAGS.only < len(runs):
            fail(f"--only: {FLAGS.only} is not a run index of this sweep (0 .. {len(runs) - 1})")
        runs = [runs[FLAGS.only]]
    workdir = pathlib.Path(FLAGS.workdir)
    if FLAGS.dry_run:
        for run in runs:
            print(f"{run.index}\t{run.name}\tsteps={run.steps}", flush=True)
        return 0
    workdir.mkdir(parents=True, exist_ok=True)
    code = LAUNCHERS[FLAGS.launcher](sweep, runs, workdir)
    sweep_lib.write_results(sweep, workdir)
    return code


def run_main():
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    run_main()
