"""NaN and inf: `train.on_nonfinite=halt` stops at the first bad step and leaves the last checkpoint alone;
`skip` drops the bad update, counts it, and the count survives a restart."""
import hashlib
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bmjax.checkpoint import read_arrays
from bmjax.cli import common as exit_codes
from bmjax.train import faults
from bmjax.train import step as step_lib
from bmjax.train.tasks import Task
from cli_runs import GPT_ARGS, STEPS, Runner, checkpoint_steps, read_rows


def weighted_squared_error(model, batch, rngs):
    """A regression loss whose per-example weights can carry a NaN, like a corrupt record in real data."""
    del rngs
    errors = (model(batch["x"])[:, 0] - batch["y"]) ** 2 * batch["weight"]
    count = jnp.asarray(errors.shape[0], jnp.float32)
    loss = jnp.mean(errors)
    return loss, {"loss": (loss * count, count)}


def linear_state_and_step(skip_nonfinite: bool):
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    graphdef, params, rest = step_lib.split_model(model)
    tx = optax.adam(0.1)
    state = step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rest=rest,
                                skipped=jnp.zeros((), jnp.int32))
    task = Task("regression", weighted_squared_error, ("x", "y", "weight"))
    train_step = step_lib.make_train_step(graphdef, task, tx, lambda step: 0.1, base_key=jax.random.key(0),
                                          use_dropout=False, grad_accum=1, skip_nonfinite=skip_nonfinite)
    return state, jax.jit(train_step)


def batch(poisoned: bool):
    weight = np.ones(4, np.float32)
    if poisoned:
        weight[2] = np.nan
    return {"x": np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "y": np.ones(4, np.float32), "weight": weight}


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_skip_keeps_parameters_and_optimizer_state_bitwise_and_counts():
    state, train_step = linear_state_and_step(skip_nonfinite=True)
    state, out = train_step(state, batch(poisoned=False))
    assert int(out["skipped"]) == 0 and math.isfinite(float(out["loss"]))
    before = state
    state, out = train_step(state, batch(poisoned=True))
    assert math.isnan(float(out["loss"])) and int(out["skipped"]) == 1
    for old, new in zip(leaves((before.params, before.opt_state)), leaves((state.params, state.opt_state))):
        np.testing.assert_array_equal(old, new)
    assert int(state.step) == 2 and int(state.skipped) == 1  # the step (data, RNG) still moves on
    state, out = train_step(state, batch(poisoned=False))
    assert int(out["skipped"]) == 1 and int(state.skipped) == 1
    assert any((a != b).any() for a, b in zip(leaves(before.params), leaves(state.params)))


def test_without_skip_a_nan_batch_poisons_the_parameters():
    """Why halt mode must stop the loop before the next checkpoint: the update itself is not guarded."""
    state, train_step = linear_state_and_step(skip_nonfinite=False)
    state, out = train_step(state, batch(poisoned=True))
    assert "skipped" not in out
    assert all(np.isnan(leaf).all() for leaf in leaves(state.params))


def test_first_nonfinite_names_the_step_inside_fused_steps():
    finite = (10, np.array([1.0, 2.0]), np.array([0.5, 0.5]))
    bad_norm = (12, np.array([1.0, 2.0]), np.array([0.5, np.inf]))
    bad_loss = (14, np.array([np.nan, 2.0]), np.array([0.5, 0.5]))
    assert faults.first_nonfinite([finite]) is None
    assert faults.first_nonfinite([finite, bad_norm, bad_loss]) == (12, 2.0, math.inf)
    assert faults.first_nonfinite([bad_loss])[0] == 13


# Resumed from the uninterrupted run's step-40 checkpoint with a learning rate of 1e30: step 41's update (from
# finite parameters) is applied and throws the weights to ~1e30; from step 42 on the loss overflows to NaN.
DIVERGE = ("--config.optim.lr=1e30", "--config.optim.schedule=constant", "--config.optim.warmup_steps=0",
           "--allow_config_change=optim.lr,optim.schedule,optim.warmup_steps,optim.decay_steps,train.on_nonfinite")


@pytest.fixture(scope="module")
def runner(tmp_path_factory, repo_data):
    return Runner(tmp_path_factory.getbasetemp(), repo_data)


def tree_digest(directory):
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_halt_stops_at_the_first_nan_step_and_leaves_the_last_checkpoint_intact(runner, tmp_path):
    args = runner.args(GPT_ARGS)
    workdir = tmp_path / "run"
    shutil.copytree(runner.reference("gpt-1", args), workdir)
    last = workdir / "checkpoints" / str(STEPS)
    digest = tree_digest(last)

    # log_every=5: the NaN step is found between log steps, as the loop checks finished steps.
    result = runner.run(runner.args(GPT_ARGS, *DIVERGE, "--config.train.steps=60", "--config.train.log_every=5"),
                        workdir)
    assert result.returncode == exit_codes.NONFINITE, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"error: non-finite values at step {STEPS + 2} ")
    assert f"the last good checkpoint is {last}," in lines[0]
    assert checkpoint_steps(workdir) == [STEPS - 5, STEPS]  # nothing saved after the NaN
    assert tree_digest(last) == digest
    assert all(math.isfinite(row["loss"]) for row in read_rows(workdir))


def test_skip_drops_nan_updates_and_counts_them_in_metrics_and_checkpoint(runner, tmp_path):
    args = runner.args(GPT_ARGS)
    workdir = tmp_path / "run"
    shutil.copytree(runner.reference("gpt-1", args), workdir)
    skip = (*DIVERGE, "--config.train.on_nonfinite=skip")

    result = runner.run(runner.args(GPT_ARGS, *skip, f"--config.train.steps={STEPS + 5}"), workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["step"]: r for r in read_rows(workdir) if r["split"] == "train" and r["step"] > STEPS}
    assert [rows[s]["skipped"] for s in sorted(rows)] == [0, 1, 2, 3, 4]
    assert math.isfinite(rows[STEPS + 1]["loss"]) and math.isnan(rows[STEPS + 2]["loss"])
    # The count is part of the train state, so a resumed run goes on counting from it.
    saved = read_arrays(workdir / "checkpoints" / str(STEPS + 5))
    assert int(saved["skipped"]) == 4 and int(saved["step"]) == STEPS + 5
