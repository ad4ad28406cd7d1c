"""bmjax-sweep: expand a sweep file into runs and launch them.

    bmjax-sweep --config configs/sweeps/FILE.py[:ARG] --workdir W [--launcher local|print|slurm] [--only I]
                [--dry_run] [--slurm_args "--nodes=1 --time=4:00:00"]
    bmjax-sweep --config configs/sweeps/small_scaling.py --workdir runs/small --launcher print
    python -m bmjax.cli.sweep ...      (the same)

Each run trains in W/<name>, its name made from its overrides (bmjax/scaling/sweep.py).
- local: runs them one after another (`python -m bmjax.cli.train`). Re-running skips the runs whose summary says
  finished and resumes an interrupted one from its newest checkpoint. A run that fails is reported and the
  sweep goes on (exit 1 at the end); a preempted one (SIGTERM, exit 143) stops the sweep with 143.
- print: one bmjax-train command per run, for any scheduler.
- slurm: one job array through tools/slurm/train.sbatch (`--sbatch_script`), task i training run i; the runs'
  arguments go to W/slurm_runs.txt, one line per run.
Every launcher (re)builds W/results.csv from the summaries found, so `--launcher print` also collects the
results of runs a scheduler ran. --dry_run lists the runs (resolved steps included) and launches nothing.

A branching sweep (`ladder.flops` / `ladder.tokens`, bmjax/scaling/sweep.py) lists each parent before its
branches, and every launcher keeps that order: local trains a parent, then its branches (a branch whose parent
did not finish is not started: exit 1), and resumes either after a kill; print prints them in that order; slurm
submits the runs without a parent as one array and each parent's branches as a second array held until the
parent's task has succeeded (`--dependency=afterok:JOBID_TASK`). local and --dry_run also print the steps and
counted FLOPs trained against the same grid trained as independent runs.
--eval_tasks NAMES (local) runs bmjax-eval's harness tasks on each run once it has finished (and on finished runs
without scores); an unknown task is one line and exit 2 before any run starts.
A bad sweep (an unknown key, a value of the wrong type) prints one line and exits 2 before any run starts.
"""
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys

from absl import flags

from bmjax import workdir as workdir_lib
from bmjax.cli import common
from bmjax.errors import ConfigError
from bmjax.scaling import sweep as sweep_lib


def define_flags(argv: list[str]) -> flags.FlagValues:
    fv = flags.FlagValues()  # --config is a plain path here (a sweep file), not bmjax-train's config flag
    flags.DEFINE_string("config", None, "Sweep file: path.py[:arg] with get_config(arg) and get_sweep().",
                        flag_values=fv)
    flags.DEFINE_string("workdir", None, "Sweep directory: one workdir per run, and results.csv.", flag_values=fv)
    flags.DEFINE_enum("launcher", "local", ["local", "print", "slurm"], "How to run the runs.", flag_values=fv)
    flags.DEFINE_integer("only", None, "Run only the run of this index.", flag_values=fv)
    flags.DEFINE_bool("dry_run", False, "List the runs; launch nothing.", flag_values=fv)
    flags.DEFINE_string("sbatch_script", "tools/slurm/train.sbatch", "slurm: the batch script (one run per task).",
                        flag_values=fv)
    flags.DEFINE_string("slurm_args", "", "slurm: extra sbatch arguments, e.g. '--nodes=1 --time=4:00:00'.",
                        flag_values=fv)
    flags.DEFINE_list("eval_tasks", None, "local: bmjax-eval's lm-evaluation-harness tasks, run on each run once it "
                      "has finished (its summary.json's lm_eval).", flag_values=fv)
    return fv


def config_overrides(run, workdir: pathlib.Path) -> list[str]:
    args = dict(run.args)
    if run.parent is not None:
        args["train.branch_from"] = f"{(workdir / run.parent).absolute()}@{run.branch_step}"
    return [f"--config.{k}={sweep_lib.format_value(v)}" for k, v in args.items()]


