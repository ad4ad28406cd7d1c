"""Exact resume: a run killed with SIGKILL at a random (seeded, printed) step and started again with the same
command logs bitwise the same train and eval losses as a run that was never interrupted. A checkpoint that was
never finished is skipped; one that fails to read for any other reason stops the run and changes no file."""
import os
import random
import shutil

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import pytest

from bmjax.checkpoint import Checkpointer, RestoreError
from bmjax.errors import ConfigError
from bmjax.train.loop import train_and_evaluate
from bmjax.train.step import TrainState
from cli_runs import CKPT_EVERY, GPT_ARGS, MODEL_ARGS, STEPS, Runner, checkpoint_steps, kill_seed, losses, \
    resumed_step, wait_for_step
from helpers.configs import tiny_gpt_config
from helpers.metrics import read_rows
from helpers.workdirs import snapshot


@pytest.fixture(scope="module")
def runner(tmp_path_factory, repo_data):
    return Runner(tmp_path_factory.getbasetemp(), repo_data)


# 1 device; 4 devices with the parameters sharded two ways (fsdp) and the batch four ways.
LAYOUTS = {1: (), 4: ("--config.mesh.fsdp=2",)}


@pytest.mark.parametrize("model", sorted(MODEL_ARGS))
@pytest.mark.parametrize("devices", sorted(LAYOUTS))
def test_kill9_at_a_random_step_then_rerun_is_bitwise_identical(runner, tmp_path, model, devices):
    args = runner.args(MODEL_ARGS[model], *LAYOUTS[devices])
    reference = losses(runner.reference(f"{model}-{devices}", args, devices))
    seed = kill_seed()
    target = random.Random(seed).randint(CKPT_EVERY + 1, STEPS - 8)
    note = f"(kill target step {target}, seed {seed})"

    workdir = tmp_path / "run"
    proc = runner.start(args, workdir, devices)
    killed_at = wait_for_step(proc, workdir, target)
    proc.kill()
    assert proc.wait(timeout=60) == -9, note

    result = runner.run(args, workdir, devices)
    assert result.returncode == 0, result.stderr[-3000:]
    restored = resumed_step(result.stdout) or 0  # no message: no checkpoint was complete, a fresh start
    assert restored % CKPT_EVERY == 0, result.stdout[-2000:]
    # The newest checkpoint before the kill: at most ckpt_every steps behind, or up to one more interval when the
    # kill landed while that checkpoint was still being written (saves are asynchronous; orbax finishes one
    # before it starts the next, and the row of a checkpoint step is logged before its save starts).
    assert killed_at - 2 * CKPT_EVERY <= restored <= killed_at, note
    assert losses(workdir) == reference, note
    assert any(step > restored for step, _, _ in reference), note  # the comparison covered resumed steps


