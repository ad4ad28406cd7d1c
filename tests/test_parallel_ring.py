"""Ring attention (model.attention=ring) equals the reference attention, values and gradients, on sharded meshes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bmjax.models import attention
from bmjax.parallel import context
from bmjax.parallel import mesh as mesh_lib
from helpers.compile import FAST_COMPILE

B, L, H, D = 4, 16, 4, 8


def run(fn, *args):
    """jit, compiled at XLA's lowest backend optimisation level, and called."""
    return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)(*args)


def qkv(kv_heads=H, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(k1, (B, L, H, D)), jax.random.normal(k2, (B, L, kv_heads, D)),
            jax.random.normal(k3, (B, L, kv_heads, D)))


def segments():
    return jnp.asarray(np.repeat(np.array([[0] * 5 + [1] * 7 + [2] * 4]), B, 0))


def padding():
    # Real keys: all, 10, 3, and none (that row must come out as zeros, as in the reference).
    return jnp.asarray(np.arange(L)[None] < np.array([16, 10, 3, 0])[:, None])


def weighted_sum(implementation, masks):
    """A scalar of the attention output that weighs every output element differently (for gradients)."""

    def f(q, k, v):
        out = attention.attend(q, k, v, implementation=implementation, **masks)
        return jnp.sum(out * jnp.arange(out.size, dtype=out.dtype).reshape(out.shape) / out.size)

    return jax.value_and_grad(f, argnums=(0, 1, 2))


CASES = {
    # causal + packed documents + grouped-query heads, heads split over tensor, 4 blocks round the ring
    "causal_segments_gqa_sequence4_tensor2": (dict(sequence=4, tensor=2), dict(causal=True, segment_ids="seg"), 2),
    # bidirectional (BERT) with key padding, the batch split over data
    "padding_sequence2_data2_tensor2": (dict(sequence=2, data=2, tensor=2),
                                        dict(causal=False, padding_mask="pad"), H),
}


@pytest.mark.parametrize("case", list(CASES))
def test_ring_attention_equals_reference(case):
    sizes, masks, kv_heads = CASES[case]
    masks = {k: segments() if v == "seg" else padding() if v == "pad" else v for k, v in masks.items()}
    q, k, v = qkv(kv_heads)
    value, grads = run(weighted_sum("reference", masks), q, k, v)
    mesh = mesh_lib.make_mesh(dict(dict(data=1, fsdp=1, tensor=1, sequence=1), **sizes))
    with context.activate(mesh):
        ring_value, ring_grads = run(weighted_sum("ring", masks), q, k, v)
    np.testing.assert_allclose(ring_value, value, rtol=1e-5, atol=1e-5)
    for got, want in zip(ring_grads, grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_ring_attention_shards_the_sequence_and_passes_blocks():
    """On a sequence mesh the compiled program moves K/V blocks with collective-permutes, never gathers them."""
    q, k, v = qkv()
    mesh = mesh_lib.make_mesh(dict(data=1, fsdp=1, tensor=1, sequence=8))
    with context.activate(mesh):
        fn = jax.jit(lambda q, k, v: attention.attend(q, k, v, causal=True, implementation="ring"))
        hlo = fn.lower(q, k, v).compile().as_text()
    assert hlo.count("collective-permute") >= 2 * 7  # k and v, n - 1 hops
    assert "all-gather" not in hlo


def test_ring_attention_without_a_mesh_is_exact_attention():
    q, k, v = qkv(kv_heads=2)
    masks = dict(causal=True, segment_ids=segments())
    ring, reference = run(lambda q, k, v: [attention.attend(q, k, v, implementation=name, **masks)
                                           for name in ("ring", "reference")], q, k, v)
    np.testing.assert_allclose(ring, reference, atol=1e-5)


def test_ring_attention_dropout_is_unbiased_and_keyed():
    """Dropout on the probabilities: the same key gives the same output, and the mean over keys is the output
    without dropout (so the kept probabilities are rescaled by 1/(1-rate) and the normaliser is untouched)."""
    q, k, v = qkv()
    mesh = mesh_lib.make_mesh(dict(data=2, fsdp=1, tensor=1, sequence=4))
    plain = run(lambda q, k, v: attention.attend(q, k, v, causal=True, implementation="reference"), q, k, v)

    def dropped(key):
        return attention.attend(q, k, v, causal=True, implementation="ring", dropout_rate=0.5, dropout_rng=key)

    keys = jax.random.split(jax.random.key(1), 256)
    with context.activate(mesh):
        outs = run(lambda keys: jax.lax.map(dropped, keys), keys)
        again = run(dropped, keys[0])
    np.testing.assert_array_equal(again, outs[0])
    assert float(jnp.abs(outs[0] - plain).mean()) > 0.1
    # A missing 1/(1-rate) would halve the mean (error ~0.2 here); sampling noise over 256 keys is ~0.02.
    assert float(jnp.abs(outs.mean(0) - plain).mean()) < 0.04, float(jnp.abs(outs.mean(0) - plain).mean())