def train_args(sweep, run, workdir: pathlib.Path) -> list[str]:
    """bmjax-train's arguments for one run."""
    return ["--config", sweep.config_arg, "--workdir", str(workdir / run.name), *config_overrides(run, workdir)]


def finished(workdir: pathlib.Path) -> bool:
    summary = workdir_lib.read_summary(workdir)
    return summary is not None and summary.get("status") == "finished"


def run_local(fv, sweep, runs, workdir: pathlib.Path) -> int:
    if any(run.parent is not None for run in sweep.runs):
        print(f"branching: {sweep_lib.describe_cost(sweep)}", flush=True)
    failed = []
    for run in runs:
        if finished(workdir / run.name):
            print(f"[{run.index + 1}/{len(sweep.runs)}] {run.name}: finished, skipped", flush=True)
            summary = workdir_lib.read_summary(workdir / run.name)
            if fv.eval_tasks and summary.get("lm_eval_step") != summary["steps"] \
                    and _evaluate(fv, workdir / run.name) != 0:  # no scores yet, or of an earlier step
                failed.append(run.name)
            continue
        if run.parent is not None and not finished(workdir / run.parent):
            print(f"[{run.index + 1}/{len(sweep.runs)}] {run.name}: not started, its parent {run.parent} has not "
                  "finished", file=sys.stderr, flush=True)
            failed.append(run.name)
            continue
        state = "resuming" if workdir_lib.checkpoint_dir(workdir / run.name).exists() else "starting"
        print(f"[{run.index + 1}/{len(sweep.runs)}] {run.name}: {state}", flush=True)
        code = _run_child([sys.executable, "-m", "bmjax.cli.train", *train_args(sweep, run, workdir)])
        sweep_lib.write_results(sweep, workdir)
        if code == common.PREEMPTED:
            print(f"{run.name}: preempted; run the same bmjax-sweep command again to resume", flush=True)
            return common.PREEMPTED
        if code != 0:
            print(f"{run.name}: failed with exit code {code}", file=sys.stderr, flush=True)
            failed.append(run.name)
        elif fv.eval_tasks and _evaluate(fv, workdir / run.name) != 0:
            failed.append(run.name)
    if failed:
        return common.error(f"{len(failed)} run(s) failed: {', '.join(failed)}", common.FAILED)
    return common.OK


def _evaluate(fv, run_dir: pathlib.Path) -> int:
    """bmjax-eval of --eval_tasks on a finished run; its exit code (a failure is reported, the sweep goes on)."""
    code = _run_child([sys.executable, "-m", "bmjax.cli.eval", "--workdir", str(run_dir), "--tasks",
                       ",".join(fv.eval_tasks)])
    if code != 0:
        print(f"{run_dir.name}: bmjax-eval failed with exit code {code}", file=sys.stderr, flush=True)
    return code


def _run_child(command: list[str]) -> int:
    """Runs one training process; a SIGTERM sent to the sweep alone is passed on, so the run checkpoints."""
    child = subprocess.Popen(command)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signal.SIGTERM))
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_print(fv, sweep, runs, workdir: pathlib.Path) -> int:
    for run in runs:
        print(shlex.join(["bmjax-train", *train_args(sweep, run, workdir)]), flush=True)
    return 0


