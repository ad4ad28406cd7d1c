"""Dropout masks, bit for bit jax.random.bernoulli's, without its cost on CPU.

jax draws a dropout mask as `jax.random.bernoulli(key, keep_prob, shape)`: one Threefry-2x32 hash of each element's
flat index (jax's partitionable Threefry, the default), its two output words xor-ed, the top 23 bits made a float
in [0, 1), kept where that float is below keep_prob. On CPU jax lowers the hash as a loop of five iterations, so
XLA writes and reads every intermediate array five times: in BERT fine-tuning on CPU that was a large share of the
step (experiments/bert_finetune/README.md). Written out here as straight-line arithmetic, the same hash fuses into
one elementwise pass. The mask is the same bits, so runs keep their masks (and their results) exactly;
tests/test_dropout.py holds it to jax's on keys, shapes and rates. Keys of another PRNG implementation
(`jax_default_prng_impl`), jax configured for the original (non-partitionable) Threefry, or arrays of 2^32 elements
or more take jax's own path.

Threefry-2x32 (Salmon et al. 2011, 20 rounds): with key words k0, k1 and k2 = k0 ^ k1 ^ 0x1BD11BDA, the counter
pair (x0, x1) = (0, index) gets x0 += k0, x1 += k1, then five groups of four rounds
    x0 += x1;  x1 = rotl(x1, r);  x1 ^= x0        (r from [13, 15, 26, 6] and [17, 29, 16, 24] alternately)
each group followed by the key schedule's injection x0 += k[(g+1) % 3], x1 += k[(g+2) % 3] + (g + 1).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
KEY_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(x, r: int):
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(k0, k1, x0, x1):
    """The Threefry-2x32 hash of counter words (x0, x1) under key (k0, k1), unrolled; uint32 arrays."""
    ks = (k0, k1, k0 ^ k1 ^ KEY_PARITY)
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for group in range(5):
        for r in ROTATIONS[group % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, r) ^ x0
        x0 = x0 + ks[(group + 1) % 3]
        x1 = x1 + ks[(group + 2) % 3] + np.uint32(group + 1)
    return x0, x1


def _fast_path(key) -> bool:
    return (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
            and jax.random.key_impl(key) == jax.random.key_impl(jax.random.key(0, impl="threefry2x32"))
            and bool(jax.config.jax_threefry_partitionable))


def random_bits(key, shape) -> jax.Array:
    """uint32 bits equal to jax.random.bits(key, shape) for a Threefry key."""
    shape = tuple(shape)
    if not _fast_path(key) or math.prod(shape) >= 2 ** 32:
        return jax.random.bits(key, shape, jnp.uint32)
    k0, k1 = jax.random.key_data(key)
    index = jnp.zeros(shape, jnp.uint32)  # the element's row-major flat index: the counter's low word
    stride = 1
    for axis in reversed(range(len(shape))):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride)
        stride *= shape[axis]
    hi, lo = threefry2x32(k0, k1, jnp.zeros(shape, jnp.uint32), index)
    return hi ^ lo


def keep_mask(key, rate: float, shape) -> jax.Array:
    """Equal to jax.random.bernoulli(key, 1 - rate, shape): True where an element is kept."""
    bits = random_bits(key, shape)
    # jax.random.uniform's float32 from 32 bits: the top 23 as the mantissa of a float in [1, 2), minus 1.
    one = np.array(1.0, np.float32).view(np.uint32)
    uniform = jax.lax.bitcast_convert_type((bits >> np.uint32(9)) | one, jnp.float32) - np.float32(1.0)
    return jnp.maximum(np.float32(0.0), uniform) < jnp.asarray(1.0 - rate, jnp.float32)


def dropout(x, rate: float, rngs: nnx.Rngs | None):
    """nnx.Dropout's result exactly (same key from rngs.dropout, same mask, kept values scaled by 1/(1-rate)),
    active iff rngs is given and rate > 0."""
    if rngs is None or rate <= 0.0:
        return x
    if rate >= 1.0:
        return jnp.zeros_like(x)
    keep_prob = 1.0 - rate
    keep = keep_mask(rngs.dropout(), rate, x.shape)
    return jnp.where(keep, x / keep_prob, jnp.zeros_like(x))
