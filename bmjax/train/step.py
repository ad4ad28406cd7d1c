"""The train and eval steps: pure functions of (state, batch), jitted once over the mesh.

The model lives as an nnx GraphDef plus state; each step merges them inside jit (cheap: NNX's Python work happens
at trace time only) so the hot loop is a plain `jax.jit` with explicit in/out shardings and donated state.
"""
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bmjax.train.tasks import Task


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: the number of updates applied so far
    params: Any  # nnx.State of nnx.Param
    opt_state: Any
    rest: Any  # nnx.State of everything else the model holds (usually empty)
    skipped: jax.Array  # int32 scalar: updates dropped for a non-finite loss or gradient (train.on_nonfinite=skip)


def split_model(model):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, params, rest


def dropout_key(base_key, step, micro_batch):
    """The dropout key of one micro-batch of one step: a function of (seed, step, micro-batch) only, so every
    micro-batch draws its own masks and a resumed run draws the same masks as the run it continues."""
    return jax.random.fold_in(jax.random.fold_in(base_key, step), micro_batch)


def accumulate_gradients(loss_and_grad, params, batch, grad_accum: int, batch_counts=None):
    """The whole batch's loss gradient, over `grad_accum` micro-batches scanned so only one is live at a time.

    `loss_and_grad(params, micro_batch, index, batch_counts)` gets the micro-batch's index (for its dropout
    key). With `batch_counts` None (one micro-batch) it differentiates the task's loss; otherwise the
    micro-batch's share of the batch loss, sum over loss terms of the micro-batch's sum_t / batch_counts[t]
    (see `micro_batch_share`). The shares' gradients add up to the gradient of the whole batch's loss, each
    term a mean over the whole batch, whatever counts the micro-batches have (lm: scored tokens; mlm:
    selected tokens for the MLM term, examples for the NSP term). A mean of micro-batch means would not.
    Metrics come back summed over the micro-batches.
    """
    if grad_accum == 1:
        (_, metrics), grads = loss_and_grad(params, batch, 0, None)
        return grads, metrics
    micro = jax.tree.map(lambda x: x.reshape(grad_accum, x.shape[0] // grad_accum, *x.shape[1:]), batch)

    def body(carry, indexed):
        grad_sum, metric_sum = carry
        index, micro_batch = indexed
        (_, metrics), grads = loss_and_grad(params, micro_batch, index, batch_counts)
        grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
        metric_sum = jax.tree.map(jnp.add, metric_sum, metrics)
        return (grad_sum, metric_sum), None

    first = jax.tree.map(lambda x: x[0], micro)
    metric_shape = jax.eval_shape(lambda: loss_and_grad(params, first, 0, batch_counts)[0][1])
    zeros_metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shape)
    zeros_grads = jax.tree.map(jnp.zeros_like, params)
    (grads, metrics), _ = jax.lax.scan(body, (zeros_grads, zeros_metrics), (jnp.arange(grad_accum), micro))
    return grads, metrics


def micro_batch_share(task: Task, metrics, batch_counts):
    """A micro-batch's part of the batch loss: its sum of each loss term over the whole batch's count."""
    return sum(metrics[term][0] / jnp.maximum(batch_counts[term], 1.0) for term in task.loss_terms)


def logged_loss(task: Task, averages):
    """The loss as the task defines it, from the terms' batch averages (one term: that average itself)."""
    return functools.reduce(jnp.add, [averages[term] for term in task.loss_terms])


def make_train_step(graphdef, task: Task, tx: optax.GradientTransformation, lr_schedule, *, base_key,
                    use_dropout: bool, grad_accum: int, skip_nonfinite: bool = False):
    """One optimizer update: (state, batch) -> (state, {"loss", "grad_norm", "lr", ...}).

    With `skip_nonfinite`, a step whose loss or gradient norm is NaN or infinite keeps the old parameters and
    optimizer state (the step count still advances, so the next step reads the next batch and key) and adds
    one to `state.skipped`, which the metrics report as "skipped".
    """

    def train_step(state: TrainState, batch):
        def loss_fn(params, micro_batch, micro_index, batch_counts):
            model = nnx.merge(graphdef, params, state.rest)
            rngs = nnx.Rngs(dropout=dropout_key(base_key, state.step, micro_index)) if use_dropout else None
            loss, metrics = task.loss(model, micro_batch, rngs)
            if batch_counts is None:  # the whole batch at once
                return loss, metrics
            return micro_batch_share(task, metrics, batch_counts), metrics

        loss_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
        # Counts depend on the batch alone, so they are known before any micro-batch runs.
        batch_counts = task.loss_counts(batch) if grad_accum > 1 else None
        grads, metrics = accumulate_gradients(loss_and_grad, state.params, batch, grad_accum, batch_counts)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        out = {k: s / jnp.maximum(c, 1.0) for k, (s, c) in metrics.items()}
        out["loss"] = logged_loss(task, out)
        out["grad_norm"] = optax.tree.norm(grads)
        out["lr"] = lr_schedule(state.step)
        if skip_nonfinite:
            finite = jnp.isfinite(out["loss"]) & jnp.isfinite(out["grad_norm"])
            keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
            params = jax.tree.map(keep, params, state.params)
            opt_state = jax.tree.map(keep, opt_state, state.opt_state)
            state = state.replace(skipped=state.skipped + jnp.where(finite, 0, 1).astype(state.skipped.dtype))
            out["skipped"] = state.skipped
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, out

    return train_step


def make_multi_step(train_step, steps_per_call: int):
    """Run `steps_per_call` train steps in one call with lax.scan: batches are stacked on a leading axis.

    Fewer host round trips per step; the metrics come back stacked, one row per step.
    """
    if steps_per_call == 1:
        return train_step

    def multi_step(state, batches):
        return jax.lax.scan(train_step, state, batches)

    return multi_step


def make_eval_step(graphdef, task: Task):
    """(params, rest, batch) -> {name: (sum, count)}: summed so batches average exactly."""

    def eval_step(params, rest, batch):
        model = nnx.merge(graphdef, params, rest)
        if task.eval_metrics is not None:  # tasks that report more on eval (e.g. F1 counts)
            return task.eval_metrics(model, batch)
        _, metrics = task.loss(model, batch, None)
        return metrics

    return eval_step
