"""Vocabulary-parallel cross-entropy equals optax's, values and gradients, and the full logits never exist."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bmjax.parallel import context
from bmjax.parallel import mesh as mesh_lib
from bmjax.parallel import vocab_parallel

B, L = 8, 16
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


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
    assert ("shard_map" in compiled.as_text()) == (vocab % sizes["tensor"] == 0)  # which path ran
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-8)


def test_train_step_never_materialises_full_vocabulary_logits():
    """A GPT train step with the vocabulary over tensor=4: every array in the compiled per-device program has a
    vocabulary dimension of 96 / 4 = 24 at most; none holds all 96 logits of a token."""
    from bmjax.defaults import base_config
    from bmjax.train import loop, optim

    c = base_config()
    c.model.update(name="gpt", vocab_size=96, d_model=32, num_layers=1, num_heads=4, max_len=16)
    c.data.update(seq_len=16, batch_size=16)
    c.mesh.update(data=2, tensor=4)
    mesh = mesh_lib.make_mesh(c.mesh)
    tx, schedule = optim.make_optimizer(c.optim, 10)
    graphdef, abstract, shardings, _ = loop.create_state(c, mesh, tx)
    step_fn, _, _, feed = loop.make_step_fns(c, mesh, graphdef, shardings, tx, schedule)
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
    batch = {k: jax.ShapeDtypeStruct((16, 16), jnp.int32, sharding=feed) for k in ("inputs", "targets")}
    hlo = step_fn.lower(state, batch).compile(compiler_options=FAST_COMPILE).as_text()
    assert re.search(r"f32\[8,16,24\]", hlo)  # the local logits: 16/2 rows, 16 positions, 96/4 words
    assert not re.search(r"\[[0-9,]*\b96\b[0-9,]*\]", hlo)
