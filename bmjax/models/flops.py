"""Parameter counts and training FLOPs, analytically from a model config, of the model exactly as built.

Written against config fields only (vocab_size, d_model, num_layers, num_heads,
num_kv_heads, d_ff, max_len, mlp, use_bias, tie_embeddings, position, and norm
when present) so GPT and BERT configs share the transformer block. Fields a config
lacks take the plain transformer's value (num_kv_heads=None, mlp="gelu", use_bias=True,
tie_embeddings=True, position="learned", norm="layernorm"): BERT's. A BERT config
(name "bert") adds what bmjax.models.bert builds around the blocks: token-type
embeddings, the embedding LayerNorm (where GPT has its final one), and the heads of
`heads`: pooler, MLM transform (dense + LayerNorm) and output bias, NSP, classifier.
tests/test_flops.py checks every shipped config against the built model's parameters
and against transformers' num_parameters().
"""
from __future__ import annotations

import math

import jax
from flax import nnx

from bmjax.models.layers import default_d_ff


def _field(cfg, name: str, default):
    return getattr(cfg, name, default)


def _kv_heads(cfg) -> int:
    return _field(cfg, "num_kv_heads", None) or cfg.num_heads


def _mlp(cfg) -> str:
    return _field(cfg, "mlp", "gelu")


def _use_bias(cfg) -> bool:
    return _field(cfg, "use_bias", True)


def _d_ff(cfg) -> int:
    return cfg.d_ff or default_d_ff(cfg.d_model, _mlp(cfg))


def attention_params(cfg) -> int:
    """q, k, v and output projections (and their biases) of one layer."""
    d, head_dim = cfg.d_model, cfg.d_model // cfg.num_heads
    q_width, kv_width = cfg.num_heads * head_dim, _kv_heads(cfg) * head_dim
    n = d * q_width + 2 * d * kv_width + q_width * d
    if _use_bias(cfg):
        n += q_width + 2 * kv_width + d
    return n


def mlp_params(cfg) -> int:
    """The feed-forward of one layer: two matrices (gelu) or three (swiglu), plus biases."""
    d, f = cfg.d_model, _d_ff(cfg)
    bias = _use_bias(cfg)
    if _mlp(cfg) == "swiglu":
        return 3 * d * f + (2 * f + d if bias else 0)
    return 2 * d * f + (f + d if bias else 0)


def norm_params(cfg) -> int:
    """One norm: LayerNorm has a scale and (with biases) a shift; RMSNorm only a scale."""
    if _field(cfg, "norm", "layernorm") == "rmsnorm":
        return cfg.d_model
    return cfg.d_model * (2 if _use_bias(cfg) else 1)


def transformer_layer_params(cfg) -> int:
    """One block: attention, MLP, two norms."""
    return attention_params(cfg) + mlp_params(cfg) + 2 * norm_params(cfg)


def embedding_params(cfg) -> int:
    """Token and (learned) position embeddings, plus an untied output matrix."""
    n = cfg.vocab_size * cfg.d_model
    if _field(cfg, "position", "learned") == "learned":
        n += cfg.max_len * cfg.d_model
    if not _field(cfg, "tie_embeddings", True):
        n += cfg.d_model * cfg.vocab_size
    return n


def _is_bert(cfg) -> bool:
    return _field(cfg, "name", "gpt") == "bert"


def bert_head_params(cfg) -> dict[str, int]:
    """The parameters of each piece a BERT config builds beyond its blocks and embedding LayerNorm (0 where
    `heads` builds none): "per_sequence" run once per sequence (pooler, NSP, classifier), "mlm" on the scored
    positions (transform dense + LayerNorm; the decoder matrix is the tied word embedding), "mlm_bias" the
    output bias over the vocabulary, "token_types" the token-type embeddings."""
    d, heads = cfg.d_model, cfg.heads
    pooler = d * d + d if heads != "mlm" else 0  # Hugging Face's BertForMaskedLM has no pooler
    nsp = d * 2 + 2 if heads == "pretraining" else 0
    classifier = d * cfg.num_labels + cfg.num_labels if heads == "classification" else 0
    has_mlm = heads in ("pretraining", "mlm")
    return {"per_sequence": pooler + nsp + classifier,
            "mlm": (d * d + d) + norm_params(cfg) if has_mlm else 0,
            "mlm_bias": cfg.vocab_size if has_mlm else 0,
            "token_types": cfg.type_vocab_size * d}


