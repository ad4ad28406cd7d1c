"""Multi-head (and grouped-query) self-attention.

Three layers, outermost last:
  * `attention_reference`: a plain einsum version, the ground truth every other
    implementation is tested against.
  * `attend`: picks an implementation by name from `IMPLEMENTATIONS`
    ("reference", "xla", "cudnn", "ring", "splash").
  * `Attention`: the NNX module (projections, rotary positions, attend, output).

Shapes: q [batch, q_len, heads, head_dim]; k, v [batch, kv_len, kv_heads, head_dim]
with heads % kv_heads == 0 (each kv head serves heads // kv_heads query heads).
Masks: `segment_ids` int [batch, len] (packed documents: a token sees only its own
document; needs q_len == kv_len), `padding_mask` bool [batch, kv_len] (True = a real key).

Decoding: `Attention(x, cache=KVCache)` writes the new keys/values into fixed-size
buffers at `cache.index` and attends over everything written so far; it returns
(output, new cache), so a decode step is a pure function that jits once.
"""
from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from bmjax.models import dropout as dropout_lib
from bmjax.models import layers

# Added to masked logits. Finite (not -inf) so a query row with every key masked
# gives a finite softmax instead of NaN.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def make_mask(q_len: int, kv_len: int, *, causal=False, segment_ids=None, padding_mask=None):
    """Boolean mask [batch|1, 1, q_len, kv_len], True where a query may see a key; None if no masking."""
    mask = None

    def _and(a, b):
        return b if a is None else jnp.logical_and(a, b)

    if causal:
        # Queries are the last q_len positions of the kv sequence (q_len == kv_len in training).
        q_pos = jnp.arange(q_len)[:, None] + (kv_len - q_len)
        mask = _and(mask, (q_pos >= jnp.arange(kv_len)[None, :])[None, None])
    if segment_ids is not None:
        mask = _and(mask, (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None])
    if padding_mask is not None:
        mask = _and(mask, padding_mask.astype(bool)[:, None, None, :])
    return mask


def attention_reference(q, k, v, *, causal=False, segment_ids=None, padding_mask=None,
                        dropout_rate=0.0, dropout_rng=None):
    """Softmax(q k^T / sqrt(d)) v with masks, in plain einsums; softmax in float32.

    A query row whose keys are all masked returns zeros. Dropout (on the
    attention probabilities, scaled by 1/(1-rate)) runs iff dropout_rate > 0 and
    a dropout_rng is given.
    """
    batch, q_len, heads, head_dim = q.shape
    kv_len, kv_heads = k.shape[1], k.shape[2]
    groups = heads // kv_heads
    # Group query heads by the kv head that serves them: [B, Lq, K, G, D].
    qg = q.reshape(batch, q_len, kv_heads, groups, head_dim)
    logits = jnp.einsum("bqkgd,bskd->bkgqs", qg, k, preferred_element_type=jnp.float32)
    logits = logits * (head_dim ** -0.5)

    mask = make_mask(q_len, kv_len, causal=causal, segment_ids=segment_ids, padding_mask=padding_mask)
    if mask is not None:
        mask = mask[:, :, None]  # [B|1, 1, 1, Lq, Lk] against logits [B, K, G, Lq, Lk]
        logits = jnp.where(mask, logits, _MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1)
    if mask is not None:
        # Zero rows that had no visible key (softmax made them uniform over masked keys).
        probs = jnp.where(jnp.any(mask, axis=-1, keepdims=True), probs, 0.0)
    if dropout_rate > 0.0 and dropout_rng is not None:
        keep = dropout_lib.keep_mask(dropout_rng, dropout_rate, probs.shape)  # jax.random.bernoulli's mask
        probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)

    out = jnp.einsum("bkgqs,bskd->bqkgd", probs.astype(v.dtype), v,
                     preferred_element_type=jnp.float32)
    return out.reshape(batch, q_len, heads, head_dim).astype(q.dtype)


def _dot_product_attention(implementation: str) -> Callable:
    """An attention function backed by jax.nn.dot_product_attention(implementation=...)."""

    def fn(q, k, v, *, causal=False, segment_ids=None, padding_mask=None,
           dropout_rate=0.0, dropout_rng=None):
        # jax.nn.dot_product_attention has no dropout: with dropout on, take the reference path.
        if dropout_rate > 0.0 and dropout_rng is not None:
            return attention_reference(q, k, v, causal=causal, segment_ids=segment_ids,
                                       padding_mask=padding_mask, dropout_rate=dropout_rate,
                                       dropout_rng=dropout_rng)
        # Causality goes through is_causal (cuDNN then skips the masked blocks); segments and
        # padding through an explicit boolean mask. is_causal aligns query 0 with key 0, so when
        # queries are only the last positions (decoding against a cache) the mask carries it.
        q_len, kv_len = q.shape[1], k.shape[1]
        in_mask = causal and q_len != kv_len
        mask = make_mask(q_len, kv_len, causal=in_mask, segment_ids=segment_ids,
                         padding_mask=padding_mask)
        k, v = k.astype(q.dtype), v.astype(q.dtype)
        return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal and not in_mask,
                                            implementation=implementation)

    return fn


