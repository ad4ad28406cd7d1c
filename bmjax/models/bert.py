"""BERT: a bidirectional encoder, exactly as published and as Hugging Face implements it.

Embeddings: word + learned position + token type, then LayerNorm and dropout.
Blocks are post-LayerNorm: x = LN(x + drop(attn(x))), then x = LN(x + drop(mlp(x))), with
the exact (erf) GELU. The pooler is tanh(dense(h[CLS])). Heads (`BertConfig.heads`):
  "pretraining"     MLM + NSP            (Hugging Face BertForPreTraining)
  "mlm"             MLM only, no pooler  (BertForMaskedLM)
  "classification"  dropout + dense on the pooled output, `num_labels` classes
                    (BertForSequenceClassification)
  "none"            encoder + pooler     (BertModel)
The MLM head is dense + GELU + LayerNorm, then a decoder that reuses the word
embedding matrix (tied) plus its own bias.
parametrization="mup" rescales hidden init, readouts and attention logits by width (bmjax/models/mup.py).

One dropout rate (`dropout`, as in GPT and bmjax's shared model.* config) serves every
place Hugging Face drops: after the embeddings, on the attention probabilities, after each
residual branch and before the classifier. It runs iff `rngs` is passed at call time: a
call without rngs is inference.

Parameter names (what bmjax.models.hf maps onto):
  wte, wpe, token_types, ln_embed, blocks[i].{attn.{query,key,value,out}, ln_attn,
  mlp.{fc_in,fc_out}, ln_mlp}, pooler, mlm.{dense, ln, bias}, nsp, classifier.
With scan_layers=True, `blocks` is one Block whose parameters carry a leading [num_layers]
axis, applied with lax.scan (compile time flat in depth), as in GPT.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
from flax import nnx

from bmjax.errors import ConfigError
from bmjax.models import layers, mup
from bmjax.models.attention import Attention

HEADS = ("pretraining", "mlm", "classification", "none")
# Logical axes of the residual stream between blocks: the trainer's rules lay it out (layers.constrain).
RESIDUAL_AXES = ("batch", "length", "embed")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    d_ff: int | None = None  # None: 4 * d_model (3072 for BERT-base)
    max_len: int = 512  # number of learned positions
    type_vocab_size: int = 2
    dropout: float = 0.1  # embeddings, attention probabilities, residual branches, classifier input
    norm_eps: float = 1e-12
    init_std: float = 0.02
    attention: str = "xla"  # a key of attention.IMPLEMENTATIONS
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    remat: str = "none"  # "none" or a key of layers.REMAT_POLICIES
    scan_layers: bool = False  # one lax.scan over stacked blocks
    heads: str = "pretraining"  # one of HEADS
    num_labels: int = 0  # classes of the "classification" head
    parametrization: str = "standard"  # "standard" | "mup" (bmjax/models/mup.py)
    mup_base_width: int | None = None  # μP: the d_model at which it equals the standard model
    mup_output_mult: float = 1.0  # μP: the readouts' multiplier at the base width (tuned there)
    name: str = "bert"

    def __post_init__(self):
        if self.heads not in HEADS:
            raise ConfigError("model.heads", f"got {self.heads!r}; allowed: {', '.join(HEADS)}")
        if self.heads == "classification" and self.num_labels < 1:
            raise ConfigError("model.num_labels", f"heads='classification' needs num_labels >= 1, "
                                                  f"got {self.num_labels}")
        if self.d_model % self.num_heads:
            raise ConfigError("model.num_heads", f"{self.num_heads} does not divide "
                                                 f"d_model={self.d_model}")
        if self.remat != "none" and self.remat not in layers.REMAT_POLICIES:
            raise ConfigError("model.remat", f"got {self.remat!r}; allowed: "
                                             f"{', '.join(['none', *layers.REMAT_POLICIES])}")

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "BertConfig":
        """Build from a dict or ConfigDict; keys that are not fields (other model kinds') are ignored."""
        if hasattr(m, "to_dict"):
            m = m.to_dict()
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in m.items() if k in names})

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def ff_dim(self) -> int:
        return self.d_ff or 4 * self.d_model

    @property
    def has_pooler(self) -> bool:
        # Hugging Face's BertForMaskedLM is built without the pooler; every other class has one.
        return self.heads != "mlm"