def test_an_unreadable_checkpoint_stops_the_run_in_one_line_and_changes_nothing(runner, tmp_path):
    """Cut the newest checkpoint's largest array file in half: not a save that never finished (every file and
    marker is there), so the rerun stops with one line and exit 1 instead of guessing, and leaves the
    checkpoints and metrics.jsonl exactly as they were."""
    args = runner.args(GPT_ARGS)
    workdir = tmp_path / "run"
    shutil.copytree(runner.reference("gpt-1", args), workdir)
    newest = STEPS
    files = [p for p in (workdir / "checkpoints" / str(newest) / "state").rglob("*") if p.is_file()]
    biggest = max(files, key=lambda p: p.stat().st_size)
    os.truncate(biggest, biggest.stat().st_size // 2)
    before = snapshot(workdir)

    result = runner.run(args, workdir)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: checkpoint: could not restore checkpoint {workdir.resolve() / 'checkpoints' / str(newest)} ("), errors
    assert "no file was changed" in errors[0]
    assert snapshot(workdir) == before
    assert not (workdir / "checkpoints.incomplete").exists()


def test_a_half_written_checkpoint_is_skipped_with_a_message(runner, tmp_path):
    """The newest step lacks the state's metadata, which orbax writes last: the rerun says so, sets it aside,
    takes the one before, and reproduces the uninterrupted run from there."""
    args = runner.args(GPT_ARGS)
    workdir = tmp_path / "run"
    shutil.copytree(runner.reference("gpt-1", args), workdir)
    newest, previous = STEPS, STEPS - CKPT_EVERY
    assert checkpoint_steps(workdir) == [previous, newest]
    (workdir / "checkpoints" / str(newest) / "state" / "_METADATA").unlink()

    result = runner.run(args, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    skip_lines = [line for line in result.stdout.splitlines() if line.startswith("skipping checkpoint")]
    assert len(skip_lines) == 1 and f"checkpoints/{newest}:" in skip_lines[0], result.stdout[-2000:]
    assert "incomplete (state/_METADATA is missing)" in skip_lines[0]
    assert resumed_step(result.stdout) == previous
    assert (workdir / "checkpoints.incomplete" / str(newest)).is_dir()  # set aside, not deleted
    assert checkpoint_steps(workdir) == [previous, newest]  # rewritten by the resumed run
    assert losses(workdir) == losses(runner.reference("gpt-1", args))


def test_a_transient_read_error_stops_the_run_and_keeps_checkpoints_and_metrics(tmp_path, monkeypatch):
    """An OSError from orbax's read (a network file system hiccup) on the first try: the resumed run stops with
    RestoreError before touching anything; the next try, with the error gone, resumes from the newest step."""
    config = tiny_gpt_config(steps=4, steps_per_call=2)
    workdir = tmp_path / "run"
    train_and_evaluate(config, str(workdir))
    before = snapshot(workdir)
    assert "metrics.jsonl" in before and "checkpoints/4/state/_METADATA" in before

    real_restore = ocp.CheckpointManager.restore
    failures = []

    def flaky_restore(self, *args, **kwargs):
        if not failures:
            failures.append(1)
            raise OSError(5, "Input/output error")
        return real_restore(self, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "restore", flaky_restore)
    longer = tiny_gpt_config(steps=6, steps_per_call=2)
    longer.optim.decay_steps = 4  # the schedule the first run had, so the longer run is the same maths
    with pytest.raises(RestoreError, match=r"checkpoints/4 \(OSError: \[Errno 5\] Input/output error\)"):
        train_and_evaluate(longer, str(workdir))
    assert failures and snapshot(workdir) == before  # every checkpoint, metrics.jsonl and config.json as they were

    train_and_evaluate(longer, str(workdir))
    rows = read_rows(workdir)
    assert [r["step"] for r in rows if r["split"] == "train"] == [2, 4, 6]  # resumed at 4, rows kept


# In process, on a small state: each way a step folder can be damaged, and what restore does about it.

def small_state(step: int, width: int = 1024):
    # Random values: they do not compress, so the arrays' bytes land in their own data file.
    weights = jax.random.normal(jax.random.key(step), (width,))
    return TrainState(step=jnp.asarray(step, jnp.int32), params={"w": weights},
                      opt_state={"m": jnp.zeros((width,))}, rest={"r": jnp.zeros((1,))},
                      skipped=jnp.zeros((), jnp.int32))


def abstract(state):
    replicated = jax.sharding.NamedSharding(jax.sharding.Mesh(jax.devices(), ("d",)), jax.sharding.PartitionSpec())
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state)


def numbers():
    return iter(grain.MapDataset.range(1000).to_iter_dataset())


def save_two_steps(workdir):
    """Steps 1 and 2, with the data iterator at 10 and 20 numbers read."""
    checkpointer = Checkpointer(workdir, keep=3)
    data = numbers()
    for step in (1, 2):
        for _ in range(10):
            next(data)
        checkpointer.save(step, small_state(step), data)
    checkpointer.close()


def largest_array_file(step_dir):
    """The biggest data file of the arrays (tensorstore's OCDBT store), not a metadata file."""
    return max(step_dir.glob("state/ocdbt.process_*/d/*"), key=lambda p: p.stat().st_size)


# Parts a save writes that are missing: the save never finished (or a copy was cut short).
INCOMPLETE = {
    "array metadata deleted": lambda d: (d / "state" / "_METADATA").unlink(),
    "state item deleted": lambda d: shutil.rmtree(d / "state"),
    "step metadata deleted": lambda d: (d / "_CHECKPOINT_METADATA").unlink(),
    "data iterator state deleted": lambda d: next((d / "data").glob("process_*.json")).unlink(),
    "everything inside deleted": lambda d: [shutil.rmtree(p) if p.is_dir() else p.unlink() for p in d.iterdir()],
}
# Everything is there but does not read: not evidence of an unfinished save, so restore stops.
UNREADABLE = {
    "array data truncated": lambda d: os.truncate(largest_array_file(d), 8),
    "data iterator state cut short": lambda d: os.truncate(next((d / "data").glob("process_*.json")), 3),
}


@pytest.mark.parametrize("damage", sorted(INCOMPLETE))
def test_restore_skips_an_incomplete_newest_step_and_sets_it_aside(tmp_path, damage):
    save_two_steps(tmp_path)
    INCOMPLETE[damage](tmp_path / "checkpoints" / "2")
    checkpointer = Checkpointer(tmp_path, keep=3)
    data, messages = numbers(), []
    step, state = checkpointer.restore_latest(abstract(small_state(0)), data, log=messages.append)
    assert step == 1 and (state.params["w"] == small_state(1).params["w"]).all()
    assert next(data) == 10  # the iterator is where step 1 left it
    assert len(messages) == 1 and messages[0].startswith(f"skipping checkpoint {tmp_path / 'checkpoints' / '2'}: ")
    assert (tmp_path / "checkpoints.incomplete" / "2").is_dir()
    checkpointer.save(2, small_state(2), data)  # the step number is free again
    checkpointer.close()
    assert Checkpointer(tmp_path, keep=3).restore_latest(abstract(small_state(0)), numbers())[0] == 2


@pytest.mark.parametrize("damage", sorted(UNREADABLE))
def test_restore_stops_at_an_unreadable_step_and_changes_no_file(tmp_path, damage):
    save_two_steps(tmp_path)
    UNREADABLE[damage](tmp_path / "checkpoints" / "2")
    before = snapshot(tmp_path)
    messages = []
    with pytest.raises(RestoreError, match=f"could not restore checkpoint {tmp_path / 'checkpoints' / '2'} "):
        Checkpointer(tmp_path, keep=3).restore_latest(abstract(small_state(0)), numbers(), log=messages.append)
    assert messages == [] and snapshot(tmp_path) == before


def test_a_save_cut_short_by_a_kill_is_never_seen(tmp_path):
    """orbax writes into a temporary folder and renames it when complete; a kill leaves only the temporary one."""
    save_two_steps(tmp_path)
    root = tmp_path / "checkpoints"
    (root / "2").rename(root / "2.orbax-checkpoint-tmp-1234")
    messages = []
    step, _ = Checkpointer(tmp_path, keep=3).restore_latest(abstract(small_state(0)), numbers(), log=messages.append)
    assert step == 1 and messages == []


def test_a_checkpoint_of_another_config_is_an_error_not_skipped(tmp_path):
    save_two_steps(tmp_path)
    with pytest.raises(ConfigError, match=r"params/w.*float32\[1024\].*float32\[8\]") as info:
        Checkpointer(tmp_path, keep=3).restore_latest(abstract(small_state(0, width=8)), numbers())
    assert info.value.key == "workdir"
    assert not (tmp_path / "checkpoints.incomplete").exists()


def test_a_checkpoint_of_another_process_count_is_an_error_not_skipped(tmp_path):
    """Each process saves its own data position; one process cannot take over two processes' positions."""
    save_two_steps(tmp_path)
    for step in ("1", "2"):
        data = tmp_path / "checkpoints" / step / "data"
        (data / "process_0-of-1.json").rename(data / "process_0-of-2.json")
        shutil.copy(data / "process_0-of-2.json", data / "process_1-of-2.json")
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError, match=r"checkpoints/2 was written by 2 process\(es\), this run has 1") as info:
        Checkpointer(tmp_path, keep=3).restore_latest(abstract(small_state(0)), numbers())
    assert info.value.key == "workdir" and snapshot(tmp_path) == before