def run_slurm(fv, sweep, runs, workdir: pathlib.Path) -> int:
    """One array job of the runs without a parent; task i reads line i of W/slurm_runs.txt (all the sweep's runs,
    so indices match). A branching sweep adds, per parent, the array of its branches, held until the parent's task
    has succeeded (or, when the parent is not among the runs submitted, not held: it is taken to be done)."""
    script = fv.sbatch_script
    if not os.path.isfile(script):
        raise ConfigError("--sbatch_script", f"{script!r} does not exist (submit from the repository root)")
    runs_file = workdir / "slurm_runs.txt"
    runs_file.write_text("".join(shlex.join([sweep.config_arg, str(workdir / run.name),
                                             *config_overrides(run, workdir)]) + "\n"
                                 for run in sweep.runs))  # train.sbatch's CONFIG WORKDIR [--config.KEY=VALUE ...]
    (workdir / "slurm").mkdir(exist_ok=True)
    submitted = {run.name for run in runs}
    first = [run for run in runs if run.parent is None or run.parent not in submitted]
    branches = {}
    for run in runs:
        if run not in first:
            branches.setdefault(run.parent, []).append(run)
    code, job = submit(fv, sweep, script, runs_file, workdir, first, None)
    if code or not branches:
        return code
    if not job:
        return common.error("--launcher=slurm: sbatch --parsable printed no job id; the branches were not "
                            "submitted", common.FAILED)
    index = {run.name: run.index for run in sweep.runs}
    for parent, held in branches.items():
        code, _ = submit(fv, sweep, script, runs_file, workdir, held, f"afterok:{job}_{index[parent]}")
        if code:
            return code
    return common.OK


def submit(fv, sweep, script, runs_file, workdir, runs, dependency) -> tuple[int, str]:
    """sbatch of one array (task i trains run i), held by `dependency` when given: (exit code, job id)."""
    command = ["sbatch", "--parsable", f"--array={','.join(str(run.index) for run in runs)}",
               f"--job-name={sweep.name}", f"--output={workdir / 'slurm' / '%x-%A_%a.out'}",
               *([f"--dependency={dependency}"] if dependency else []), *shlex.split(fv.slurm_args),
               script, "--runs", str(runs_file)]
    print(shlex.join(command), flush=True)
    try:
        result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise ConfigError("--launcher=slurm", "sbatch is not on PATH") from None
    print(result.stdout, end="", flush=True)
    lines = result.stdout.strip().splitlines()
    parsable = re.fullmatch(r"(\d+)(;\S+)?", lines[-1].strip()) if lines else None  # --parsable: JOBID[;CLUSTER]
    return result.returncode, parsable.group(1) if parsable else ""


LAUNCHERS = {"local": run_local, "print": run_print, "slurm": run_slurm}


def run_sweep(fv: flags.FlagValues) -> int:
    if not fv.config:
        raise ConfigError("--config", "required (a sweep file such as configs/sweeps/chinchilla_isoflop.py)")
    if not fv.workdir:
        raise ConfigError("--workdir", "required (the sweep's directory)")
    sweep = sweep_lib.load_sweep(fv.config)
    runs = sweep.runs
    if fv.only is not None:
        if not 0 <= fv.only < len(runs):
            raise ConfigError("--only", f"{fv.only} is not a run index of this sweep (0 .. {len(runs) - 1})")
        runs = [runs[fv.only]]
    workdir = pathlib.Path(fv.workdir)
    if fv.eval_tasks:  # checked before any run trains
        if fv.launcher != "local":
            raise ConfigError("--eval_tasks", "runs with --launcher local (after print or slurm, run bmjax-eval)")
        from bmjax.cli.eval import task_manager

        try:
            task_manager(None, fv.eval_tasks)
        except ConfigError as e:
            raise ConfigError("--eval_tasks", e.message) from None
    if fv.dry_run:
        for run in runs:
            branch = f"\tbranch of {run.parent} at step {run.branch_step}" if run.parent is not None else ""
            print(f"{run.index}\t{run.name}\tsteps={run.steps}{branch}", flush=True)
        if any(run.parent is not None for run in sweep.runs):
            print(f"branching: {sweep_lib.describe_cost(sweep)}", flush=True)
        return common.OK
    workdir.mkdir(parents=True, exist_ok=True)
    code = LAUNCHERS[fv.launcher](fv, sweep, runs, workdir)
    sweep_lib.write_results(sweep, workdir)
    return code


def main(argv: list[str] | None = None) -> int:
    return common.run(define_flags, run_sweep, argv, usage=__doc__)


if __name__ == "__main__":
    sys.exit(main())
