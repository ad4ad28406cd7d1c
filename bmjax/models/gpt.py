"""GPT: a decoder-only transformer; with the default config, GPT-2 124M exactly.

GPT-2: pre-LayerNorm blocks, learned positions, GELU (tanh), biases everywhere,
token embedding tied to the output layer, final LayerNorm, init N(0, 0.02) with
the residual output projections scaled by 1/sqrt(2 * num_layers). Options swap in
RMSNorm, SwiGLU, rotary positions, no biases, untied embeddings, grouped-query
attention, bfloat16 compute, rematerialisation.

Parameter names (what a Hugging Face converter maps onto):
  wte, wpe (learned positions), blocks[i].{ln_1, attn.{query,key,value,out}, ln_2,
  mlp.{fc_in,fc_out} | mlp.{gate,up,down}}, ln_f, lm_head (untied only).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from bmjax.models import layers
from bmjax.models.attention import Attention


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 50257
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    num_kv_heads: int | None = None  # None: num_heads (plain multi-head attention)
    d_ff: int | None = None  # None: layers.default_d_ff(d_model, mlp)
    max_len: int = 1024
    dropout: float = 0.0
    attention: str = "xla"  # a key of attention.IMPLEMENTATIONS
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    remat: str = "none"  # "none" | "full" | "dots_saveable"
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    mlp: str = "gelu"  # "gelu" | "swiglu"
    position: str = "learned"  # "learned" | "rotary"
    use_bias: bool = True
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    scan_layers: bool = False
    name: str = "gpt"

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "GPTConfig":
        """Build from a dict or ConfigDict; keys that are not fields (other model kinds') are ignored."""
        if hasattr(m, "to_dict"):
            m = m.to_dict()
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in m.items() if k in names})

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def ff_dim(self) -> int:
        return self.d_ff or layers.default_d_ff(self.d_model, self.mlp)


_REMAT_POLICIES = {
    "full": None,  # save nothing inside a block; recompute it all in the backward pass
    "dots_saveable": jax.checkpoint_policies.dots_saveable,  # keep matmul outputs, recompute the rest
}


class Block(nnx.Module):
    """x + drop(attn(ln_1(x))), then x + drop(mlp(ln_2(x)))."""

    def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs):
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        # GPT-2: the projections that write into the residual stream start smaller, so the
        # stream's variance does not grow with depth.
        out_std = cfg.init_std / math.sqrt(2 * cfg.num_layers)
        norm = dict(eps=cfg.norm_eps, use_bias=cfg.use_bias, dtype=dtype, param_dtype=param_dtype,
                    rngs=rngs)
        self.ln_1 = layers.make_norm(cfg.norm, cfg.d_model, **norm)
        self.attn = Attention(
            d_model=cfg.d_model, num_heads=cfg.num_heads, num_kv_heads=cfg.kv_heads,
            head_dim=cfg.head_dim, use_bias=cfg.use_bias, dropout=cfg.dropout,
            implementation=cfg.attention, rotary=cfg.position == "rotary",
            rope_theta=cfg.rope_theta, dtype=dtype, param_dtype=param_dtype, causal=True,
            rngs=rngs, init_std=cfg.init_std, out_init_std=out_std)
        self.ln_2 = layers.make_norm(cfg.norm, cfg.d_model, **norm)
        self.mlp = layers.make_mlp(cfg.mlp, cfg.d_model, cfg.ff_dim, use_bias=cfg.use_bias,
                                   init_std=cfg.init_std, out_init_std=out_std, dtype=dtype,
                                   param_dtype=param_dtype, rngs=rngs)
        self.dropout = cfg.dropout

    def __call__(self, x, *, positions=None, segment_ids=None, rngs: nnx.Rngs | None = None):
        h = self.attn(self.ln_1(x), positions=positions, segment_ids=segment_ids, rngs=rngs)
        x = x + layers.dropout(h, self.dropout, rngs)
        h = self.mlp(self.ln_2(x))
        return x + layers.dropout(h, self.dropout, rngs)


def _run_block(block: Block, x, positions, segment_ids, rngs):
    # Positional arguments only: nnx.remat passes them through jax.checkpoint.
    return block(x, positions=positions, segment_ids=segment_ids, rngs=rngs)


class GPT(nnx.Module):
    """input_ids [B, L] -> logits float32 [B, L, vocab]. Dropout is on iff `rngs` is given."""

    def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs):
        if cfg.scan_layers:
            raise ValueError("model.scan_layers=True is not supported yet; use scan_layers=False")
        if cfg.remat != "none" and cfg.remat not in _REMAT_POLICIES:
            raise ValueError(f"model.remat={cfg.remat!r}; expected none|full|dots_saveable")
        self.cfg = cfg
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        emb = dict(init_std=cfg.init_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.wte = layers.embed(cfg.vocab_size, cfg.d_model, ("vocab", "embed"), **emb)
        if cfg.position == "learned":
            self.wpe = layers.embed(cfg.max_len, cfg.d_model, (None, "embed"), **emb)
        elif cfg.position != "rotary":
            raise ValueError(f"model.position={cfg.position!r}; expected learned|rotary")
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.ln_f = layers.make_norm(cfg.norm, cfg.d_model, eps=cfg.norm_eps, use_bias=cfg.use_bias,
                                     dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if not cfg.tie_embeddings:
            self.lm_head = layers.linear(cfg.d_model, cfg.vocab_size, ("embed",), ("vocab",),
                                         use_bias=False, init_std=cfg.init_std, dtype=dtype,
                                         param_dtype=param_dtype, rngs=rngs)

    def hidden_states(self, input_ids, *, positions=None, segment_ids=None,
                      rngs: nnx.Rngs | None = None):
        """The final-normed hidden states [B, L, d_model] (compute dtype)."""
        cfg = self.cfg
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        x = self.wte(input_ids)
        if cfg.position == "learned":
            x = x + self.wpe(positions)
        x = layers.dropout(x, cfg.dropout, rngs)
        run = _run_block
        if cfg.remat != "none":
            run = nnx.remat(_run_block, policy=_REMAT_POLICIES[cfg.remat])
        for block in self.blocks:
            x = run(block, x, positions, segment_ids, rngs)
        return self.ln_f(x)

    def logits_from_hidden(self, h):
        """h [B, L, d_model] -> logits float32 [B, L, vocab] (matmul in compute dtype, f32 accumulate)."""
        dtype = jnp.dtype(self.cfg.dtype)
        if self.cfg.tie_embeddings:
            w = self.wte.embedding[...].astype(dtype)
            return jnp.einsum("bld,vd->blv", h.astype(dtype), w, preferred_element_type=jnp.float32)
        w = self.lm_head.kernel[...].astype(dtype)
        return jnp.einsum("bld,dv->blv", h.astype(dtype), w, preferred_element_type=jnp.float32)

    def __call__(self, input_ids, *, positions=None, segment_ids=None,
                 rngs: nnx.Rngs | None = None):
        h = self.hidden_states(input_ids, positions=positions, segment_ids=segment_ids, rngs=rngs)
        return self.logits_from_hidden(h)