@flax.struct.dataclass
class BertOutput:
    """What Bert returns; a pytree, so it can leave a jit. Heads the model lacks are None."""
    hidden_states: jax.Array  # [B, L, d_model], compute dtype
    pooled: jax.Array | None = None  # [B, d_model]
    mlm_logits: jax.Array | None = None  # [B, L, vocab] float32 ([B, P, vocab] with mlm_positions)
    nsp_logits: jax.Array | None = None  # [B, 2] float32 (index 0 = "B follows A")
    logits: jax.Array | None = None  # [B, num_labels] float32


def _dense(cfg: BertConfig, d_in: int, d_out: int, out_axes, rngs: nnx.Rngs, *, hidden: bool) -> nnx.LinearGeneral:
    """hidden: width to width (μP's hidden init); otherwise a readout to a finite size (init_std)."""
    init_std = mup.hidden_init_std(cfg) if hidden else cfg.init_std
    return layers.linear(d_in, d_out, ("embed",), out_axes, use_bias=True, init_std=init_std,
                         dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)


def _norm(cfg: BertConfig, rngs: nnx.Rngs) -> nnx.Module:
    return layers.make_norm("layernorm", cfg.d_model, eps=cfg.norm_eps, use_bias=True,
                            dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
                            rngs=rngs)


class Block(nnx.Module):
    """Post-LN encoder block: x = ln_attn(x + drop(attn(x))); x = ln_mlp(x + drop(mlp(x)))."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        init_std = mup.hidden_init_std(cfg)
        self.attn = Attention(
            d_model=cfg.d_model, num_heads=cfg.num_heads, num_kv_heads=cfg.num_heads,
            head_dim=cfg.head_dim, use_bias=True, dropout=cfg.dropout,
            implementation=cfg.attention, rotary=False, rope_theta=10000.0, dtype=dtype,
            param_dtype=param_dtype, causal=False, rngs=rngs, init_std=init_std,
            logit_scale=mup.attention_scale(cfg))
        self.ln_attn = _norm(cfg, rngs)
        self.mlp = layers.MLP(cfg.d_model, cfg.ff_dim, use_bias=True, init_std=init_std,
                              out_init_std=init_std, dtype=dtype, param_dtype=param_dtype,
                              rngs=rngs, approximate_gelu=False)
        self.ln_mlp = _norm(cfg, rngs)
        self.dropout = cfg.dropout

    def __call__(self, x, *, padding_mask=None, segment_ids=None, rngs: nnx.Rngs | None = None):
        h = self.attn(x, padding_mask=padding_mask, segment_ids=segment_ids, rngs=rngs)
        x = self.ln_attn(x + layers.dropout(h, self.dropout, rngs))
        h = self.mlp(x)
        return self.ln_mlp(x + layers.dropout(h, self.dropout, rngs))


def _run_block(block: Block, x, padding_mask, segment_ids, rngs):
    # Positional arguments only: nnx.remat passes them through jax.checkpoint.
    return layers.constrain(block(x, padding_mask=padding_mask, segment_ids=segment_ids, rngs=rngs), RESIDUAL_AXES)


def _stacked_blocks(cfg: BertConfig, rngs: nnx.Rngs) -> Block:
    """num_layers blocks as one Block whose parameters have a leading, unnamed layer axis."""

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: None})
    def make(rngs):
        return Block(cfg, rngs=rngs)

    return make(rngs)


def _readout_input(h, multiplier: float | None):
    """A readout's input, times μP's base_width/width multiplier (bmjax/models/mup.py) when there is one."""
    return h if multiplier is None else h * jnp.asarray(multiplier, h.dtype)


class MLMHead(nnx.Module):
    """dense + GELU + LayerNorm; the decoder matrix is the word embedding (passed in), plus a bias."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.dense = _dense(cfg, cfg.d_model, cfg.d_model, (None,), rngs, hidden=True)
        self.ln = _norm(cfg, rngs)
        self.bias = nnx.Param(jnp.zeros((cfg.vocab_size,), jnp.dtype(cfg.param_dtype)),
                              out_sharding=("vocab",))
        self.dtype = jnp.dtype(cfg.dtype)
        self.multiplier = mup.readout_multiplier(cfg)

    def __call__(self, h, embedding):
        h = self.ln(jax.nn.gelu(self.dense(h), approximate=False))
        h = _readout_input(h, self.multiplier)
        logits = layers.output_logits("bld,vd->blv", h.astype(self.dtype), embedding.astype(self.dtype))
        return logits + self.bias[...].astype(jnp.float32)


