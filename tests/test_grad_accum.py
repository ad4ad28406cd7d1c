"""Gradient accumulation is the big batch's gradient, also when micro-batches score different numbers of tokens.

The reference is computed here without bmjax's step: the gradient of the batch's token-weighted mean
cross-entropy, sum(w * ce) / sum(w), over the whole batch at once.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bmjax.defaults import base_config
from bmjax.models import build_model
from bmjax.train import step as step_lib
from bmjax.train.tasks import get_task

BATCH, LENGTH, VOCAB = 8, 16, 64
READ_GRADIENT = optax.GradientTransformation(lambda params: optax.EmptyState(), lambda g, s, p=None: (g, s))


def tiny_gpt():
    c = base_config().model
    c.update(dict(name="gpt", vocab_size=VOCAB, d_model=32, num_layers=1, num_heads=4, max_len=LENGTH))
    return build_model(c, rngs=nnx.Rngs(0))


def uneven_batch():
    """Four micro-batches of two rows that score 32, 5, 17 and 1 target tokens (weights 0 elsewhere)."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCAB, (BATCH, LENGTH + 1))
    weights = np.zeros((BATCH, LENGTH), np.float32)
    weights[0:2] = 1.0
    weights[2, :5] = 1.0
    weights[4, 3:12] = 1.0
    weights[5, 8:] = 1.0
    weights[7, -1] = 1.0
    counts = weights.reshape(4, -1).sum(axis=1)
    assert counts.tolist() == [32, 5, 17, 1]
    return {"inputs": jnp.asarray(tokens[:, :-1], jnp.int32), "targets": jnp.asarray(tokens[:, 1:], jnp.int32),
            "weights": jnp.asarray(weights)}


def step_gradient(model, batch, grad_accum):
    """(gradient, logged loss) of one bmjax train step with `grad_accum` micro-batches."""
    graphdef, params, rest = step_lib.split_model(model)
    train_step = step_lib.make_train_step(graphdef, get_task("lm"), READ_GRADIENT, lambda s: 0.0,
                                          base_key=jax.random.key(0), use_dropout=False, grad_accum=grad_accum)
    state = step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optax.EmptyState(),
                                rest=rest, skipped=jnp.zeros((), jnp.int32))
    new_state, out = jax.jit(train_step)(state, batch)
    return jax.tree.map(lambda new, old: np.asarray(new - old), new_state.params, params), float(out["loss"])


def token_weighted_mean_loss(params, graphdef, rest, batch):
    logits = nnx.merge(graphdef, params, rest)(batch["inputs"])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["targets"])
    return jnp.sum(ce * batch["weights"]) / jnp.sum(batch["weights"])


@pytest.fixture(scope="module")
def reference():
    model, batch = tiny_gpt(), uneven_batch()
    graphdef, params, rest = step_lib.split_model(model)
    # Compiled, as the step it is compared with: op by op on 8 devices the five gradients took most of the file's time.
    value_and_grad = jax.jit(jax.value_and_grad(token_weighted_mean_loss), static_argnums=1)
    loss, grads = value_and_grad(params, graphdef, rest, batch)
    micro_means = [value_and_grad(params, graphdef, rest, jax.tree.map(lambda x: x[2 * i:2 * i + 2], batch))[1]
                   for i in range(4)]
    mean_of_means = jax.tree.map(lambda *g: sum(g) / 4, *micro_means)
    return model, batch, float(loss), jax.tree.map(np.asarray, grads), jax.tree.map(np.asarray, mean_of_means)


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


@pytest.mark.parametrize("grad_accum", [1, 2, 4])
def test_accumulated_gradient_is_the_token_weighted_mean(reference, grad_accum):
    model, batch, loss, grads, mean_of_means = reference
    got, logged_loss = step_gradient(model, batch, grad_accum)
    assert logged_loss == pytest.approx(loss, rel=LOSS_RTOL)  # the logged loss is the batch's, not a mean of means
    assert_trees_close(got, grads, rtol=1e-5)


def test_a_mean_of_micro_batch_means_would_be_told_apart(reference):
    """The uneven counts make averaging micro-batch means (the mistake this guards against) visibly wrong."""
    _, _, _, grads, mean_of_means = reference
    differences = [np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12)
                   for a, b in zip(jax.tree.leaves(mean_of_means), jax.tree.leaves(grads))]
    assert max(differences) > 0.1
