"""BERT pretraining under gradient accumulation gets the big batch's gradient, also when micro-batches select
different numbers of masked tokens.

The loss is two means over the whole batch: MLM cross-entropy over all selected tokens plus NSP cross-entropy
over all examples. The reference is computed here without bmjax's task or step, on the whole batch at once.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bmjax.models import build_model
from bmjax.train import step as step_lib
from bmjax.train.tasks import get_task

BATCH, LENGTH, PREDICTIONS, VOCAB = 8, 16, 4, 61
READ_GRADIENT = optax.GradientTransformation(lambda params: optax.EmptyState(), lambda g, s, p=None: (g, s))
SHAPE = dict(name="bert", vocab_size=VOCAB, d_model=32, num_layers=1, num_heads=4, d_ff=64, max_len=LENGTH)


def uneven_pretraining_batch():
    """Four micro-batches of two rows selecting 8, 1, 5 and 0 tokens (mlm_weights 0 on the rest)."""
    rng = np.random.default_rng(0)
    selected_per_row = [4, 4, 1, 0, 3, 2, 0, 0]
    positions = np.zeros((BATCH, PREDICTIONS), np.int32)
    weights = np.zeros((BATCH, PREDICTIONS), np.float32)
    for row, n in enumerate(selected_per_row):
        positions[row, :n] = np.sort(rng.choice(np.arange(1, LENGTH - 1), n, replace=False))
        weights[row, :n] = 1.0
    assert weights.reshape(4, -1).sum(axis=1).tolist() == [8, 1, 5, 0]
    mask = np.ones((BATCH, LENGTH), np.int32)
    mask[1, 12:] = 0
    return {"input_ids": jnp.asarray(rng.integers(0, VOCAB, (BATCH, LENGTH)), jnp.int32),
            "token_type_ids": jnp.asarray((np.arange(LENGTH) >= LENGTH // 2)[None].repeat(BATCH, 0), jnp.int32),
            "attention_mask": jnp.asarray(mask),
            "mlm_positions": jnp.asarray(positions),
            "mlm_targets": jnp.asarray(rng.integers(0, VOCAB, (BATCH, PREDICTIONS)), jnp.int32),
            "mlm_weights": jnp.asarray(weights),
            "nsp_labels": jnp.asarray([0, 1, 1, 0, 1, 0, 0, 1], jnp.int32)}


def pretraining_loss(params, graphdef, rest, batch):
    """MLM CE averaged over the batch's selected tokens + NSP CE averaged over its examples."""
    out = nnx.merge(graphdef, params, rest)(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                                            mlm_positions=batch["mlm_positions"])
    mlm = optax.softmax_cross_entropy_with_integer_labels(out.mlm_logits.astype(jnp.float32), batch["mlm_targets"])
    nsp = optax.softmax_cross_entropy_with_integer_labels(out.nsp_logits.astype(jnp.float32), batch["nsp_labels"])
    weights = batch["mlm_weights"]
    return jnp.sum(mlm * weights) / jnp.maximum(jnp.sum(weights), 1.0) + jnp.mean(nsp)


def step_gradient(model, task_name, batch, grad_accum):
    """(gradient, logged metrics) of one bmjax train step with `grad_accum` micro-batches, dropout off."""
    graphdef, params, rest = step_lib.split_model(model)
    train_step = step_lib.make_train_step(graphdef, get_task(task_name), READ_GRADIENT, lambda s: 0.0,
                                          base_key=jax.random.key(0), use_dropout=False, grad_accum=grad_accum)
    state = step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optax.EmptyState(),
                                rest=rest, skipped=jnp.zeros((), jnp.int32))
    new_state, out = jax.jit(train_step)(state, batch)
    return (jax.tree.map(lambda new, old: np.asarray(new - old), new_state.params, params),
            {k: float(v) for k, v in out.items()})


# A gradient summed over up to 4 micro-batches, each a reduction over its tokens, regroups the same float32 sums:
# each element may be off by some 8 roundings of each of 4 partial sums, at the scale of the leaf's largest
# entries of the gradient (an entry near zero is a cancellation of terms that large), so atol scales with the
# largest entry of the whole tree (a leaf whose gradient is ~1e-12 is such a cancellation).
ACCUM_ULPS = 4 * 8
# A loss is a sum of at most 2^8 token losses, regrouped by the micro-batches: some 8 roundings either way.
LOSS_RTOL = 2 * 8 * 2 * float(np.finfo(np.float32).eps)


