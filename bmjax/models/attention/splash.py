"""Splash attention: the TPU's fused (Pallas/Mosaic) attention kernel, with causal masks and packed-document
segment ids (jax.experimental.pallas.ops.tpu.splash_attention).

The kernel works on one example and takes [heads, length, head_dim]; this wrapper transposes, scales the
queries by 1/sqrt(head_dim) or the given scale (the kernel does not), and maps it over the batch. A Mosaic kernel cannot be partitioned by XLA, so
under a layout (bmjax/models/sharding.py) it runs inside `shard_map`: each device gets its batch rows and,
when the `heads` rule shards them, its heads; the length must stay whole on every device (use `ring` for sequence
parallelism). Off a TPU the kernel runs in Pallas interpret mode (slow; for tests).

Masks: causality is the kernel's static mask (fully masked blocks are skipped). Segments go in as the kernel's
SegmentIds: a query sees only keys of its own segment. A key-padding mask becomes a key segment of -1 that no
query has, so padded keys are never seen. Attention dropout is not supported (the kernel has none).
The kernel's blocks are multiples of 128 positions (its lane width): a length that is not is padded up with
keys no query sees, and the padded queries are dropped.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as splash
from jax.sharding import PartitionSpec as P

from bmjax.models import sharding

LANES = 128  # the kernel's key block must be a multiple of this


def block_size(length: int) -> int:
    """The largest of 512, 256, 128 that divides `length` (a multiple of 128; bigger blocks run faster)."""
    return next(block for block in (512, 256, LANES) if length % block == 0)


@functools.lru_cache(maxsize=32)
def _kernel(heads: int, length: int, causal: bool, interpret: bool):
    """A kernel for [heads, length, head_dim] queries; built once per shape (its block masks are computed in
    numpy at trace time)."""
    one = splash.CausalMask((length, length)) if causal else splash.FullMask((length, length))
    block = block_size(length)
    sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                              block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block,
                              block_kv_dq=block)
    return splash.make_splash_mha(splash.MultiHeadMask([one] * heads), block_sizes=sizes, head_shards=1,
                                  q_seq_shards=1, interpret=interpret)


def _attend_local(q, k, v, q_seg, kv_seg, *, causal, interpret, scale):
    """q [B, L, H, D], k/v [B, L, K, D], q_seg/kv_seg int [B, L] or None -> [B, L, H, D] on one device."""
    batch, length, heads, head_dim = q.shape
    kernel = _kernel(heads, length, causal, interpret)
    q = jnp.swapaxes(q * jnp.asarray(head_dim ** -0.5 if scale is None else scale, q.dtype), 1, 2)  # [B, H, L, D]
    k, v = jnp.swapaxes(k.astype(q.dtype), 1, 2), jnp.swapaxes(v.astype(q.dtype), 1, 2)
    if q_seg is None:
        out = jax.vmap(kernel)(q, k, v)
    else:
        out = jax.vmap(lambda q, k, v, qs, ks: kernel(q, k, v, segment_ids=splash.SegmentIds(qs, ks)))(
            q, k, v, q_seg, kv_seg)
    return jnp.swapaxes(out, 1, 2)


def _segments(segment_ids, padding_mask, batch_length):
    """(query segments, key segments) int32 [B, L], or (None, None) when nothing is masked by content."""
    if segment_ids is None and padding_mask is None:
        return None, None
    seg = jnp.zeros(batch_length, jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
    kv_seg = seg if padding_mask is None else jnp.where(padding_mask.astype(bool), seg, -1)
    return seg, kv_seg


def splash_attention(q, k, v, *, causal=False, segment_ids=None, padding_mask=None, dropout_rate=0.0,
                     dropout_rng=None, scale=None):
    """Attention by the splash kernel; the signature of `attention_reference`."""
    if dropout_rate > 0.0 and dropout_rng is not None:
        raise ValueError("splash attention has no attention dropout; set model.dropout=0 or use another "
                         "model.attention")
    if q.shape[1] != k.shape[1]:
        raise ValueError(f"splash attention needs as many queries as keys, got {q.shape[1]} and {k.shape[1]}")
    length = q.shape[1]
    q_seg, kv_seg = _segments(segment_ids, padding_mask, q.shape[:2])
    extra = -length % LANES
    if extra:
        if q_seg is None:
            q_seg, kv_seg = jnp.zeros(q.shape[:2], jnp.int32), jnp.zeros(q.shape[:2], jnp.int32)
        q, k, v = (jnp.pad(x, ((0, 0), (0, extra), (0, 0), (0, 0))) for x in (q, k, v))
        q_seg = jnp.pad(q_seg, ((0, 0), (0, extra)))  # the padded queries see their own position at least
        kv_seg = jnp.pad(kv_seg, ((0, 0), (0, extra)), constant_values=-2)  # no real query has -2
        q_seg = q_seg.at[:, length:].set(-2)
    out = _attend(q, k, v, q_seg, kv_seg, causal=causal, layout=sharding.current(), scale=scale)[:, :length]
    if padding_mask is not None:
        # A row whose keys are all padding gets a finite average from the kernel; the reference gives zeros.
        out = jnp.where(jnp.any(padding_mask.astype(bool), axis=1)[:, None, None, None], out, 0).astype(out.dtype)
    return out


def _attend(q, k, v, q_seg, kv_seg, *, causal, layout, scale):
    """The kernel on this device, or inside shard_map over the mesh of the layout in force."""
    if layout is None:
        interpret = jax.default_backend() != "tpu"
        return _attend_local(q, k, v, q_seg, kv_seg, causal=causal, interpret=interpret, scale=scale)

    interpret = layout.platform != "tpu"
    q_spec = layout.spec(("batch", "length", "heads", "head_dim"), q.shape)
    kv_spec = layout.spec(("batch", "length", "kv_heads", "head_dim"), k.shape)
    if q_spec[1] is not None:
        raise ValueError(f"splash attention keeps the length whole on each device, but the mesh shards it over "
                         f"{q_spec[1]}; use model.attention=ring for sequence parallelism")
    if q_spec[2] != kv_spec[2]:
        # Query heads are grouped kv-head-major: only equal head shardings keep each group with its kv head.
        q_spec, kv_spec = P(q_spec[0], None, None, None), P(q_spec[0], None, None, None)
    seg_spec = P(q_spec[0], None)
    args, specs = [q, k, v], [q_spec, kv_spec, kv_spec]
    if q_seg is not None:
        args += [q_seg, kv_seg]
        specs += [seg_spec, seg_spec]

    def shard(q, k, v, *segs):
        q_seg, kv_seg = segs if segs else (None, None)
        return _attend_local(q, k, v, q_seg, kv_seg, causal=causal, interpret=interpret, scale=scale)

    return jax.shard_map(shard, mesh=layout.mesh, in_specs=tuple(specs), out_specs=q_spec,
                         check_vma=False)(*args)
