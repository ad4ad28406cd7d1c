"""Vocabulary-parallel cross-entropy equals optax's, values and gradients, and the full logits never exist."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bmjax.parallel import context
from bmjax.parallel import mesh as mesh_lib
from bmjax.parallel import rules as rules_lib
from bmjax.parallel import vocab_parallel
from helpers.compile import FAST_COMPILE

B, L = 8, 16


def compile_fast(fn, *args):
    return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)


def run(fn, *args):
    return compile_fast(fn, *args)(*args)


def weighted_loss(ce):
    def f(logits, labels):
        return jnp.mean(ce(logits, labels) * jnp.linspace(0.5, 1.5, labels.size).reshape(labels.shape))

    return jax.value_and_grad(f)


def logits_and_labels(vocab):
    k1, k2 = jax.random.split(jax.random.key(0))
    logits = 4.0 * jax.random.normal(k1, (B, L, vocab))
    labels = jax.random.randint(k2, (B, L), 0, vocab).at[0, :2].set(jnp.array([0, vocab - 1]))  # both ends
    return logits, labels


@pytest.mark.parametrize("sizes,vocab", [
    (dict(tensor=4, data=2), 96),
    (dict(tensor=2, sequence=2, fsdp=2), 64),
    (dict(tensor=4, data=2), 66),  # 66 does not divide over 4: logits stay whole, the plain loss runs
])
def test_vocab_parallel_cross_entropy_equals_optax(sizes, vocab):
    logits, labels = logits_and_labels(vocab)
    want, want_grad = run(weighted_loss(optax.softmax_cross_entropy_with_integer_labels), logits, labels)
    mesh = mesh_lib.make_mesh(dict(dict(data=1, fsdp=1, tensor=1, sequence=1), **sizes))
    with context.activate(mesh):
        compiled = compile_fast(weighted_loss(vocab_parallel.cross_entropy), logits, labels)
    got, got_grad = compiled(logits, labels)
    # Which path ran: the vocabulary-parallel loss hands back the logits' gradient split over `tensor` along the
    # vocabulary, each device holding its vocab / tensor columns; the plain loss keeps the vocabulary whole.
    width = vocab // sizes["tensor"] if vocab % sizes["tensor"] == 0 else vocab
    assert {shard.data.shape[-1] for shard in got_grad.addressable_shards} == {width}
    # The sharded log-sum-exp regroups its max and sum over the vocabulary (and the weighted mean over the rows):
    # a few dozen float32 roundings at the loss's scale at most.
    np.testing.assert_allclose(got, want, rtol=32 * np.finfo(np.float32).eps)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-8)


def test_train_step_never_materialises_full_vocabulary_logits():
    """A GPT with an 8192-word vocabulary over tensor=8 (compiled, not run). The model's logits come out split
    along the vocabulary, 8192 / 8 words a device. In the train step each device's scratch memory (all it
    allocates besides the step's arguments and outputs) is smaller than the [8, 16, 8192] float32 logits of the
    whole vocabulary, so no device ever holds them: its slice is an eighth of that, and a gather of the logits
    (or of their gradient) anywhere in the step would need all of it."""
    from bmjax.defaults import base_config
    from bmjax.train import optim, setup

    batch_size, length, vocab = 8, 16, 8192
    c = base_config()
    c.model.update(name="gpt", vocab_size=vocab, d_model=32, num_layers=1, num_heads=4, max_len=length)
    c.data.update(seq_len=length, batch_size=batch_size)
    c.mesh.update(data=1, tensor=8)
    mesh = mesh_lib.make_mesh(c.mesh)
    tx, schedule = optim.make_optimizer(c.optim, 10)
    graphdef, abstract, shardings, _ = setup.create_state(c, mesh, tx)
    step_fn, _, _, feed = setup.make_step_fns(c, mesh, graphdef, shardings, tx, schedule)
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
    batch = {k: jax.ShapeDtypeStruct((batch_size, length), jnp.int32, sharding=feed) for k in ("inputs", "targets")}
    memory = step_fn.lower(state, batch).compile(compiler_options=FAST_COMPILE).memory_analysis()
    full_logits = batch_size * length * vocab * 4
    assert memory.temp_size_in_bytes < full_logits, (memory.temp_size_in_bytes, full_logits)

    # The layout the loss reduces without gathering: the model leaves its logits split along the vocabulary.
    def logits(params, rest, inputs):
        return nnx.merge(graphdef, params, rest)(inputs)

    forward = jax.jit(context.within(logits, mesh, rules_lib.rules_from_config(c.mesh)),
                      in_shardings=(shardings.params, shardings.rest, feed))
    compiled = forward.lower(state.params, state.rest, batch["inputs"]).compile(compiler_options=FAST_COMPILE)
    local = compiled.output_shardings.shard_shape((batch_size, length, vocab))
    assert local[-1] == vocab // 8, compiled.output_shardings