class Bert(nnx.Module):
    """model(input_ids, token_type_ids=None, attention_mask=None, *, mlm_positions=None, rngs=None) -> BertOutput.

    input_ids, token_type_ids int [B, L] (token types default to 0); attention_mask [B, L]
    with 1 (or True) for a real token and 0 for padding, default all real. Positions are
    0..L-1. Dropout runs iff `rngs` is given. `mlm_positions` int [B, P]: score the MLM head at
    those positions only (pretraining predicts ~15% of them; the vocabulary matmul is the largest).
    Packed rows: `segment_ids` int [B, L] (0 = padding, 1, 2, ... = documents) keep each document's tokens
    among themselves, and `positions` int [B, L] (restarting per document) replace 0..L-1.
    """

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        emb = dict(init_std=cfg.init_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.wte = layers.embed(cfg.vocab_size, cfg.d_model, ("vocab", "embed"), **emb)
        self.wpe = layers.embed(cfg.max_len, cfg.d_model, (None, "embed"), **emb)
        self.token_types = layers.embed(cfg.type_vocab_size, cfg.d_model, (None, "embed"), **emb)
        self.ln_embed = _norm(cfg, rngs)
        if cfg.scan_layers:
            self.blocks = _stacked_blocks(cfg, rngs)
        else:
            self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        if cfg.has_pooler:
            self.pooler = _dense(cfg, cfg.d_model, cfg.d_model, (None,), rngs, hidden=True)
        if cfg.heads in ("pretraining", "mlm"):
            self.mlm = MLMHead(cfg, rngs=rngs)
        if cfg.heads == "pretraining":
            self.nsp = _dense(cfg, cfg.d_model, 2, (None,), rngs, hidden=False)
        if cfg.heads == "classification":
            self.classifier = _dense(cfg, cfg.d_model, cfg.num_labels, (None,), rngs, hidden=False)

    def encode(self, input_ids, token_type_ids=None, attention_mask=None, *, positions=None, segment_ids=None,
               rngs: nnx.Rngs | None = None):
        """The last encoder layer's hidden states [B, L, d_model] (compute dtype)."""
        cfg = self.cfg
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        padding_mask = None if attention_mask is None else attention_mask.astype(bool)
        if positions is None:
            positions = jnp.arange(input_ids.shape[1])[None, :]
        x = self.wte(input_ids) + self.token_types(token_type_ids) + self.wpe(positions)
        x = layers.constrain(layers.dropout(self.ln_embed(x), cfg.dropout, rngs), RESIDUAL_AXES)
        run = _run_block
        if cfg.remat != "none":
            run = nnx.remat(_run_block, policy=layers.REMAT_POLICIES[cfg.remat])
        if cfg.scan_layers:
            return self._scan_blocks(run, x, padding_mask, segment_ids, rngs)
        for block in self.blocks:
            x = run(block, x, padding_mask, segment_ids, rngs)
        return x

    def _scan_blocks(self, run, x, padding_mask, segment_ids, rngs):
        """The stacked blocks under lax.scan: one block is traced and compiled, not num_layers."""
        graphdef, stacked = nnx.split(self.blocks)
        # One dropout key for the stack, folded with the layer index inside.
        key = rngs.dropout() if rngs is not None and self.cfg.dropout > 0.0 else None

        def body(x, layer):
            index, state = layer
            layer_rngs = None if key is None else nnx.Rngs(dropout=jax.random.fold_in(key, index))
            return run(nnx.merge(graphdef, state), x, padding_mask, segment_ids, layer_rngs), None

        x, _ = jax.lax.scan(body, x, (jnp.arange(self.cfg.num_layers), stacked))
        return x

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, *, mlm_positions=None,
                 positions=None, segment_ids=None, rngs: nnx.Rngs | None = None) -> BertOutput:
        cfg = self.cfg
        h = self.encode(input_ids, token_type_ids, attention_mask, positions=positions, segment_ids=segment_ids,
                        rngs=rngs)
        out = {}
        multiplier = mup.readout_multiplier(cfg)  # on the NSP and classifier inputs (the MLM head applies its own)
        if cfg.has_pooler:
            out["pooled"] = jnp.tanh(self.pooler(h[:, 0]))
        if cfg.heads in ("pretraining", "mlm"):
            picked = h if mlm_positions is None else jnp.take_along_axis(h, mlm_positions[..., None], axis=1)
            out["mlm_logits"] = self.mlm(picked, self.wte.embedding[...])
        if cfg.heads == "pretraining":
            out["nsp_logits"] = self.nsp(_readout_input(out["pooled"], multiplier)).astype(jnp.float32)
        if cfg.heads == "classification":
            pooled = layers.dropout(out["pooled"], cfg.dropout, rngs)
            out["logits"] = self.classifier(_readout_input(pooled, multiplier)).astype(jnp.float32)
        return BertOutput(hidden_states=h, **out)
