"""Ring attention: context parallelism over the `sequence` mesh axis (Liu et al. 2023, "Ring Attention with
Blockwise Transformers").

Queries, keys and values arrive sharded along their length over the ring's n devices (the mesh axes the
`length` rule names). Each device keeps its queries and, n times, attends them to the key/value block it holds,
then passes that block to the next device with `ppermute`; after n steps every query has met every key. The
softmax is computed online (running max, running sum, rescaled accumulator), so no device ever holds the full
[length, length] scores or the full keys. Causal masks, packed-document segments, key padding and dropout use
the global positions of each block, so the result equals `attention_reference`.

Listed in IMPLEMENTATIONS as `model.attention=ring`. The mesh and the rules are the layout in force
(bmjax/models/sharding.py); outside one (or with a sequence axis of size 1) the ring has one block and this is
blockwise-exact attention on one device. Every device computes all n blocks, causal ones included
(half of them are fully masked on average; a zig-zag layout would balance that).
"""
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from bmjax.models import dropout as dropout_lib
from bmjax.models import sharding
from bmjax.models.attention.reference import MASK_VALUE


def _block_mask(q_pos, k_pos, q_seg, k_seg, k_pad, causal):
    """[B|1, 1, 1, Lq, Lk] bool, True where a query may see a key of this block; None when nothing is masked."""
    mask = None

    def _and(a, b):
        return b if a is None else jnp.logical_and(a, b)

    if causal:
        mask = _and(mask, (q_pos[:, None] >= k_pos[None, :])[None])
    if q_seg is not None:
        mask = _and(mask, q_seg[:, :, None] == k_seg[:, None, :])
    if k_pad is not None:
        mask = _and(mask, k_pad[:, None, :])
    return None if mask is None else mask[:, None, None]


def _ring_shard(q, k, v, q_seg, k_seg, k_pad, key, *, causal, axis, n, rate, scale, device_axes=None):
    """One device's share: its queries against all n key/value blocks, the blocks arriving round the ring."""
    batch, q_len, heads, head_dim = q.shape
    kv_len, kv_heads = k.shape[1], k.shape[2]
    groups = heads // kv_heads
    scale = head_dim ** -0.5 if scale is None else scale
    me = jax.lax.axis_index(axis) if n > 1 else 0
    qg = q.reshape(batch, q_len, kv_heads, groups, head_dim)
    q_pos = me * q_len + jnp.arange(q_len)
    if key is not None and device_axes:
        # Each device draws its own dropout masks (batch and head shards would otherwise repeat them).
        key = jax.random.fold_in(key, jax.lax.axis_index(device_axes))

    m = jnp.full((batch, kv_heads, groups, q_len), MASK_VALUE, jnp.float32)  # running max
    s = jnp.zeros((batch, kv_heads, groups, q_len), jnp.float32)  # running sum of exp
    acc = jnp.zeros((batch, kv_heads, groups, q_len, head_dim), jnp.float32)  # running sum of p v
    perm = [(j, (j + 1) % n) for j in range(n)]
    for i in range(n):
        src = (me - i) % n  # the device whose block we hold at step i
        logits = jnp.einsum("bqkgd,bskd->bkgqs", qg, k, preferred_element_type=jnp.float32) * scale
        mask = _block_mask(q_pos, src * kv_len + jnp.arange(kv_len), q_seg, k_seg, k_pad, causal)
        if mask is not None:
            logits = jnp.where(mask, logits, MASK_VALUE)
        m_new = jnp.maximum(m, jnp.max(logits, axis=-1))
        p = jnp.exp(logits - m_new[..., None])
        if mask is not None:
            p = jnp.where(mask, p, 0.0)  # a row with no visible key so far must add nothing
        correction = jnp.exp(m - m_new)
        s = s * correction + jnp.sum(p, axis=-1)
        if key is not None:
            # Dropout on the probabilities = dropout on the numerator only; the normaliser stays whole.
            keep = dropout_lib.keep_mask(jax.random.fold_in(key, src), rate, p.shape)
            p = jnp.where(keep, p / (1.0 - rate), 0.0)
        acc = acc * correction[..., None] + jnp.einsum("bkgqs,bskd->bkgqd", p.astype(v.dtype), v,
                                                       preferred_element_type=jnp.float32)
        m = m_new
        if i < n - 1:  # pass the block on; XLA overlaps the transfer with the next block's compute
            k, v = jax.lax.ppermute(k, axis, perm), jax.lax.ppermute(v, axis, perm)
            if k_seg is not None:
                k_seg = jax.lax.ppermute(k_seg, axis, perm)
            if k_pad is not None:
                k_pad = jax.lax.ppermute(k_pad, axis, perm)
    out = acc / jnp.where(s > 0, s, 1.0)[..., None]  # rows that saw no key stay zero, as in the reference
    out = jnp.einsum("bkgqd->bqkgd", out).reshape(batch, q_len, heads, head_dim)
    return out.astype(q.dtype)