def _ring(q, k, v, **kwargs):
    # Imported on use: ring attention reads the trainer's mesh from bmjax.parallel, which imports this module.
    from bmjax.parallel import ring_attention

    return ring_attention.ring_attention(q, k, v, **kwargs)


def _splash(q, k, v, **kwargs):
    from bmjax.models import splash  # imported on use: it loads Pallas

    return splash.splash_attention(q, k, v, **kwargs)


# Every attention implementation, here and nowhere else (model.attention is validated against these names):
# name -> fn(q, k, v, *, causal, segment_ids, padding_mask, dropout_rate, dropout_rng), each equal to
# `attention_reference` on packed (segment_ids) and padded batches.
IMPLEMENTATIONS: dict[str, Callable] = {
    "xla": _dot_product_attention("xla"),
    "cudnn": _dot_product_attention("cudnn"),  # GPU only
    "reference": attention_reference,
    "ring": _ring,  # sequence parallelism over the mesh's `length` axes (bmjax/parallel/ring_attention.py)
    "splash": _splash,  # the TPU's fused kernel (bmjax/models/splash.py); no attention dropout
}


def attend(q, k, v, *, causal=False, segment_ids=None, padding_mask=None, implementation="xla",
           dropout_rate=0.0, dropout_rng=None):
    """Attention by the implementation registered under `implementation`; returns [B, Lq, H, D]."""
    try:
        fn = IMPLEMENTATIONS[implementation]
    except KeyError:
        raise ValueError(f"unknown attention implementation {implementation!r}; "
                         f"known: {sorted(IMPLEMENTATIONS)}") from None
    return fn(q, k, v, causal=causal, segment_ids=segment_ids, padding_mask=padding_mask,
              dropout_rate=dropout_rate, dropout_rng=dropout_rng)


def apply_rotary(x, positions, *, theta: float = 10000.0):
    """Rotary position embedding, GPT-NeoX/LLaMA "rotate half" form.

    x [B, L, heads, head_dim]; positions int [B, L]. Pair (i, i + head_dim/2) of
    each head is rotated by angle position * theta^(-2i/head_dim). Computed in float32.
    """
    half = x.shape[-1] // 2
    inv_freq = theta ** (-jnp.arange(half, dtype=jnp.float32) * 2.0 / x.shape[-1])
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, L, half]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


@flax.struct.dataclass
class KVCache:
    """One layer's keys and values for decoding, in buffers of a fixed length (so shapes never change).

    k, v [batch, length, kv_heads, head_dim]; `index` (int32 scalar) counts the positions written:
    the next tokens go to index, index + 1, ... Slots at and after `index` are never attended to.
    `start` (int32 [batch]) is each row's first real slot: the slots before it hold left padding, which
    no real token sees, and the token in slot `start` is at position 0 (all zeros without padding).
    """
    k: jax.Array
    v: jax.Array
    index: jax.Array
    start: jax.Array

    @classmethod
    def zeros(cls, batch: int, length: int, kv_heads: int, head_dim: int, dtype, start=None) -> "KVCache":
        buf = jnp.zeros((batch, length, kv_heads, head_dim), dtype)
        start = jnp.zeros((batch,), jnp.int32) if start is None else jnp.asarray(start, jnp.int32)
        return cls(k=buf, v=buf, index=jnp.zeros((), jnp.int32), start=start)

    def positions(self, length: int):
        """Positions [batch, length] of the next `length` tokens (padding slots count as position 0)."""
        slots = self.index + jnp.arange(length)
        return jnp.maximum(slots[None, :] - self.start[:, None], 0)

    def append(self, k, v) -> "KVCache":
        """Write k, v [batch, T, kv_heads, head_dim] at `index`; the index moves on by T."""
        at = (0, self.index, 0, 0)
        return self.replace(k=jax.lax.dynamic_update_slice(self.k, k.astype(self.k.dtype), at),
                            v=jax.lax.dynamic_update_slice(self.v, v.astype(self.v.dtype), at),
                            index=self.index + k.shape[1])


