"""Sweeps: expansion helpers, budgets turned into steps, the bad-override error, the print and slurm launchers
(with stand-ins for sbatch, scontrol and srun), and a two-run local sweep killed with SIGKILL in its second run
and run again: the first is skipped, the second resumes, results.csv holds both."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bmjax.errors import ConfigError
from bmjax.models import flops, model_config
from bmjax.scaling import sweep as sweep_lib
from bmjax.cli import sweep as sweep_cli
from cli_runs import REPO, Runner, checkpoint_steps, read_rows, resumed_step
from helpers.configs import sweep_run_configs

STEPS, BATCH, SEQ = 24, 8, 32
SWEEP_FILE = '''
from bmjax.defaults import base_config
from bmjax.scaling.sweep import axis, product


def get_config(arg=""):
    c = base_config()
    c.model.vocab_size, c.model.num_layers, c.model.num_heads, c.model.max_len = 320, 1, 2, {seq}
    c.data.source, c.data.path, c.data.tokenizer = "text", {data!r}, "byte"
    c.data.seq_len, c.data.batch_size = {seq}, {batch}
    c.optim.lr, c.optim.warmup_steps = 3e-3, 2
    c.train.log_every, c.train.eval_every, c.train.ckpt_every = 1, 12, 3
    c.train.sample_tokens, c.train.progress = 0, False
    return c


def get_sweep():
    return product(axis("model.d_model", [32, 48]), axis("budget.tokens", [{tokens}]), {extra})
'''


def write_sweep(tmp_path, data, extra="[{}]", name="tiny_sweep"):
    path = tmp_path / f"{name}.py"
    path.write_text(SWEEP_FILE.format(seq=SEQ, batch=BATCH, data=str(data), tokens=STEPS * BATCH * SEQ,
                                      extra=extra))
    return path


def cli(capsys, *args):
    """bmjax-sweep's main in this process; (exit code, stdout, stderr)."""
    code = sweep_cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_product_and_zip_build_lists_of_overrides():
    lrs, widths = sweep_lib.axis("optim.lr", [1e-3, 3e-3]), sweep_lib.axis("model.d_model", [64, 128])
    assert sweep_lib.product(lrs, widths) == [
        {"optim.lr": 1e-3, "model.d_model": 64}, {"optim.lr": 1e-3, "model.d_model": 128},
        {"optim.lr": 3e-3, "model.d_model": 64}, {"optim.lr": 3e-3, "model.d_model": 128}]
    assert sweep_lib.zip(lrs, widths) == [{"optim.lr": 1e-3, "model.d_model": 64},
                                          {"optim.lr": 3e-3, "model.d_model": 128}]
    with pytest.raises(ValueError):
        sweep_lib.zip(lrs, widths[:1])


def test_a_flop_budget_is_met_in_counted_flops_and_the_cosine_ends_with_the_run(tmp_path):
    path = write_sweep(tmp_path, tmp_path / "unused.txt", extra='[{"optim.warmup_steps": 1}]')
    path.write_text(path.read_text().replace('axis("budget.tokens", [', 'axis("budget.flops", [1e9, '))
    sweep = sweep_lib.load_sweep(str(path))
    assert [r.name for r in sweep.runs] == [
        "d_model=32,flops=1e+09,warmup_steps=1", f"d_model=32,flops={STEPS * BATCH * SEQ},warmup_steps=1",
        "d_model=48,flops=1e+09,warmup_steps=1", f"d_model=48,flops={STEPS * BATCH * SEQ},warmup_steps=1"]
    run = sweep.runs[2]
    # Counted by hand for d_model 48, one layer, 2 heads, vocab 320, seq 32: non-embedding N = 28,368 (attention
    # 9,408, MLP 18,672, two norms 192, final norm 96); per token 6 (N + 48 * 320) + 12 * 48 * 32 = 280,800 FLOPs.
    # 1e9 / 280,800 / 256 tokens per step = 13.9 -> 14 steps (6 N D would give 23).
    assert run.args["train.steps"] == run.args["optim.decay_steps"] == run.steps == 14
    assert run.args["train.eval_steps"] == 0  # the sweep's default: one pass over the whole held-out set
    assert run.args["wandb.group"] == "tiny_sweep"
    assert run.args["wandb.tags"] == ("model.d_model=48", "budget.flops=1e+09", "optim.warmup_steps=1")