def param_counts(cfg) -> dict[str, int]:
    """{'total', 'non_embedding'} parameters of a GPT or BERT config, as the model is built.

    non_embedding follows Kaplan et al. (2020): everything except the vocabulary
    and position embedding matrices (an untied output matrix is a vocabulary
    matrix too, so it is excluded as well; so are BERT's token-type embeddings and
    its MLM output bias over the vocabulary). GPT-2 124M: total 124,439,808;
    BERT-base as BertForPreTraining: total 110,106,428.
    """
    # + GPT's final LayerNorm, or BERT's embedding LayerNorm
    non_embedding = cfg.num_layers * transformer_layer_params(cfg) + norm_params(cfg)
    embedding = embedding_params(cfg)
    if _is_bert(cfg):
        heads = bert_head_params(cfg)
        non_embedding += heads["per_sequence"] + heads["mlm"]
        embedding += heads["mlm_bias"] + heads["token_types"]
    return {"total": non_embedding + embedding, "non_embedding": non_embedding}


def train_flops_per_token(cfg, seq_len: int, output_fraction: float = 1.0) -> float:
    """Training FLOPs per token (forward + backward), the PaLM/nanoGPT MFU convention.

        6 * N + 12 * num_layers * (num_heads * head_dim) * seq_len

    N = the parameters a token's forward pass uses: the non-embedding parameters +
    the output projection (d_model * vocab_size): the output matmul is real work
    every token does, tied or not, while an embedding lookup does none. BERT's
    pieces count where they run: the MLM transform, decoder and its bias on the
    scored `output_fraction` of positions, the pooler, NSP head and classifier once
    per sequence (1 / seq_len of a token each). 6N counts 2 FLOPs per multiply-add, times three
    for forward + backward. The second term is the q.k^T and probs.v matmuls
    (2 * 2 * L * width * seq_len forward, times three). Causal attention is NOT
    halved: like PaLM (appendix B) and nanoGPT, count the full square, so MFU
    numbers compare with theirs.

    `output_fraction`: the share of positions the output projection scores: 1 for a
    causal LM; BERT pretraining scores only its selected ~15%, a classifier none.
    """
    n = param_counts(cfg)["non_embedding"] + output_fraction * cfg.d_model * cfg.vocab_size
    if _is_bert(cfg):
        heads = bert_head_params(cfg)
        # non_embedding counted the MLM transform and per-sequence heads as if on every token
        n += ((output_fraction - 1.0) * heads["mlm"] + output_fraction * heads["mlm_bias"]
              + (1.0 / seq_len - 1.0) * heads["per_sequence"])
    attn_width = cfg.num_heads * (cfg.d_model // cfg.num_heads)
    return 6.0 * n + 12.0 * cfg.num_layers * attn_width * seq_len


def output_fraction(task: str, seq_len: int, mlm_predictions: int) -> float:
    """The share of positions a task's loss runs the vocabulary projection on (train_flops_per_token's
    `output_fraction`): a causal LM scores every position, a classifier none, BERT pretraining its
    `mlm_predictions` selected positions per sequence (bmjax.data.mlm.max_predictions(seq_len), given by the
    caller because models/ does not import data/)."""
    if task == "mlm":
        return mlm_predictions / seq_len
    return 0.0 if task == "classification" else 1.0


def count_params(model: nnx.Module) -> int:
    """The number of scalars in a model's nnx.Param leaves (works on nnx.eval_shape models)."""
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    return sum(math.prod(x.shape) for x in leaves)
