"""Every attention implementation by name, and `attend`, which picks one (model.attention)."""
from typing import Callable

import jax

from bmjax.models.attention import ring
from bmjax.models.attention.reference import attention_reference, make_mask


def _dot_product_attention(implementation: str) -> Callable:
    """An attention function backed by jax.nn.dot_product_attention(implementation=...)."""

    def fn(q, k, v, *, causal=False, segment_ids=None, padding_mask=None,
           dropout_rate=0.0, dropout_rng=None, scale=None):
        # jax.nn.dot_product_attention has no dropout: with dropout on, take the reference path.
        if dropout_rate > 0.0 and dropout_rng is not None:
            return attention_reference(q, k, v, causal=causal, segment_ids=segment_ids,
                                       padding_mask=padding_mask, dropout_rate=dropout_rate,
                                       dropout_rng=dropout_rng, scale=scale)
        # Causality goes through is_causal (cuDNN then skips the masked blocks); segments and
        # padding through an explicit boolean mask. is_causal aligns query 0 with key 0, so when
        # queries are only the last positions (decoding against a cache) the mask carries it.
        q_len, kv_len = q.shape[1], k.shape[1]
        in_mask = causal and q_len != kv_len
        mask = make_mask(q_len, kv_len, causal=in_mask, segment_ids=segment_ids,
                         padding_mask=padding_mask)
        k, v = k.astype(q.dtype), v.astype(q.dtype)
        return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal and not in_mask,
                                            scale=scale, implementation=implementation)

    return fn


def _splash(q, k, v, **kwargs):
    from bmjax.models.attention import splash  # imported on use: it loads Pallas

    return splash.splash_attention(q, k, v, **kwargs)


# Every attention implementation, here and nowhere else (model.attention is validated against these names):
# name -> fn(q, k, v, *, causal, segment_ids, padding_mask, dropout_rate, dropout_rng, scale), each equal to
# `attention_reference` on packed (segment_ids) and padded batches; scale None is 1/sqrt(head_dim).
IMPLEMENTATIONS: dict[str, Callable] = {
    "xla": _dot_product_attention("xla"),
    "cudnn": _dot_product_attention("cudnn"),  # GPU only
    "reference": attention_reference,
    "ring": ring.ring_attention,  # sequence parallelism over the mesh's `length` axes (ring.py)
    "splash": _splash,  # the TPU's fused kernel (splash.py); no attention dropout
}


def attend(q, k, v, *, causal=False, segment_ids=None, padding_mask=None, implementation="xla",
           dropout_rate=0.0, dropout_rng=None, scale=None):
    """Attention by the implementation registered under `implementation`; returns [B, Lq, H, D]."""
    try:
        fn = IMPLEMENTATIONS[implementation]
    except KeyError:
        raise ValueError(f"unknown attention implementation {implementation!r}; "
                         f"known: {sorted(IMPLEMENTATIONS)}") from None
    return fn(q, k, v, causal=causal, segment_ids=segment_ids, padding_mask=padding_mask,
              dropout_rate=dropout_rate, dropout_rng=dropout_rng, scale=scale)
