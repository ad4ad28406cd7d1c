"""The attention layer (projections, rotary positions, the attention core, output) and its KV cache.

Decoding: `Attention(x, cache=KVCache)` writes the new keys/values into fixed-size buffers at `cache.index` and
attends over everything written so far; it returns (output, new cache), so a decode step is a pure function that
jits once.
"""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from bmjax.models import layers
from bmjax.models.attention.implementations import attend


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


def attend_cached(q, cache: KVCache, scale=None):
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
                                        mask=mask[:, None], scale=scale, implementation="xla")


class Attention(nnx.Module):
    """Self-attention: q/k/v projections, optional rotary, `attend`, output projection.

    Dropout here is on the attention probabilities only (the residual dropout after
    the output projection belongs to the block). It is active iff `rngs` is given
    at call time and the rate is positive.
    """

    def __init__(self, *, d_model: int, num_heads: int, num_kv_heads: int, head_dim: int,
                 use_bias: bool, dropout: float, implementation: str, rotary: bool,
                 rope_theta: float, dtype, param_dtype, causal: bool, rngs: nnx.Rngs,
                 init_std: float = 0.02, out_init_std: float | None = None, logit_scale: float | None = None):
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.dropout = dropout
        self.implementation = implementation
        self.rotary = rotary
        self.rope_theta = rope_theta
        self.causal = causal
        self.logit_scale = logit_scale  # None: 1/sqrt(head_dim); μP's otherwise (bmjax/models/mup.py)
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
                      dropout_rng=rngs.dropout() if use_dropout else None, scale=self.logit_scale)

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
            return self.project_out(attend_cached(q, cache, self.logit_scale)), cache
        o = self.attend(q, k, v, segment_ids=segment_ids, padding_mask=padding_mask, rngs=rngs)
        # Named so the remat policy "save_attention_out" can keep it and recompute the cheap rest.
        o = checkpoint_name(o, "attention_out")
        return self.project_out(o)
