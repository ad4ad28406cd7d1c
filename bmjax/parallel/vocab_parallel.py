"""Vocabulary-parallel cross-entropy: the loss of logits sharded over the vocabulary, without gathering them.

With tensor parallelism the output layer's matmul leaves each device the logits of its slice of the vocabulary
([batch, length, vocab / t]). Gathering them would put the full [batch, length, vocab] float32 logits on every
device, the largest activation of a GPT. Instead (Megatron-LM's parallel cross-entropy) each device reduces its
slice and only [batch, length] vectors cross the `tensor` axis:

    max    = pmax(local max)                      (a stabiliser only: no gradient flows through it)
    sumexp = psum(sum(exp(local logits - max)))
    target = psum(the target's logit, from the one device whose slice holds it)
    loss   = log(sumexp) + max - target

`cross_entropy` is what tasks call: it takes this path when the layout in force (bmjax/models/sharding.py) shards
the vocabulary axis of the logits, i.e. automatically whenever mesh.tensor > 1 and the vocabulary divides,
and the plain optax loss otherwise. Both give the same numbers.
"""
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from bmjax.models import sharding

LOGIT_NAMES = ("batch", "length", "vocab")


def _shard_loss(logits, labels, *, axes):
    """One device's share: logits [b, l, v/t] (its vocabulary slice), labels [b, l] global ids."""
    logits = logits.astype(jnp.float32)
    width = logits.shape[-1]
    start = jax.lax.axis_index(axes) * width
    top = jax.lax.pmax(jnp.max(jax.lax.stop_gradient(logits), axis=-1), axes)
    sumexp = jax.lax.psum(jnp.sum(jnp.exp(logits - top[..., None]), axis=-1), axes)
    local = labels - start
    mine = (local >= 0) & (local < width)
    picked = jnp.take_along_axis(logits, jnp.clip(local, 0, width - 1)[..., None], axis=-1)[..., 0]
    target = jax.lax.psum(jnp.where(mine, picked, 0.0), axes)
    return jnp.log(sumexp) + top - target


def vocab_parallel_cross_entropy(logits, labels, mesh, spec: P):
    """Per-token cross-entropy [batch, length] float32 of logits laid out as `spec` (vocab axis last, sharded)."""
    vocab_axes = sharding.spec_axes(spec[-1])
    axes = vocab_axes if len(vocab_axes) > 1 else vocab_axes[0]
    fn = jax.shard_map(lambda x, y: _shard_loss(x, y, axes=axes), mesh=mesh,
                       in_specs=(spec, P(*spec[:-1])), out_specs=P(*spec[:-1]))
    return fn(logits, labels)


def cross_entropy(logits, labels):
    """Per-token cross-entropy [..., length] float32 of logits [batch, length, vocab] and integer labels.

    Vocabulary-parallel when the layout in force shards the vocabulary; otherwise optax's loss.
    """
    layout = sharding.current()
    if layout is not None and logits.ndim == len(LOGIT_NAMES):
        spec = layout.spec(LOGIT_NAMES, logits.shape)
        if spec[-1] is not None:
            return vocab_parallel_cross_entropy(logits, labels, layout.mesh, spec)
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
