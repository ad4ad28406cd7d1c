"""Preemption: SIGTERM makes the run finish its step, save a checkpoint at that step, and exit with 143; the same
command resumes there and logs bitwise the losses of a run that was never interrupted. Several processes agree
on the step."""
import random
import signal
import socket
import subprocess
import sys

import pytest

from bmjax.cli import common as exit_codes
from cli_runs import GPT_ARGS, REPO, STEPS, Runner, checkpoint_steps, kill_seed, losses, read_rows, resumed_step, \
    wait_for_step


@pytest.fixture(scope="module")
def runner(tmp_path_factory, repo_data):
    return Runner(tmp_path_factory.getbasetemp(), repo_data)


def test_sigterm_saves_at_that_step_exits_143_and_the_same_command_resumes(runner, tmp_path):
    args = runner.args(GPT_ARGS)
    reference = losses(runner.reference("gpt-1", args))
    seed = kill_seed()
    target = random.Random(seed).randint(2, STEPS - 8)
    note = f"(SIGTERM target step {target}, seed {seed})"

    workdir = tmp_path / "run"
    proc = runner.start(args, workdir)
    wait_for_step(proc, workdir, target)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == exit_codes.PREEMPTED, note
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_agree_on_the_step_when_only_one_gets_sigterm(runner, tmp_path):
    """A scheduler may signal hosts at different moments: jax's preemption service picks one step for all, both
    save it together and exit 143."""
    args = runner.args(GPT_ARGS, "--config.train.steps=1000", "--config.mesh.data=2")
    address = f"127.0.0.1:{free_port()}"
    env = dict(runner.env(1), JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
    env["XLA_FLAGS"] = env["XLA_FLAGS"].replace("--xla_force_host_platform_device_count=1", "")
    workdir = tmp_path / "run"
    logs = [tmp_path / f"process{i}.log" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "bmjax.cli.train", *args, "--workdir", str(workdir),
                               "--coordinator_address", address, "--num_processes", "2", "--process_id", str(i)],
                              cwd=REPO, env=env, stdout=open(logs[i], "w"), stderr=subprocess.STDOUT)
             for i in range(2)]
    try:
        wait_for_step(procs[0], workdir, 3)
        procs[1].send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outputs = [log.read_text() for log in logs]
    assert codes == [exit_codes.PREEMPTED] * 2, outputs[0][-2000:] + outputs[1][-2000:]
    steps = {int(out.split("preempted: saved checkpoint ")[1].split(" at step ")[1].split(";")[0]) for out in outputs}
    assert len(steps) == 1, outputs
    assert checkpoint_steps(workdir)[-1] == steps.pop()