def _specs(layout, q, k):
    """PartitionSpecs of q and k/v under the rules, with the heads axis sharded only when q and kv agree."""
    q_spec = layout.spec(("batch", "length", "heads", "head_dim"), q.shape)
    kv_spec = layout.spec(("batch", "length", "kv_heads", "head_dim"), k.shape)
    if q_spec[2] != kv_spec[2] or q_spec[1] != kv_spec[1]:
        # Query heads are grouped kv-head-major, so equal head shardings keep each group with its kv head;
        # otherwise keep all heads on every device.
        q_spec = P(q_spec[0], q_spec[1], None, None)
        kv_spec = P(q_spec[0], q_spec[1], None, None)
    return q_spec, kv_spec


def ring_attention(q, k, v, *, causal=False, segment_ids=None, padding_mask=None, dropout_rate=0.0,
                   dropout_rng=None, scale=None):
    """Attention by the ring over the `length` rule's mesh axes; the signature of `attention_reference`."""
    layout = sharding.current()
    key = dropout_rng if dropout_rate > 0.0 and dropout_rng is not None else None
    padding_mask = None if padding_mask is None else padding_mask.astype(bool)
    if layout is None:
        return _ring_shard(q, k, v, segment_ids, segment_ids, padding_mask, key, causal=causal, axis=None, n=1,
                           rate=dropout_rate, scale=scale)
    if q.shape[1] != k.shape[1]:
        raise ValueError(f"ring attention needs as many queries as keys, got {q.shape[1]} and {k.shape[1]}")
    q_spec, kv_spec = _specs(layout, q, k)
    ring_axes = sharding.spec_axes(q_spec[1])
    n = 1
    for axis in ring_axes:
        n *= layout.mesh.shape[axis]
    tokens_spec = P(q_spec[0], q_spec[1])
    # Devices holding different queries draw different dropout masks; replicas of the same shard agree.
    sharded_axes = tuple(a for entry in q_spec for a in sharding.spec_axes(entry))
    args, specs = [q, k, v], [q_spec, kv_spec, kv_spec]
    optional = {"seg": segment_ids, "pad": padding_mask, "key": key}
    present = {name: value for name, value in optional.items() if value is not None}
    for name, value in present.items():
        args.append(value)
        specs.append(P() if name == "key" else tokens_spec)

    def shard(q, k, v, *extra):
        got = dict(zip(present, extra))
        seg = got.get("seg")
        return _ring_shard(q, k, v, seg, seg, got.get("pad"), got.get("key"), causal=causal,
                           axis=ring_axes if len(ring_axes) > 1 else (ring_axes[0] if ring_axes else None),
                           n=n, rate=dropout_rate, scale=scale, device_axes=sharded_axes)

    fn = jax.shard_map(shard, mesh=layout.mesh, in_specs=tuple(specs), out_specs=q_spec)
    return fn(*args)

