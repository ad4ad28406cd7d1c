"""Preemption: SIGTERM makes the run finish its step, save a checkpoint at that step, and exit with 143; the same
command resumes there and logs bitwise the losses of a run that was never interrupted."""
import os
import random
import signal

import pytest

from bmjax.train import faults
from cli_runs import GPT_ARGS, STEPS, Runner, checkpoint_steps, losses, read_rows, resumed_step, wait_for_step


@pytest.fixture(scope="module")
def runner(tmp_path_factory, shared_data):
    return Runner(tmp_path_factory.getbasetemp(), shared_data)


def test_sigterm_saves_at_that_step_exits_143_and_the_same_command_resumes(runner, tmp_path):
    args = runner.args(GPT_ARGS)
    reference = losses(runner.reference("gpt-1", args))
    seed = int.from_bytes(os.urandom(4), "little")
    target = random.Random(seed).randint(2, STEPS - 8)
    note = f"(SIGTERM target step {target}, seed {seed})"

    workdir = tmp_path / "run"
    proc = runner.start(args, workdir)
    wait_for_step(proc, workdir, target)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == faults.PREEMPTED_EXIT_CODE, note
    stderr = (tmp_path / "run.stderr").read_text()
    assert "Traceback" not in stderr, stderr[-3000:]
    message = [line for line in stderr.splitlines() if line.startswith("preempted:")]
    assert len(message) == 1, stderr[-3000:]
    step = int(message[0].split(" at step ")[1].split(";")[0])
    assert message[0].startswith(f"preempted: saved checkpoint {workdir / 'checkpoints' / str(step)} ")
    assert target <= step < STEPS, note
    assert checkpoint_steps(workdir)[-1] == step  # the checkpoint is at the signalled step, wherever it fell
    assert max(r["step"] for r in read_rows(workdir)) <= step

    result = runner.run(args, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert resumed_step(result.stdout) == step, result.stdout[-2000:]
    assert losses(workdir) == reference, note
