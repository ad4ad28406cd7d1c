"""Branching sweeps (ladders): one warmup-stable-decay parent per size trained to the largest budget, one cooldown
branch per smaller budget starting where its own cooldown starts. Which runs, which overrides, the dependency
order, results.csv's parent and branch_step, the cost against independent runs, slurm's job dependencies (a
stand-in sbatch), bad ladders as one line and exit 2."""
import csv
import json
import os
import subprocess
import sys

import pytest

from bmjax import workdir as workdir_lib
from bmjax.cli import sweep as sweep_cli
from bmjax.scaling import sweep as sweep_lib
from bmjax.train import optim
from cli_runs import REPO

BATCH, SEQ = 4, 16
STEP_TOKENS = BATCH * SEQ
LADDER_FILE = '''
from bmjax.defaults import base_config
from bmjax.scaling.sweep import axis, product


def get_config(arg=""):
    c = base_config()
    c.model.vocab_size, c.model.num_layers, c.model.num_heads, c.model.max_len = 320, 1, 2, {seq}
    c.data.source, c.data.path, c.data.tokenizer = "text", {data!r}, "byte"
    c.data.seq_len, c.data.batch_size = {seq}, {batch}
    c.optim.schedule, c.optim.lr, c.optim.warmup_steps = {schedule!r}, 3e-3, 2
    c.train.steps_per_call = {k}
    c.train.log_every, c.train.eval_every, c.train.ckpt_every = {k}, 1000, 1000
    c.train.sample_tokens, c.train.progress = 0, False
    return c


def get_sweep():
    return product(axis("model.d_model", [32, 48]), [{{"ladder.tokens": {budgets}}}])
'''


def write_ladder(tmp_path, data="unused.txt", steps=(32, 8, 16), schedule="wsd", k=1, budgets=None):
    path = tmp_path / "ladder.py"
    budgets = budgets if budgets is not None else [s * STEP_TOKENS for s in steps]
    path.write_text(LADDER_FILE.format(seq=SEQ, batch=BATCH, data=str(data), schedule=schedule, k=k,
                                       budgets=budgets))
    return path


def cli(capsys, *args):
    code = sweep_cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def name(width, steps):
    return f"d_model={width},tokens={steps * STEP_TOKENS}"


def cooldown_start(path, run):
    """The trainer's own cooldown start for this run's config (bmjax.train.optim)."""
    config = sweep_lib.load_module(str(path)).get_config()
    for key, value in run.args.items():
        if key != "train.ckpt_steps":
            sweep_lib.set_key(config, key, value)
    return optim.cooldown_start(config.optim, int(config.train.steps))