def test_a_budget_is_whole_steps_not_whole_calls_of_steps_per_call(tmp_path):
    """A budget of 6 steps with train.steps_per_call=10 trains 6 steps (the trainer's last call is shorter), not
    10: rounded up to a whole call it would read 1.7x its tokens and leave its compute level."""
    every_call = {f"train.{key}": 10 for key in ("steps_per_call", "log_every", "eval_every", "ckpt_every")}
    path = write_sweep(tmp_path, tmp_path / "unused.txt", extra=f"[{every_call!r}]")
    path.write_text(path.read_text().replace(f"[{STEPS * BATCH * SEQ}]", f"[{6 * BATCH * SEQ}, {13 * BATCH * SEQ}]"))
    sweep = sweep_lib.load_sweep(str(path))
    assert [r.steps for r in sweep.runs] == [6, 13, 6, 13]
    assert all(r.args["optim.decay_steps"] == r.steps for r in sweep.runs)


def test_an_unknown_override_key_is_one_line_and_exit_2_before_any_run(tmp_path, capsys):
    path = write_sweep(tmp_path, tmp_path / "unused.txt", extra='[{"optim.learning_rate": 1e-3}]')
    code, out, err = cli(capsys, f"--config={path}", f"--workdir={tmp_path / 'sweep'}")
    assert code == 2
    assert err.splitlines() == [
        "error: run 0 (d_model=32,tokens=6144,learning_rate=0.001): optim.learning_rate: unknown config key"]
    assert not (tmp_path / "sweep").exists()
    with pytest.raises(ConfigError, match="model.d_model: cannot take 'wide'"):
        sweep_lib.resolve(sweep_lib.load_module(str(path)).get_config(), {"model.d_model": "wide"}, "s")


def test_print_launcher_prints_one_bmjax_train_command_per_run(tmp_path, capsys):
    path = write_sweep(tmp_path, tmp_path / "unused.txt")
    workdir = tmp_path / "sweep"
    code, out, _ = cli(capsys, f"--config={path}", f"--workdir={workdir}", "--launcher=print")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2
    for line, width in zip(lines, (32, 48)):
        assert line.startswith(f"bmjax-train --config {path} --workdir {workdir}/d_model={width},tokens=6144 ")
        assert f"--config.model.d_model={width} " in line and f"--config.train.steps={STEPS} " in line
    code, out, _ = cli(capsys, f"--config={path}", f"--workdir={workdir}", "--launcher=print", "--only=1")
    assert out.splitlines() == lines[1:]
    assert (workdir / "results.csv").read_text().splitlines() == [",".join(sweep_lib.RESULT_COLUMNS)]


def test_slurm_launcher_submits_one_array_whose_tasks_train_their_runs(tmp_path, capsys, monkeypatch):
    """A stand-in sbatch records its arguments and runs each array task through tools/slurm/train.sbatch
    (BMJAX_DRY_RUN=1: the script prints the srun command of its run)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {
        "sbatch": 'echo "$@" > "$SBATCH_LOG"\nscript=${@: -3:1}\n'
                  'for i in 0 1; do SLURM_ARRAY_TASK_ID=$i bash "$script" "${@: -2}"; done',
        "scontrol": "echo node-a",
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    for key, value in dict(SBATCH_LOG=str(tmp_path / "sbatch.log"), BMJAX_DRY_RUN="1", SLURM_JOB_NODELIST="node-a",
                           SLURM_NNODES="1", SLURM_NTASKS="1", BMJAX_VENV="/venv").items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(REPO)
    path = write_sweep(tmp_path, tmp_path / "unused.txt")
    workdir = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "-m", "bmjax.cli.sweep", f"--config={path}",
                             f"--workdir={workdir}", "--launcher=slurm", "--slurm_args=--nodes=1 --time=1:00:00"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sbatch.log").read_text().split() == [
        "--parsable", "--array=0,1", "--job-name=tiny_sweep", f"--output={workdir}/slurm/%x-%A_%a.out", "--nodes=1",
        "--time=1:00:00", "tools/slurm/train.sbatch", "--runs", str(workdir / "slurm_runs.txt")]
    sruns = [line for line in result.stdout.splitlines() if line.startswith("srun ")]
    assert len(sruns) == 2
    for srun, width in zip(sruns, (32, 48)):
        # The script quotes each word (bash's ${ARRAY[*]@Q}).
        assert (f"'/venv/bin/bmjax-train' '--config' '{path}' '--workdir' '{workdir}/d_model={width},tokens=6144'"
                in srun)
        assert f"'--config.model.d_model={width}'" in srun and f"'--config.train.steps={STEPS}'" in srun
        assert "'--coordinator_address' 'node-a:" in srun


def test_local_sweep_survives_sigkill_in_its_second_run_and_resumes_it(tmp_path, repo_data):
    runner = Runner(tmp_path, repo_data)
    path = write_sweep(tmp_path, runner.data)
    workdir = tmp_path / "sweep"
    command = [sys.executable, "-m", "bmjax.cli.sweep", f"--config={path}", f"--workdir={workdir}"]
    first, second = (workdir / f"d_model={w},tokens=6144" for w in (32, 48))

    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(command, cwd=REPO, env=runner.env(1), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group: the kill takes the run with it
    try:
        deadline = time.monotonic() + 300
        while not checkpoint_steps(second) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert checkpoint_steps(second), (tmp_path / "first.log").read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert json.loads((first / "summary.json").read_text())["status"] == "finished"
    killed_at = checkpoint_steps(second)[-1]
    assert killed_at < STEPS  # killed in the middle of the second run

    result = subprocess.run(command, cwd=REPO, env=runner.env(1), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"[1/2] {first.name}: finished, skipped" in result.stdout
    assert f"[2/2] {second.name}: resuming" in result.stdout
    assert resumed_step(result.stdout) is not None and resumed_step(result.stdout) >= killed_at, result.stdout
    steps = [r["step"] for r in read_rows(second) if r["split"] == "train"]
    assert steps == list(range(1, STEPS + 1))  # nothing lost, nothing logged twice

    with open(workdir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(sweep_lib.RESULT_COLUMNS)
    assert [r["run"] for r in rows] == [first.name, second.name]
    for row, run_dir, width in zip(rows, (first, second), (32, 48)):
        summary = json.loads((run_dir / "summary.json").read_text())
        assert row["status"] == summary["status"] == "finished"
        assert json.loads(row["overrides"]) == {"model.d_model": width, "budget.tokens": STEPS * BATCH * SEQ}
        assert int(row["budget_tokens"]) == STEPS * BATCH * SEQ and row["budget_flops"] == ""
        assert int(row["D"]) == STEPS * BATCH * SEQ and int(row["N"]) == summary["N"]
        assert float(row["final_eval_loss"]) == summary["final_eval_loss"]
        config = json.loads((run_dir / "config.json").read_text())
        assert config["wandb"]["group"] == "tiny_sweep" and config["train"]["eval_steps"] == 0
        assert config["optim"]["decay_steps"] == STEPS


def resolved_runs(path: str):
    """(run, N, N_total, counted FLOPs per token, tokens per step) for every run of a sweep file: its config with
    the run's overrides applied."""
    for run, config in sweep_run_configs(path):
        counts = flops.param_counts(model_config(config.model))
        per_token = flops.train_flops_per_token(model_config(config.model), config.data.seq_len)
        yield run, counts["non_embedding"], counts["total"], per_token, config.data.batch_size * config.data.seq_len


