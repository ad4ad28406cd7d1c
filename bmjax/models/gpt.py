"""GPT: a decoder-only transformer; with the default config, GPT-2 124M exactly.

GPT-2: pre-LayerNorm blocks, learned positions, GELU (tanh), biases everywhere,
token embedding tied to the output layer, final LayerNorm, init N(0, 0.02) with
the residual output projections scaled by 1/sqrt(2 * num_layers). Options swap in
RMSNorm, SwiGLU, rotary positions, no biases, untied embeddings, grouped-query
attention, bfloat16 compute, rematerialisation, and the μP parametrisation
(parametrization="mup": hidden init, readout multiplier and attention scale by width, bmjax/models/mup.py).

Parameter names (what a Hugging Face converter maps onto):
  wte, wpe (learned positions), blocks[i].{ln_1, attn.{query,key,value,out}, ln_2,
  mlp.{fc_in,fc_out} | mlp.{gate,up,down}}, ln_f, lm_head (untied only).
With scan_layers=True, `blocks` is instead one Block whose parameters carry a
leading [num_layers] axis, applied with lax.scan (faster compiles for deep models).

Decoding: `cache = model.init_cache(batch, length)`, then `logits, cache = model(ids, cache=cache)`
runs the new tokens at the next positions against the keys/values of all earlier ones
(bmjax/models/generate.py drives it).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from bmjax.models import layers, mup
from bmjax.models.attention import Attention, KVCache


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
    remat: str = "none"  # "none" | a key of layers.REMAT_POLICIES
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    mlp: str = "gelu"  # "gelu" | "swiglu"
    position: str = "learned"  # "learned" | "rotary"
    use_bias: bool = True
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    scan_layers: bool = False
    parametrization: str = "standard"  # "standard" | "mup" (bmjax/models/mup.py)
    mup_base_width: int | None = None  # μP: the d_model at which it equals the standard model
    mup_output_mult: float = 1.0  # μP: the readouts' multiplier at the base width (tuned there)
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


_REMAT_POLICIES = layers.REMAT_POLICIES  # model.remat -> what a block keeps for the backward pass

# Logical axes of the residual stream between blocks: the trainer's rules lay it out (layers.constrain).
RESIDUAL_AXES = ("batch", "length", "embed")


class Block(nnx.Module):
    """x + drop(attn(ln_1(x))), then x + drop(mlp(ln_2(x)))."""

    def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs):
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        # GPT-2: the projections that write into the residual stream start smaller, so the
        # stream's variance does not grow with depth. μP: hidden weights' std also ∝ 1/sqrt(width).
        init_std = mup.hidden_init_std(cfg)
        out_std = init_std / math.sqrt(2 * cfg.num_layers)
        norm = dict(eps=cfg.norm_eps, use_bias=cfg.use_bias, dtype=dtype, param_dtype=param_dtype,
                    rngs=rngs)
        self.ln_1 = layers.make_norm(cfg.norm, cfg.d_model, **norm)
        self.attn = Attention(
            d_model=cfg.d_model, num_heads=cfg.num_heads, num_kv_heads=cfg.kv_heads,
            head_dim=cfg.head_dim, use_bias=cfg.use_bias, dropout=cfg.dropout,
            implementation=cfg.attention, rotary=cfg.position == "rotary",
            rope_theta=cfg.rope_theta, dtype=dtype, param_dtype=param_dtype, causal=True,
            rngs=rngs, init_std=init_std, out_init_std=out_std, logit_scale=mup.attention_scale(cfg))
        self.ln_2 = layers.make_norm(cfg.norm, cfg.d_model, **norm)
        self.mlp = layers.make_mlp(cfg.mlp, cfg.d_model, cfg.ff_dim, use_bias=cfg.use_bias,
                                   init_std=init_std, out_init_std=out_std, dtype=dtype,
                                   param_dtype=param_dtype, rngs=rngs)
        self.dropout = cfg.dropout

    def __call__(self, x, *, positions=None, segment_ids=None, rngs: nnx.Rngs | None = None,
                 cache: KVCache | None = None):
        """With a `cache` (decoding), returns (x, the cache extended by x's positions)."""
        h = self.attn(self.ln_1(x), positions=positions, segment_ids=segment_ids, rngs=rngs, cache=cache)
        if cache is not None:
            h, cache = h
        x = x + layers.dropout(h, self.dropout, rngs)
        h = self.mlp(self.ln_2(x))
        x = x + layers.dropout(h, self.dropout, rngs)
        return x if cache is None else (x, cache)


def _run_block(block: Block, x, positions, segment_ids, rngs):
    # Positional arguments only: nnx.remat passes them through jax.checkpoint.
    x = block(x, positions=positions, segment_ids=segment_ids, rngs=rngs)
    return layers.constrain(x, RESIDUAL_AXES)


def _stacked_blocks(cfg: GPTConfig, rngs: nnx.Rngs) -> Block:
    """num_layers blocks as one Block whose parameters have a leading layer axis (for scan_layers).

    Each layer draws its own initial values; the layer axis has no logical name (replicated).
    """

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: None})
    def make(rngs):
        return Block(cfg, rngs=rngs)

    return make(rngs)