@pytest.mark.parametrize("k", [1, 2])
def test_a_ladder_is_a_parent_then_branches_at_their_own_cooldown_start(tmp_path, k):
    path = write_ladder(tmp_path, k=k)
    sweep = sweep_lib.load_sweep(str(path))
    # parents first, each followed by its branches from the smallest budget up
    assert [r.name for r in sweep.runs] == [name(w, s) for w in (32, 48) for s in (32, 8, 16)]
    assert [r.steps for r in sweep.runs] == [32, 8, 16] * 2
    parents = [sweep.runs[0], sweep.runs[3]]
    for parent in parents:
        assert parent.parent is None and parent.branch_step is None
        assert parent.overrides["budget.tokens"] == 32 * STEP_TOKENS
    for run, parent in zip(sweep.runs, [None, 0, 0, None, 3, 3]):
        if parent is None:
            continue
        assert run.parent == sweep.runs[parent].name
        # 8 - round(1.6) = 6 and 16 - round(3.2) = 13, rounded down to a whole call of k steps
        start = cooldown_start(path, run)
        assert start == {8: 6, 16: 13}[run.steps]
        assert run.branch_step == k * (start // k) and 0 < run.branch_step < run.steps
        assert run.args["train.steps"] == run.steps and "train.ckpt_steps" not in run.args
    for parent in parents:
        assert parent.args["train.ckpt_steps"] == ((6, 13) if k == 1 else (6, 12))


def test_print_lists_parents_before_branches_with_branch_from_and_ckpt_steps(tmp_path, capsys):
    path = write_ladder(tmp_path)
    workdir = tmp_path / "sweep"
    code, out, err = cli(capsys, f"--config={path}", f"--workdir={workdir}", "--launcher=print")
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split(" --workdir ")[1].split()[0] for line in lines] == [
        str(workdir / name(w, s)) for w in (32, 48) for s in (32, 8, 16)]
    for i in (0, 3):
        assert "--config.train.ckpt_steps=(6, 13)" in lines[i] and "branch_from" not in lines[i]
    for i, parent, step in ((1, 0, 6), (2, 0, 13), (4, 3, 6), (5, 3, 13)):
        parent_dir = workdir.absolute() / name((32, 48)[parent // 3], 32)
        assert f"--config.train.branch_from={parent_dir}@{step} " in lines[i] + " "
        assert "ckpt_steps" not in lines[i]


def test_dry_run_reports_the_steps_against_independent_runs(tmp_path, capsys):
    path = write_ladder(tmp_path)
    code, out, _ = cli(capsys, f"--config={path}", "--workdir=unused", "--dry_run")
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == f"1\t{name(32, 8)}\tsteps=8\tbranch of {name(32, 32)} at step 6"
    sweep = sweep_lib.load_sweep(str(path))
    cost = sweep_lib.cost(sweep)
    # each size: the parent's 32 steps + 8 - 6 + 16 - 13 for the branches; independently 32 + 8 + 16
    assert cost["steps"] == 2 * 37 and cost["independent_steps"] == 2 * 56
    per_step = {r.name: r.flops_per_step for r in sweep.runs}
    assert per_step[name(48, 8)] > per_step[name(32, 8)] > 0
    assert cost["flops"] == pytest.approx(37 * (per_step[name(32, 8)] + per_step[name(48, 8)]), rel=1e-12)
    assert lines[-1] == f"branching: {sweep_lib.describe_cost(sweep)}"
    assert f"{cost['independent_flops'] / cost['flops']:.2f}x" in lines[-1]


def test_results_csv_has_one_row_per_budget_with_parent_and_branch_step(tmp_path):
    path = write_ladder(tmp_path)
    sweep = sweep_lib.load_sweep(str(path))
    workdir = tmp_path / "sweep"
    for i, run in enumerate(sweep.runs):
        (workdir / run.name).mkdir(parents=True)
        workdir_lib.write_summary(workdir / run.name, {"N": 100 + i, "final_eval_loss": 3.0 - i / 10,
                                                       "status": "finished"})
    assert sweep_lib.write_results(sweep, workdir) == 6
    with open(workdir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["parent"], r["branch_step"]) for r in rows] == [
        (name(w, s), "" if s == 32 else name(w, 32), {32: "", 8: "6", 16: "13"}[s])
        for w in (32, 48) for s in (32, 8, 16)]
    assert [int(r["budget_tokens"]) for r in rows] == [s * STEP_TOKENS for s in (32, 8, 16)] * 2
    assert [float(r["final_eval_loss"]) for r in rows] == pytest.approx([3.0 - i / 10 for i in range(6)])


def test_slurm_holds_each_parents_branches_until_it_succeeds(tmp_path, monkeypatch):
    """A stand-in sbatch logs its arguments and answers --parsable with job ids 100, 101, ..."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/bash\necho "$@" >> "$SBATCH_LOG"\n'
                                    'n=$(wc -l < "$SBATCH_LOG")\necho "$((99 + n));cluster-a"\n')
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_LOG", str(tmp_path / "sbatch.log"))
    path = write_ladder(tmp_path)
    workdir = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "-m", "bmjax.cli.sweep", f"--config={path}", f"--workdir={workdir}",
                             "--launcher=slurm"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    calls = [line.split() for line in (tmp_path / "sbatch.log").read_text().splitlines()]
    assert [[a for a in call if a.startswith(("--array", "--dependency"))] for call in calls] == [
        ["--array=0,3"], ["--array=1,2", "--dependency=afterok:100_0"], ["--array=4,5", "--dependency=afterok:100_3"]]
    lines = (workdir / "slurm_runs.txt").read_text().splitlines()
    assert len(lines) == 6 and f"--config.train.branch_from={workdir.absolute() / name(48, 32)}@13" in lines[5]


@pytest.mark.parametrize("kwargs, message", [
    (dict(schedule="cosine"), "optim.schedule: a ladder needs warmup-stable-decay (wsd) runs; got 'cosine'"),
    (dict(steps=(32, 1)), "ladder: the budget of d_model=32,tokens=64 is 1 steps: its cooldown starts at step 0"),
    (dict(budgets=[]), "ladder.tokens: must be a non-empty list of budgets"),
    (dict(budgets=[640, 640]), "ladder.tokens: lists a budget twice"),
])
def test_a_bad_ladder_is_one_line_and_exit_2(tmp_path, capsys, kwargs, message):
    path = write_ladder(tmp_path, **kwargs)
    code, out, err = cli(capsys, f"--config={path}", f"--workdir={tmp_path / 'sweep'}", "--dry_run")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err



@pytest.mark.parametrize("scale, sizes", [("full", 6), ("session", 5), ("centred", 6)])
def test_the_shipped_ladder_spans_30x_in_compute_with_five_budgets_per_size_and_two_seeds(scale, sizes):
    sweep = sweep_lib.load_sweep(str(REPO / f"configs/sweeps/ladder.py:scale={scale}"))
    ladders = {}
    for run in sweep.runs:
        key = (run.overrides["model.num_layers"], run.overrides["model.d_model"], run.overrides["train.seed"])
        ladders.setdefault(key, []).append(run)
    assert len({(layers, width) for layers, width, _ in ladders}) == sizes
    assert {seed for _, _, seed in ladders} == {0, 1}
    for runs in ladders.values():
        parent, *branches = runs
        budgets = sorted(r.overrides["budget.flops"] for r in runs)
        assert len(budgets) >= 5 and budgets[-1] / budgets[0] >= 30
        assert parent.parent is None and parent.overrides["budget.flops"] == budgets[-1]
        assert all(b.parent == parent.name for b in branches)
        for run in runs:  # every budget met in counted FLOPs to within half a step
            assert abs(run.steps * run.flops_per_step - run.overrides["budget.flops"]) <= run.flops_per_step / 2
    cost = sweep_lib.cost(sweep)
    assert cost["independent_flops"] / cost["flops"] > 1.4


# The end-to-end ladder: one size, a parent of 48 steps and one branch of 40 with a 50% cooldown (branch point 20),
# so each run has steps left to kill it in after its first checkpoint of its own.
E2E_STEPS = (48, 40)


def write_e2e_ladder(tmp_path, data):
    path = write_ladder(tmp_path, data=data, steps=E2E_STEPS)
    text = path.read_text().replace('[32, 48]', '[32]').replace(
        "c.train.log_every, c.train.eval_every, c.train.ckpt_every = 1, 1000, 1000",
        "c.train.log_every, c.train.eval_every, c.train.ckpt_every = 1, 1000, 2\n"
        "    c.optim.cooldown_fraction, c.train.eval_steps = 0.5, 2")
    path.write_text(text)
    return path


def kill_when(proc, condition, log, timeout=300):
    """SIGKILL the sweep's process group once `condition()` holds; fails if the sweep ends first."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    try:
        while not condition() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert condition(), log.read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def results_without_times(workdir):
    with open(workdir / "results.csv") as f:
        return [{k: v for k, v in row.items() if k != "wall_time"} for row in csv.DictReader(f)]


def test_a_ladder_killed_in_its_parent_and_in_its_branch_completes_with_the_same_results(tmp_path, repo_data):
    from cli_runs import Runner, checkpoint_steps, read_rows

    runner = Runner(tmp_path, repo_data)
    path = write_e2e_ladder(tmp_path, runner.data)
    sweep = sweep_lib.load_sweep(str(path))
    parent, branch = (run.name for run in sweep.runs)
    assert sweep.runs[1].branch_step == 20

    def command(workdir):
        return [sys.executable, "-m", "bmjax.cli.sweep", f"--config={path}", f"--workdir={workdir}"]

    reference = tmp_path / "reference"
    result = subprocess.run(command(reference), cwd=REPO, env=runner.env(1), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    workdir = tmp_path / "sweep"
    log = tmp_path / "sweep.log"
    for condition in (lambda: bool(checkpoint_steps(workdir / parent)),  # in the parent, after its first save
                      lambda: any(s > 20 for s in checkpoint_steps(workdir / branch))):  # in the branch, past 20
        with open(log, "w") as out:
            proc = subprocess.Popen(command(workdir), cwd=REPO, env=runner.env(1), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        kill_when(proc, condition, log)
    assert workdir_lib.read_summary(workdir / branch)["status"] != "finished"  # the kill landed inside the branch

    result = subprocess.run(command(workdir), cwd=REPO, env=runner.env(1), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{parent}: finished, skipped" in result.stdout and f"{branch}: resuming" in result.stdout
    reference_rows, rows = results_without_times(reference), results_without_times(workdir)
    assert [r["run"] for r in rows] == [parent, branch] and [r["branch_step"] for r in rows] == ["", "20"]
    assert [r["parent"] for r in rows] == ["", parent]
    assert rows == reference_rows  # losses, N, D, C, budgets: the same to the last digit
    for name in (parent, branch):
        assert [(r["step"], r["split"], r["loss"]) for r in read_rows(workdir / name)] == \
            [(r["step"], r["split"], r["loss"]) for r in read_rows(reference / name)]
    summary = workdir_lib.read_summary(workdir / branch)
    assert summary["branch_from"] == {"workdir": str((workdir / parent).absolute()), "step": 20}
