"""Dropout masks (bmjax/models/dropout.py) are jax.random.bernoulli's bit for bit: same bits for every key and
shape, same mask for every rate, nnx.Dropout's output exactly, the same on a sharded mesh as on one device, and
jax's own path for keys of another PRNG implementation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bmjax.models import dropout

SHAPES = [(1,), (7,), (3, 5), (2, 3, 5, 7), (8, 4, 128, 128)]


def keys():
    base = jax.random.key(0)
    return [base, jax.random.fold_in(base, 1), jax.random.key(2 ** 31 - 1), jax.random.split(jax.random.key(9))[1]]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bits_are_jax_random_bits(shape):
    for key in keys():
        expected = np.asarray(jax.random.bits(key, shape, jnp.uint32))
        np.testing.assert_array_equal(np.asarray(dropout.random_bits(key, shape)), expected)
        np.testing.assert_array_equal(np.asarray(jax.jit(dropout.random_bits, static_argnums=1)(key, shape)),
                                      expected)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.03, 0.9])
def test_keep_mask_is_jax_random_bernoulli(rate):
    for key in keys():
        for shape in SHAPES:
            expected = np.asarray(jax.random.bernoulli(key, 1.0 - rate, shape))
            np.testing.assert_array_equal(np.asarray(dropout.keep_mask(key, rate, shape)), expected)


def test_dropout_is_nnx_dropout_exactly_and_takes_one_key_per_call():
    x = jax.random.normal(jax.random.key(3), (4, 16, 32))
    ours, theirs = nnx.Rngs(dropout=5), nnx.Rngs(dropout=5)
    for _ in range(3):  # each call takes the stream's next key, as nnx.Dropout does
        expected = nnx.Dropout(0.1, deterministic=False)(x, rngs=theirs)
        np.testing.assert_array_equal(np.asarray(dropout.dropout(x, 0.1, ours)), np.asarray(expected))
    kept = np.asarray(dropout.dropout(x, 0.1, nnx.Rngs(dropout=5))) != 0
    assert 0.85 < kept.mean() < 0.95
    np.testing.assert_array_equal(np.asarray(dropout.dropout(x, 0.0, ours)), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(dropout.dropout(x, 0.1, None)), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(dropout.dropout(x, 1.0, ours)), np.zeros(x.shape, np.float32))


def test_mask_on_a_sharded_mesh_is_the_one_device_mask():
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    shape = (8, 4, 16, 16)
    key = jax.random.key(11)
    sharding = NamedSharding(mesh, P("data", "model"))

    @jax.jit
    def sharded(key):
        return jax.lax.with_sharding_constraint(dropout.keep_mask(key, 0.1, shape), sharding)

    np.testing.assert_array_equal(np.asarray(sharded(key)), np.asarray(jax.random.bernoulli(key, 0.9, shape)))


def test_other_prng_implementations_take_jax_s_own_path():
    key = jax.random.key(4, impl="rbg")
    np.testing.assert_array_equal(np.asarray(dropout.keep_mask(key, 0.2, (5, 6))),
                                  np.asarray(jax.random.bernoulli(key, 0.8, (5, 6))))


def test_the_cpu_program_has_no_loop():
    """The reason the module exists: jax lowers its CPU hash as a while loop; ours is straight-line code."""
    key = jax.random.key(0)
    ours = jax.jit(lambda k: dropout.keep_mask(k, 0.1, (64, 64))).lower(key).as_text()
    theirs = jax.jit(lambda k: jax.random.bernoulli(k, 0.9, (64, 64))).lower(key).as_text()
    assert "while" in theirs and "while" not in ours