def assert_trees_close(got, want, rtol):
    atol = ACCUM_ULPS * np.finfo(np.float32).eps * max(float(np.max(np.abs(w))) for w in jax.tree.leaves(want))
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def reference():
    model, batch = build_model(SHAPE, rngs=nnx.Rngs(0)), uneven_pretraining_batch()
    graphdef, params, rest = step_lib.split_model(model)
    loss_and_grad = jax.jit(jax.value_and_grad(pretraining_loss), static_argnums=1)  # op by op it takes ~40 s
    loss, grads = loss_and_grad(params, graphdef, rest, batch)
    micro_means = [loss_and_grad(params, graphdef, rest, jax.tree.map(lambda x: x[2 * i:2 * i + 2], batch))[1]
                   for i in range(4)]
    mean_of_means = jax.tree.map(lambda *g: sum(g) / 4, *micro_means)
    return model, batch, float(loss), jax.tree.map(np.asarray, grads), jax.tree.map(np.asarray, mean_of_means)


@pytest.mark.parametrize("grad_accum", [1, 2, 4])
def test_accumulated_pretraining_gradient_is_the_big_batchs(reference, grad_accum):
    model, batch, loss, grads, _ = reference
    got, out = step_gradient(model, "mlm", batch, grad_accum)
    assert out["loss"] == pytest.approx(loss, rel=LOSS_RTOL)  # the batch's loss, not a mean of micro-batch losses
    assert out["loss"] == pytest.approx(out["mlm_loss"] + out["nsp_loss"], rel=LOSS_RTOL)
    assert_trees_close(got, grads, rtol=1e-5)


def test_a_mean_of_micro_batch_means_would_be_told_apart(reference):
    """With 8, 1, 5 and 0 selected tokens, averaging micro-batch means (what accumulation used to compute
    for BERT) is far from the big batch's gradient, well beyond the tolerance above."""
    _, _, _, grads, mean_of_means = reference
    differences = [np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12)
                   for a, b in zip(jax.tree.leaves(mean_of_means), jax.tree.leaves(grads))]
    assert max(differences) > 0.1


def test_classification_weighs_examples_across_micro_batches():
    """Classification's loss is a mean over the weighted examples: exact also when micro-batches hold
    different numbers of real (weight 1) rows."""
    rng = np.random.default_rng(1)
    model = build_model(dict(SHAPE, heads="classification", num_labels=3), rngs=nnx.Rngs(0))
    batch = {"input_ids": jnp.asarray(rng.integers(0, VOCAB, (BATCH, LENGTH)), jnp.int32),
             "token_type_ids": jnp.zeros((BATCH, LENGTH), jnp.int32),
             "attention_mask": jnp.ones((BATCH, LENGTH), jnp.int32),
             "labels": jnp.asarray(rng.integers(0, 3, BATCH), jnp.int32),
             "weights": jnp.asarray([1, 1, 1, 1, 1, 1, 1, 0], jnp.float32)}  # 4 and 3 real rows at grad_accum=2

    def weighted_mean_loss(params, graphdef, rest):
        logits = nnx.merge(graphdef, params, rest)(batch["input_ids"], batch["token_type_ids"],
                                                   batch["attention_mask"]).logits
        ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["labels"])
        return jnp.sum(ce * batch["weights"]) / jnp.sum(batch["weights"])

    graphdef, params, rest = step_lib.split_model(model)
    loss, grads = jax.jit(jax.value_and_grad(weighted_mean_loss), static_argnums=1)(params, graphdef, rest)
    got, out = step_gradient(model, "classification", batch, grad_accum=2)
    assert out["loss"] == pytest.approx(float(loss), rel=LOSS_RTOL)
    assert_trees_close(got, jax.tree.map(np.asarray, grads), rtol=1e-5)


def test_eval_over_uneven_batches_reports_the_whole_sets_loss(reference):
    """Eval sums (sum, count) metrics over batches; the pretraining loss is then the whole set's MLM token mean
    plus its NSP example mean, not an average of per-batch losses."""
    model, batch, loss, _, _ = reference
    graphdef, params, rest = step_lib.split_model(model)
    task = get_task("mlm")
    eval_step = jax.jit(step_lib.make_eval_step(graphdef, task))
    parts = [eval_step(params, rest, jax.tree.map(lambda x: x[2 * i:2 * i + 2], batch)) for i in range(4)]
    totals = jax.tree.map(lambda *m: sum(m), *parts)
    assert task.finalize(jax.device_get(totals))["loss"] == pytest.approx(loss, rel=LOSS_RTOL)
