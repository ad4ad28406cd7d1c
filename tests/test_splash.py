"""Splash attention (model.attention=splash), the TPU kernel, run here in Pallas interpret mode: equal to the
reference for BERT-style padding, for lengths that are not multiples of the kernel's 128-position blocks, and
refusing what it cannot do. Packed causal batches, values and gradients: tests/test_segments.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bmjax.models import attention
from bmjax.parallel import context
from bmjax.parallel import mesh as mesh_lib

B, L, H, D = 2, 12, 4, 8


def qkv(length=L, kv_heads=H):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    return (jax.random.normal(k1, (B, length, H, D)), jax.random.normal(k2, (B, length, kv_heads, D)),
            jax.random.normal(k3, (B, length, kv_heads, D)))


@pytest.mark.parametrize("causal", [False, True])
def test_short_padded_packed_rows_equal_the_reference(causal):
    """12 positions (padded to one 128 block inside), two documents and key padding: every row as the
    reference, including a row whose keys are all padding (zeros, not NaN)."""
    q, k, v = qkv(kv_heads=2)
    segments = jnp.array([[1] * 5 + [2] * 7, [1] * 12])
    padding = jnp.array([[True] * 10 + [False] * 2, [False] * 12])
    want = attention.attention_reference(q, k, v, causal=causal, segment_ids=segments, padding_mask=padding)
    got = jax.jit(lambda q, k, v: attention.attend(q, k, v, causal=causal, segment_ids=segments,
                                                   padding_mask=padding, implementation="splash"))(q, k, v)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert np.all(np.asarray(got[1]) == 0)


def test_splash_refuses_dropout_and_a_sharded_sequence():
    q, k, v = qkv(length=128)
    with pytest.raises(ValueError, match="no attention dropout"):
        attention.attend(q, k, v, implementation="splash", dropout_rate=0.1, dropout_rng=jax.random.key(1))
    mesh = mesh_lib.make_mesh(dict(data=1, fsdp=1, tensor=1, sequence=8))
    with context.activate(mesh), pytest.raises(ValueError, match="use model.attention=ring"):
        jax.jit(lambda q, k, v: attention.attend(q, k, v, causal=True, implementation="splash"))(q, k, v)