def attend_cached(q, cache: KVCache):
    """The last q_len written positions of `cache` attend causally to all its written positions.

    q [B, T, heads, head_dim] are the queries of positions index-T .. index-1 (their keys are already in
    the cache). Keys before a row's `start` (left padding) are hidden, except from their own query, so every
    query sees at least one key. Always the XLA path: decoding queries are few, and the mask is not plain causal.
    """
    q_len, kv_len = q.shape[1], cache.k.shape[1]
    q_slot = (cache.index - q_len + jnp.arange(q_len))[:, None]  # [T, 1]
    kv_slot = jnp.arange(kv_len)[None, :]  # [1, S]
    real = kv_slot[None] >= cache.start[:, None, None]  # [B, 1, S]
    mask = (q_slot >= kv_slot)[None] & (real | (q_slot == kv_slot)[None])  # [B, T, S]
    return jax.nn.dot_product_attention(q, cache.k.astype(q.dtype), cache.v.astype(q.dtype),
                                        mask=mask[:, None], implementation="xla")


class Attention(nnx.Module):
    """Self-attention: q/k/v projections, optional rotary, `attend`, output projection.

    Dropout here is on the attention probabilities only (the residual dropout after
    the output projection belongs to the block). It is active iff `rngs` is given
    at call time and the rate is positive.
    """

    def __init__(self, *, d_model: int, num_heads: int, num_kv_heads: int, head_dim: int,
                 use_bias: bool, dropout: float, implementation: str, rotary: bool,
                 rope_theta: float, dtype, param_dtype, causal: bool, rngs: nnx.Rngs,
                 init_std: float = 0.02, out_init_std: float | None = None):
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.dropout = dropout
        self.implementation = implementation
        self.rotary = rotary
        self.rope_theta = rope_theta
        self.causal = causal
        common = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.query = layers.linear(d_model, (num_heads, head_dim), ("embed",), ("heads", "head_dim"),
                                   init_std=init_std, **common)
        self.key = layers.linear(d_model, (num_kv_heads, head_dim), ("embed",), ("kv_heads", "head_dim"),
                                 init_std=init_std, **common)
        self.value = layers.linear(d_model, (num_kv_heads, head_dim), ("embed",), ("kv_heads", "head_dim"),
                                   init_std=init_std, **common)
        self.out = layers.linear((num_heads, head_dim), d_model, ("heads", "head_dim"), ("embed",),
                                 init_std=init_std if out_init_std is None else out_init_std, **common)

    def project_qkv(self, x):
        """x [B, L, embed] -> q [B, L, heads, head_dim], k, v [B, L, kv_heads, head_dim]."""
        return self.query(x), self.key(x), self.value(x)

    def add_positions(self, q, k, positions):
        """Rotary on q and k when enabled; identity otherwise."""
        if not self.rotary:
            return q, k
        return (apply_rotary(q, positions, theta=self.rope_theta),
                apply_rotary(k, positions, theta=self.rope_theta))

    def attend(self, q, k, v, *, segment_ids=None, padding_mask=None, rngs: nnx.Rngs | None = None):
        """The attention core over projected heads; dropout on probabilities iff rngs given."""
        use_dropout = rngs is not None and self.dropout > 0.0
        return attend(q, k, v, causal=self.causal, segment_ids=segment_ids, padding_mask=padding_mask,
                      implementation=self.implementation,
                      dropout_rate=self.dropout if use_dropout else 0.0,
                      dropout_rng=rngs.dropout() if use_dropout else None)

    def project_out(self, o):
        """o [B, L, heads, head_dim] -> [B, L, embed]."""
        return self.out(o)

    def __call__(self, x, *, positions=None, segment_ids=None, padding_mask=None,
                 rngs: nnx.Rngs | None = None, cache: KVCache | None = None):
        """x [B, L, embed] -> [B, L, embed]; with a `cache`, (output, cache extended by these L positions)."""
        q, k, v = self.project_qkv(x)
        if positions is None:
            positions = (jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2]) if cache is None
                         else cache.positions(x.shape[1]))
        q, k = self.add_positions(q, k, positions)
        if cache is not None:
            if segment_ids is not None or padding_mask is not None:
                raise ValueError("decoding with a cache takes no segment_ids or padding_mask")
            cache = cache.append(k, v)
            return self.project_out(attend_cached(q, cache)), cache
        o = self.attend(q, k, v, segment_ids=segment_ids, padding_mask=padding_mask, rngs=rngs)
        # Named so the remat policy "save_attention_out" can keep it and recompute the cheap rest.
        o = checkpoint_name(o, "attention_out")
        return self.project_out(o)