def test_chinchilla_isoflop_spans_10m_to_1b_at_six_budgets_and_runlocal_is_two_tiny_runs(capsys):
    by_budget = {}
    for run, n, n_total, per_token, step_tokens in resolved_runs(str(REPO / "configs/sweeps/chinchilla_isoflop.py")):
        d = run.steps * step_tokens
        assert 2 <= d / n_total <= 400 and run.args["optim.decay_steps"] == run.steps
        assert abs(per_token * d / run.overrides["budget.flops"] - 1) < 0.01  # whole steps round C by < 1%
        by_budget.setdefault(run.overrides["budget.flops"], []).append(n_total)
    assert len(by_budget) >= 5 and all(len(sizes) >= 3 for sizes in by_budget.values())
    everything = [n for sizes in by_budget.values() for n in sizes]
    assert min(everything) < 25e6 and max(everything) > 0.9e9

    code, out, _ = cli(capsys, f"--config={REPO / 'configs/sweeps/chinchilla_isoflop.py'}:runlocal",
                       "--workdir=unused", "--dry_run")
    assert code == 0 and [line.split("\t")[2] for line in out.splitlines()] == ["steps=19", "steps=14"]


def test_small_scaling_meets_three_counted_budgets_with_five_sizes_and_two_seeds_near_each_minimum(capsys):
    path = str(REPO / "configs/sweeps/small_scaling.py")
    by_budget = {}
    for run, n, n_total, per_token, step_tokens in resolved_runs(path):
        d = run.steps * step_tokens
        # the counted C of the run's summary (D x per-token FLOPs) lies within half a step of its budget
        assert abs(per_token * d - run.overrides["budget.flops"]) <= per_token * step_tokens / 2
        assert d <= 4 * 31e6  # no run reads the ~31M-token corpus more than ~4 times
        by_budget.setdefault(run.overrides["budget.flops"], []).append((n_total, run.args["train.seed"]))
    assert sorted(by_budget) == [6e11, 1.5e12, 4e12]
    for runs in by_budget.values():
        assert len({n for n, _ in runs}) == 5 and sorted(seed for _, seed in runs) == [0] * 5 + [1] * 2

    code, out, _ = cli(capsys, f"--config={path}:runlocal", "--workdir=unused", "--dry_run")
    assert code == 0 and len(out.splitlines()) == 2
