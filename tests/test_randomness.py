"""Dropout randomness of the train step: which masks a step draws, and that a resumed run draws them again.

The probe model below multiplies ones by a parameter vector `w` of ones and applies bmjax's dropout, so the
gradient of the loss with respect to `w` *is* the dropout mask (scaled by 1/(1-rate)). With an optimizer whose
update is the gradient itself, `new w - old w` reads the masks a train step drew.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bmjax.models import layers
from bmjax.train import step as step_lib
from bmjax.train.tasks import Task

WIDTH = 4096  # mask positions per row: enough that "about half agree" is never a fluke
RATE = 0.5


class Probe(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.ones((WIDTH,)))

    def __call__(self, x, rngs):
        return layers.dropout(x * self.w[...], RATE, rngs)


def probe_loss(model, batch, rngs):
    """Mean over rows of sum(dropout(x * w)); count = rows, so every row weighs the same."""
    rows = jnp.asarray(batch["x"].shape[0], jnp.float32)
    loss = jnp.sum(model(batch["x"], rngs)) / rows
    return loss, {"loss": (loss * rows, rows)}


PROBE_TASK = Task("probe", probe_loss, ("x",))
READ_GRADIENT = optax.GradientTransformation(lambda params: optax.EmptyState(), lambda g, s, p=None: (g, s))


def masks_of_step(step: int, *, seed=0, grad_accum=1, rows=1):
    """The summed keep-masks (0/1 per position, summed over rows) that train step `step` draws.

    The state is built at `step` directly: exactly what a run restored from a checkpoint at that step holds.
    """
    graphdef, params, rest = step_lib.split_model(Probe())
    train_step = step_lib.make_train_step(graphdef, PROBE_TASK, READ_GRADIENT, lambda s: 0.0,
                                          base_key=jax.random.key(seed), use_dropout=True, grad_accum=grad_accum)
    state = step_lib.TrainState(step=jnp.asarray(step, jnp.int32), params=params, opt_state=READ_GRADIENT.init(params),
                                rest=rest, skipped=jnp.zeros((), jnp.int32))
    new_state, _ = jax.jit(train_step)(state, {"x": jnp.ones((rows, WIDTH))})
    gradient = np.asarray(new_state.params["w"][...] - params["w"][...])
    # The gradient is mean over rows of mask / (1 - rate): back to a count of keeps per position.
    return np.rint(gradient * rows * (1.0 - RATE)).astype(int)


def agreement(a, b):
    return float(np.mean(a == b))


def test_bmjax_dropout_is_inverted_dropout_with_the_streams_keys():
    """The mask is bernoulli(1 - rate) with the key rngs.dropout() hands out, kept values scaled by 1/(1-rate)."""
    x = jnp.arange(1.0, 1.0 + 2 * WIDTH).reshape(2, WIDTH)
    key = jax.random.key(7)
    out = jax.jit(lambda x: layers.dropout(x, RATE, nnx.Rngs(dropout=key)))(x)
    keep = jax.random.bernoulli(nnx.Rngs(dropout=key).dropout(), 1.0 - RATE, x.shape)
    np.testing.assert_array_equal(np.asarray(out), np.where(keep, np.asarray(x) / (1.0 - RATE), 0.0))
    assert 0.45 < float(np.mean(np.asarray(keep))) < 0.55
    np.testing.assert_array_equal(np.asarray(layers.dropout(x, RATE, None)), np.asarray(x))  # eval: identity


def test_masks_differ_between_steps():
    first, second = masks_of_step(0), masks_of_step(1)
    assert set(np.unique(first)) == {0, 1}
    assert 0.4 < agreement(first, second) < 0.6  # independent masks agree on about half the positions


def test_masks_differ_between_seeds():
    assert 0.4 < agreement(masks_of_step(3, seed=0), masks_of_step(3, seed=1)) < 0.6


def test_micro_batches_of_one_step_draw_different_masks():
    """Two micro-batches of one row each: a position both kept counts 2, one kept 1, none 0. Equal masks in
    every micro-batch (one key per step) would leave no 1s; independent ones give 1 at about half the positions.
    """
    summed = masks_of_step(5, grad_accum=2, rows=2)
    assert set(np.unique(summed)) <= {0, 1, 2}
    assert 0.4 < float(np.mean(summed == 1)) < 0.6


def test_micro_batch_masks_are_not_the_next_steps_masks():
    """The second micro-batch of step 0 does not draw step 1's masks (as a key of step + index would)."""
    pair = masks_of_step(0, grad_accum=2, rows=2)
    next_step = masks_of_step(1)
    # Had a micro-batch of step 0 drawn step 1's mask, every position step 1 keeps would be kept at least once
    # in the pair: pair >= next_step everywhere. Independent masks: at 1 - 0.5 * 0.25 = 0.875 of the positions.
    assert float(np.mean(pair >= next_step)) < 0.95


@pytest.mark.parametrize("grad_accum,rows", [(1, 1), (2, 2)])
def test_a_resumed_run_draws_the_same_masks(grad_accum, rows):
    """The masks are a function of (seed, step, micro-batch): drawn again for the same step (a run restored at
    that step), they are identical, bit for bit."""
    np.testing.assert_array_equal(masks_of_step(4, grad_accum=grad_accum, rows=rows),
                                  masks_of_step(4, grad_accum=grad_accum, rows=rows))


def test_resume_continues_the_sequence_of_masks():
    """Steps 0..2 run in one go draw, step by step, what a fresh state at each step draws (the restore)."""
    graphdef, params, rest = step_lib.split_model(Probe())
    train_step = jax.jit(step_lib.make_train_step(graphdef, PROBE_TASK, READ_GRADIENT, lambda s: 0.0,
                                                  base_key=jax.random.key(0), use_dropout=True, grad_accum=1))
    state = step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optax.EmptyState(),
                                rest=rest, skipped=jnp.zeros((), jnp.int32))
    for step in range(3):
        before = np.asarray(state.params["w"][...])
        state, _ = train_step(state, {"x": jnp.ones((1, WIDTH))})
        drawn = np.rint((np.asarray(state.params["w"][...]) - before) * (1.0 - RATE)).astype(int)
        np.testing.assert_array_equal(drawn, masks_of_step(step))
