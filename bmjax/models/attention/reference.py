"""The reference attention: softmax(q k^T / sqrt(d)) v (or another logit scale) with masks, in plain einsums, the ground truth every
other implementation is tested against; and the masks and mask value the kernels share.

Shapes: q [batch, q_len, heads, head_dim]; k, v [batch, kv_len, kv_heads, head_dim] with heads % kv_heads == 0
(each kv head serves heads // kv_heads query heads). Masks: `segment_ids` int [batch, len] (packed documents: a
token sees only its own document; needs q_len == kv_len), `padding_mask` bool [batch, kv_len] (True = a real key).
"""
import jax
import jax.numpy as jnp

from bmjax.models import dropout as dropout_lib

# Added to masked logits. Finite (not -inf) so a query row with every key masked
# gives a finite softmax instead of NaN.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


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
                        dropout_rate=0.0, dropout_rng=None, scale=None):
    """Softmax(q k^T * scale) v with masks, in plain einsums; softmax in float32. `scale` None: 1/sqrt(d)
    (μP passes its own, bmjax/models/mup.py).

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
    logits = logits * (head_dim ** -0.5 if scale is None else scale)

    mask = make_mask(q_len, kv_len, causal=causal, segment_ids=segment_ids, padding_mask=padding_mask)
    if mask is not None:
        mask = mask[:, :, None]  # [B|1, 1, 1, Lq, Lk] against logits [B, K, G, Lq, Lk]
        logits = jnp.where(mask, logits, MASK_VALUE)
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