class GPT(nnx.Module):
    """input_ids [B, L] -> logits float32 [B, L, vocab]. Dropout is on iff `rngs` is given."""

    def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs):
        if cfg.remat != "none" and cfg.remat not in _REMAT_POLICIES:
            raise ValueError(f"model.remat={cfg.remat!r}; expected none|{'|'.join(_REMAT_POLICIES)}")
        self.cfg = cfg
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        emb = dict(init_std=cfg.init_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.wte = layers.embed(cfg.vocab_size, cfg.d_model, ("vocab", "embed"), **emb)
        if cfg.position == "learned":
            self.wpe = layers.embed(cfg.max_len, cfg.d_model, (None, "embed"), **emb)
        elif cfg.position != "rotary":
            raise ValueError(f"model.position={cfg.position!r}; expected learned|rotary")
        if cfg.scan_layers:
            self.blocks = _stacked_blocks(cfg, rngs)
        else:
            self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.ln_f = layers.make_norm(cfg.norm, cfg.d_model, eps=cfg.norm_eps, use_bias=cfg.use_bias,
                                     dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if not cfg.tie_embeddings:
            self.lm_head = layers.linear(cfg.d_model, cfg.vocab_size, ("embed",), ("vocab",),
                                         use_bias=False, init_std=cfg.init_std, dtype=dtype,
                                         param_dtype=param_dtype, rngs=rngs)

    def init_cache(self, batch: int, length: int, start=None):
        """Empty key/value buffers of `length` positions for decoding: a tuple with one KVCache per
        layer, or with scan_layers one KVCache whose arrays carry a leading [num_layers] axis.
        `start` [batch]: each row's first real slot, after its left padding (default 0)."""
        cfg = self.cfg
        one = KVCache.zeros(batch, length, cfg.kv_heads, cfg.head_dim, jnp.dtype(cfg.dtype), start)
        if cfg.scan_layers:
            return jax.tree.map(lambda a: jnp.broadcast_to(a, (cfg.num_layers, *a.shape)), one)
        return tuple(one for _ in range(cfg.num_layers))

    def hidden_states(self, input_ids, *, positions=None, segment_ids=None,
                      rngs: nnx.Rngs | None = None, cache=None):
        """The final-normed hidden states [B, L, d_model] (compute dtype); with a `cache`, (states, cache)."""
        cfg = self.cfg
        if positions is None:
            positions = (jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape) if cache is None
                         else _first_layer(cache).positions(input_ids.shape[1]))
        x = self.wte(input_ids)
        if cfg.position == "learned":
            x = x + self.wpe(positions)
        x = layers.constrain(layers.dropout(x, cfg.dropout, rngs), RESIDUAL_AXES)
        if cache is not None:
            if segment_ids is not None:
                raise ValueError("decoding with a cache takes no segment_ids")
            x, cache = self._blocks_with_cache(x, positions, cache, rngs)
            return self.ln_f(x), cache
        run = _run_block
        if cfg.remat != "none":
            run = nnx.remat(_run_block, policy=_REMAT_POLICIES[cfg.remat])
        if cfg.scan_layers:
            x = self._scan_blocks(run, x, positions, segment_ids, rngs)
        else:
            for block in self.blocks:
                x = run(block, x, positions, segment_ids, rngs)
        return self.ln_f(x)

    def _scan_blocks(self, run, x, positions, segment_ids, rngs):
        """Apply the stacked blocks with lax.scan: one block is traced and compiled, not num_layers."""
        graphdef, stacked = nnx.split(self.blocks)
        # One dropout key for the whole stack, folded with the layer index inside.
        key = rngs.dropout() if rngs is not None and self.cfg.dropout > 0.0 else None

        def body(x, layer):
            index, state = layer
            block = nnx.merge(graphdef, state)
            layer_rngs = None if key is None else nnx.Rngs(dropout=jax.random.fold_in(key, index))
            return run(block, x, positions, segment_ids, layer_rngs), None

        x, _ = jax.lax.scan(body, x, (jnp.arange(self.cfg.num_layers), stacked))
        return x

    def _blocks_with_cache(self, x, positions, cache, rngs):
        """The blocks in decoding mode: each reads and extends its own layer's cache (no remat: no backward)."""
        if self.cfg.scan_layers:
            graphdef, stacked = nnx.split(self.blocks)

            def body(x, layer):
                state, layer_cache = layer
                return nnx.merge(graphdef, state)(x, positions=positions, rngs=rngs, cache=layer_cache)

            return jax.lax.scan(body, x, (stacked, cache))
        new_cache = []
        for block, layer_cache in zip(self.blocks, cache):
            x, layer_cache = block(x, positions=positions, rngs=rngs, cache=layer_cache)
            new_cache.append(layer_cache)
        return x, tuple(new_cache)

    def logits_from_hidden(self, h):
        """h [B, L, d_model] -> logits float32 [B, L, vocab] (matmul in compute dtype, f32 accumulate); under μP
        h is first multiplied by base_width/width (the readout multiplier, bmjax/models/mup.py)."""
        dtype = jnp.dtype(self.cfg.dtype)
        multiplier = mup.readout_multiplier(self.cfg)
        if multiplier is not None:
            h = h * jnp.asarray(multiplier, h.dtype)
        if self.cfg.tie_embeddings:
            return layers.output_logits("bld,vd->blv", h.astype(dtype), self.wte.embedding[...].astype(dtype))
        return layers.output_logits("bld,dv->blv", h.astype(dtype), self.lm_head.kernel[...].astype(dtype))

    def __call__(self, input_ids, *, positions=None, segment_ids=None,
                 rngs: nnx.Rngs | None = None, cache=None):
        """Logits [B, L, vocab]; with a `cache` from init_cache (decoding), (logits, extended cache)."""
        if cache is not None:
            h, cache = self.hidden_states(input_ids, positions=positions, segment_ids=segment_ids,
                                          rngs=rngs, cache=cache)
            return self.logits_from_hidden(h), cache
        h = self.hidden_states(input_ids, positions=positions, segment_ids=segment_ids, rngs=rngs)
        return self.logits_from_hidden(h)


def _first_layer(cache) -> KVCache:
    """Layer 0's cache (every layer holds the same slots): cache[0], or layer 0 of a stacked cache."""
    return jax.tree.map(lambda a: a[0], cache) if isinstance(cache, KVCache) else cache[0]
