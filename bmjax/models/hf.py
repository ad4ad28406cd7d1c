"""Hugging Face format (config.json + safetensors) <-> bmjax models, without importing torch.

`from_pretrained(dir)` reads GPT2LMHeadModel, BertModel, BertForPreTraining, BertForMaskedLM
and BertForSequenceClassification directories; `save_pretrained(model, dir)` writes one that
`transformers` loads with the same outputs; `config_from_hf(dir)` gives the bmjax model keys.

The weights are matched by a table per family: (bmjax parameter path, Hugging Face tensor
name, how to convert). Conversions: torch `nn.Linear` stores [out, in] (transposed here);
GPT-2's `Conv1D` stores [in, out] (as bmjax does) and fuses q, k, v into one `c_attn`
tensor (split on load, fused on save); bmjax's attention kernels keep heads as their own
axes ([embed, heads, head_dim], out [heads, head_dim, embed]), flattened in HF order
(head-major). Tied matrices (BERT's MLM decoder, GPT-2's lm_head) are not stored, as
transformers itself writes them. A μP model (bmjax/models/mup.py) is written as the standard model with the same
function: its multipliers are folded into the weights (`_fold_mup`), so it reads back as parametrization=standard.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
from flax import nnx

from bmjax.errors import ConfigError
from bmjax.models import mup
from bmjax.models.bert import Bert, BertConfig
from bmjax.models.gpt import GPT, GPTConfig

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"  # sharded checkpoints

BERT_ARCHITECTURES = {  # Hugging Face class -> BertConfig.heads
    "BertModel": "none",
    "BertForPreTraining": "pretraining",
    "BertForMaskedLM": "mlm",
    "BertForSequenceClassification": "classification",
}
GPT_ARCHITECTURES = ("GPT2LMHeadModel",)
_DEFAULT_ARCHITECTURE = {"bert": "BertModel", "gpt2": "GPT2LMHeadModel"}  # config without "architectures"
# Stored by some checkpoints, derived from other tensors here: buffers and tied copies.
_DERIVED_SUFFIXES = ("embeddings.position_ids", "attn.bias", "attn.masked_bias",
                     "cls.predictions.decoder.weight", "cls.predictions.decoder.bias")


# ---------------------------------------------------------------------------------------------
# config.json <-> bmjax configs


def _read_config(local_dir) -> dict:
    path = pathlib.Path(local_dir)
    if not path.is_dir():
        raise ConfigError(str(local_dir), "no such directory (expected a Hugging Face model directory)")
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(str(local_dir), f"no {CONFIG_FILE} in the directory")
    return json.loads((path / CONFIG_FILE).read_text())


def _architecture(hf: dict, local_dir) -> str:
    archs = hf.get("architectures") or [_DEFAULT_ARCHITECTURE.get(hf.get("model_type"), "")]
    arch = archs[0]
    if arch not in BERT_ARCHITECTURES and arch not in GPT_ARCHITECTURES:
        known = ", ".join([*GPT_ARCHITECTURES, *BERT_ARCHITECTURES])
        raise ConfigError(f"{local_dir}/{CONFIG_FILE}",
                          f"unsupported architecture {arch or hf.get('model_type')!r}; supported: {known}")
    return arch


def _unsupported(local_dir, key, value, allowed) -> None:
    raise ConfigError(f"{local_dir}/{CONFIG_FILE}", f"{key}={value!r} is not supported (bmjax needs {allowed})")


def _bert_config(hf: dict, arch: str, local_dir) -> BertConfig:
    checks = {"hidden_act": ("gelu",), "position_embedding_type": ("absolute",), "is_decoder": (False,),
              "add_cross_attention": (False,), "tie_word_embeddings": (True,)}
    for key, allowed in checks.items():
        if key in hf and hf[key] not in allowed:
            _unsupported(local_dir, key, hf[key], allowed[0])
    heads = BERT_ARCHITECTURES[arch]
    num_labels = len(hf.get("id2label") or {}) or hf.get("num_labels", 2)
    return BertConfig(
        vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"], d_ff=hf["intermediate_size"],
        max_len=hf["max_position_embeddings"], type_vocab_size=hf.get("type_vocab_size", 2),
        dropout=hf.get("hidden_dropout_prob", 0.1),  # one rate in bmjax (see bert.py)
        norm_eps=hf.get("layer_norm_eps", 1e-12), init_std=hf.get("initializer_range", 0.02),
        heads=heads, num_labels=num_labels if heads == "classification" else 0)


def _gpt_config(hf: dict, local_dir) -> GPTConfig:
    checks = {"activation_function": ("gelu_new", "gelu_pytorch_tanh"), "scale_attn_weights": (True,),
              "scale_attn_by_inverse_layer_idx": (False,), "add_cross_attention": (False,)}
    for key, allowed in checks.items():
        if key in hf and hf[key] not in allowed:
            _unsupported(local_dir, key, hf[key], allowed[0])
    return GPTConfig(
        vocab_size=hf["vocab_size"], d_model=hf["n_embd"], num_layers=hf["n_layer"],
        num_heads=hf["n_head"], d_ff=hf.get("n_inner"), max_len=hf["n_positions"],
        dropout=hf.get("resid_pdrop", 0.1), norm="layernorm", mlp="gelu", position="learned",
        use_bias=True, tie_embeddings=hf.get("tie_word_embeddings", True),
        norm_eps=hf.get("layer_norm_epsilon", 1e-5), init_std=hf.get("initializer_range", 0.02))


def _bmjax_config(local_dir) -> tuple[str, BertConfig | GPTConfig]:
    hf = _read_config(local_dir)
    arch = _architecture(hf, local_dir)
    if arch in GPT_ARCHITECTURES:
        return arch, _gpt_config(hf, local_dir)
    return arch, _bert_config(hf, arch, local_dir)


def config_from_hf(local_dir) -> dict:
    """The bmjax model config keys (model.*) of a Hugging Face directory, e.g. for train.init_from."""
    _, cfg = _bmjax_config(local_dir)
    return dict(vars(cfg))


def _hf_bert_config(cfg: BertConfig) -> dict:
    arch = {v: k for k, v in BERT_ARCHITECTURES.items()}[cfg.heads]
    out = {
        "architectures": [arch], "model_type": "bert", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads, "intermediate_size": cfg.ff_dim, "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.dropout,
        "classifier_dropout": None, "max_position_embeddings": cfg.max_len,
        "type_vocab_size": cfg.type_vocab_size, "initializer_range": cfg.init_std,
        "layer_norm_eps": cfg.norm_eps, "pad_token_id": 0, "tie_word_embeddings": True,
        "is_decoder": False, "add_cross_attention": False, "dtype": "float32",
    }
    if cfg.heads == "classification":
        out["id2label"] = {str(i): f"LABEL_{i}" for i in range(cfg.num_labels)}
        out["label2id"] = {f"LABEL_{i}": i for i in range(cfg.num_labels)}
    return out


def _hf_gpt2_config(cfg: GPTConfig) -> dict:
    """GPT-2's config for a GPT that has an exact GPT-2 equivalent. Settings written exactly in GPT-2's terms:
    use_bias=False (every bias zero), grouped-query attention (each kv head repeated for the query heads it
    serves), untied embeddings (lm_head), any d_ff, scan_layers. Norm, MLP and positions have none."""
    want = {"norm": "layernorm", "mlp": "gelu", "position": "learned"}
    for key, value in want.items():
        if getattr(cfg, key) != value:
            raise ConfigError(f"model.{key}", f"{getattr(cfg, key)!r} has no GPT2LMHeadModel "
                                              f"equivalent (needs {value!r})")
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": cfg.vocab_size,
        "n_embd": cfg.d_model, "n_layer": cfg.num_layers, "n_head": cfg.num_heads,
        "n_inner": cfg.ff_dim, "n_positions": cfg.max_len, "activation_function": "gelu_new",
        "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": cfg.norm_eps, "initializer_range": cfg.init_std,
        "tie_word_embeddings": cfg.tie_embeddings, "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "bos_token_id": None, "eos_token_id": None, "dtype": "float32",
    }


# ---------------------------------------------------------------------------------------------
# Weight tables: (bmjax path, HF name without the model prefix, conversion)
# Conversions: ("linear", n_in) torch [out, in]; ("conv1d", n_in) [in, out]; "bias" flattened; "copy".
# n_in is how many leading axes of the bmjax kernel are inputs (2 for [heads, head_dim, embed]).


def _linear(path, name, n_in=1, kind="linear"):
    return [(f"{path}.kernel", f"{name}.weight", (kind, n_in)), (f"{path}.bias", f"{name}.bias", "bias")]


def _norm(path, name):
    return [(f"{path}.scale", f"{name}.weight", "copy"), (f"{path}.bias", f"{name}.bias", "bias")]


def _bert_table(cfg: BertConfig) -> list:
    t = [("wte.embedding", "embeddings.word_embeddings.weight", "copy"),
         ("wpe.embedding", "embeddings.position_embeddings.weight", "copy"),
         ("token_types.embedding", "embeddings.token_type_embeddings.weight", "copy"),
         *_norm("ln_embed", "embeddings.LayerNorm")]
    for i in range(cfg.num_layers):
        b, h = f"blocks.{i}", f"encoder.layer.{i}"
        for proj in ("query", "key", "value"):
            t += _linear(f"{b}.attn.{proj}", f"{h}.attention.self.{proj}")
        t += _linear(f"{b}.attn.out", f"{h}.attention.output.dense", n_in=2)
        t += _norm(f"{b}.ln_attn", f"{h}.attention.output.LayerNorm")
        t += _linear(f"{b}.mlp.fc_in", f"{h}.intermediate.dense")
        t += _linear(f"{b}.mlp.fc_out", f"{h}.output.dense")
        t += _norm(f"{b}.ln_mlp", f"{h}.output.LayerNorm")
    if cfg.has_pooler:
        t += _linear("pooler", "pooler.dense")
    if cfg.heads in ("pretraining", "mlm"):
        t += _linear("mlm.dense", "cls.predictions.transform.dense")
        t += _norm("mlm.ln", "cls.predictions.transform.LayerNorm")
        t += [("mlm.bias", "cls.predictions.bias", "bias")]
    if cfg.heads == "pretraining":
        t += _linear("nsp", "cls.seq_relationship")
    if cfg.heads == "classification":
        t += _linear("classifier", "classifier")
    return t


def _gpt2_table(cfg: GPTConfig) -> list:
    t = [("wte.embedding", "wte.weight", "copy"), ("wpe.embedding", "wpe.weight", "copy")]
    for i in range(cfg.num_layers):
        b, h = f"blocks.{i}", f"h.{i}"
        t += _norm(f"{b}.ln_1", f"{h}.ln_1")
        for proj, part in (("query", "q"), ("key", "k"), ("value", "v")):
            t += _linear(f"{b}.attn.{proj}", f"{h}.attn.c_attn:{part}", kind="conv1d")
        t += _linear(f"{b}.attn.out", f"{h}.attn.c_proj", n_in=2, kind="conv1d")
        t += _norm(f"{b}.ln_2", f"{h}.ln_2")
        t += _linear(f"{b}.mlp.fc_in", f"{h}.mlp.c_fc", kind="conv1d")
        t += _linear(f"{b}.mlp.fc_out", f"{h}.mlp.c_proj", kind="conv1d")
    t += _norm("ln_f", "ln_f")
    if not cfg.tie_embeddings:
        t += [("lm_head.kernel", "lm_head.weight", ("linear", 1))]
    return t


def _split_c_attn(tensors: dict) -> dict:
    """GPT-2's fused c_attn [.., 3E] -> c_attn:q/k/v [.., E] (q, k, v in that order)."""
    out = {}
    for name, x in tensors.items():
        stem, _, leaf = name.rpartition(".")
        if stem.endswith("attn.c_attn"):
            for part, piece in zip("qkv", np.split(x, 3, axis=-1)):
                out[f"{stem}:{part}.{leaf}"] = piece
        else:
            out[name] = x
    return out


def _fuse_c_attn(tensors: dict) -> dict:
    out = {}
    for name, x in tensors.items():
        stem, _, leaf = name.rpartition(".")
        if stem.endswith("attn.c_attn:q"):
            base = stem[:-2]
            parts = [tensors[f"{base}:{p}.{leaf}"] for p in "qkv"]
            out[f"{base}.{leaf}"] = np.concatenate(parts, axis=-1)
        elif not stem.endswith(("attn.c_attn:k", "attn.c_attn:v")):
            out[name] = x
    return out


def _hf_shape(conversion, shape: tuple) -> tuple:
    """The shape Hugging Face stores for a bmjax parameter of `shape`."""
    if conversion == "bias":
        return (math.prod(shape),)
    if conversion == "copy":
        return tuple(shape)
    kind, n_in = conversion
    d_in, d_out = math.prod(shape[:n_in]), math.prod(shape[n_in:])
    return (d_out, d_in) if kind == "linear" else (d_in, d_out)


def _to_bmjax(x: np.ndarray, conversion, shape) -> np.ndarray:
    return (x.T if conversion[0] == "linear" else x).reshape(shape)


def _to_hf(x: np.ndarray, conversion) -> np.ndarray:
    if conversion == "bias":
        return x.reshape(-1)
    if conversion == "copy":
        return x
    kind, n_in = conversion
    x = x.reshape(math.prod(x.shape[:n_in]), -1)
    return x.T if kind == "linear" else x


# ---------------------------------------------------------------------------------------------
# Reading and writing


def _read_tensors(local_dir) -> dict:
    path = pathlib.Path(local_dir)
    if (path / WEIGHTS_FILE).is_file():
        return safetensors.numpy.load_file(path / WEIGHTS_FILE)
    if (path / INDEX_FILE).is_file():
        shards = sorted(set(json.loads((path / INDEX_FILE).read_text())["weight_map"].values()))
        tensors = {}
        for shard in shards:
            tensors.update(safetensors.numpy.load_file(path / shard))
        return tensors
    raise ConfigError(str(local_dir), f"no {WEIGHTS_FILE} (or {INDEX_FILE}) in the directory; "
                                      "only safetensors weights are read")


def _canonical_names(tensors: dict, prefix: str) -> dict:
    """Strip the base-model prefix ("bert.", "transformer.") and rename TF-era LayerNorm gamma/beta."""
    out = {}
    for name, x in tensors.items():
        name = name.removeprefix(prefix)
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        out[name] = x
    if "cls.predictions.bias" not in out and "cls.predictions.decoder.bias" in out:
        out["cls.predictions.bias"] = out["cls.predictions.decoder.bias"]
    return out


def _params(model: nnx.Module) -> dict:
    """'dotted.path' -> nnx.Param for every parameter of the model."""
    return {".".join(map(str, path)): node for path, node in nnx.iter_graph(model)
            if isinstance(node, nnx.Param)}


def _slot(path: str, scanned: bool) -> tuple[str, int | None]:
    """Where table path `path` lives in the model: (path, None), or with scan_layers
    ('blocks.X', i) for 'blocks.{i}.X' (layer i of a stacked parameter)."""
    if scanned and path.startswith("blocks."):
        _, layer, rest = path.split(".", 2)
        return f"blocks.{rest}", int(layer)
    return path, None


def _check_table(table: list, params: dict, scanned: bool) -> None:
    missing = sorted(set(params) - {_slot(path, scanned)[0] for path, _, _ in table})
    if missing:  # the model grew a parameter the table does not know: a bug here, not bad input
        raise RuntimeError(f"no Hugging Face name for bmjax parameters {missing}")


def _build(cfg, rngs: nnx.Rngs | None) -> nnx.Module:
    """The model initialised from rngs, or abstract (shapes only, nothing computed) when rngs is None."""
    def make(rngs):
        return GPT(cfg, rngs=rngs) if isinstance(cfg, GPTConfig) else Bert(cfg, rngs=rngs)

    with nnx.use_eager_sharding(False):
        return nnx.eval_shape(lambda: make(nnx.Rngs(0))) if rngs is None else make(rngs)


_HEAD_PATHS = ("pooler.", "mlm.", "nsp.", "classifier.")
# Config fields from_pretrained may change: how the model runs, and (BERT) which heads it has.
RUNTIME_KEYS = ("dtype", "param_dtype", "attention", "remat", "scan_layers", "dropout")
HEAD_KEYS = ("heads", "num_labels")


def _override(cfg, overrides: dict, arch: str, local_dir):
    for key in overrides:
        if key not in RUNTIME_KEYS + HEAD_KEYS:
            raise ConfigError(key, f"cannot be changed when loading {local_dir} (can: "
                                   f"{', '.join(RUNTIME_KEYS + HEAD_KEYS)})")
        if key in HEAD_KEYS and isinstance(cfg, GPTConfig):
            raise ConfigError(key, f"{arch} has no alternative heads")
    if overrides.get("heads", getattr(cfg, "heads", None)) != getattr(cfg, "heads", None):
        overrides.setdefault("num_labels", 0)  # BertConfig asks for it when the new heads classify
    return dataclasses.replace(cfg, **overrides)


def from_pretrained(local_dir, *, rngs: nnx.Rngs | None = None, **overrides) -> nnx.Module:
    """A Hugging Face directory as a bmjax GPT or Bert, ready for inference.

    Dropout runs in bmjax only when a call passes `rngs`, so the returned model is in
    inference mode; its config keeps the checkpoint's dropout rate for fine-tuning.
    `overrides` (None values are ignored) change config fields the file does not fix:
    dtype, param_dtype, attention, remat, scan_layers, dropout; and for BERT `heads` and
    `num_labels`, to build other heads than the checkpoint's (e.g. "classification" from a
    pretraining checkpoint). With `heads` or `num_labels` given, head parameters the file
    lacks or holds in another shape (a new classifier) start from `rngs` (default seed 0)
    and are logged. Tensors the model has no place for (e.g. the pretraining heads under
    "none") are logged and skipped.
    """
    arch, cfg = _bmjax_config(local_dir)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    cfg = _override(cfg, overrides, arch, local_dir)
    tensors = _canonical_names(_read_tensors(local_dir), "transformer." if arch in GPT_ARCHITECTURES
                               else "bert.")
    if isinstance(cfg, GPTConfig):
        tensors, table = _split_c_attn(tensors), _gpt2_table(cfg)
    else:
        table = _bert_table(cfg)
    scanned = cfg.scan_layers
    model = _build(cfg, None)
    params = _params(model)
    _check_table(table, params, scanned)

    def shape_of(path):
        target, layer = _slot(path, scanned)
        shape = params[target].shape
        return shape if layer is None else shape[1:]

    fresh = [path for path, name, conversion in table if name not in tensors
             or tensors[name].shape != _hf_shape(conversion, shape_of(path))]
    may_be_fresh = any(k in overrides for k in HEAD_KEYS)
    for path in fresh:
        if not (may_be_fresh and path.startswith(_HEAD_PATHS)):
            name, conversion = {p: (n, c) for p, n, c in table}[path]
            if name not in tensors:
                raise ConfigError(f"{local_dir}/{WEIGHTS_FILE}", f"missing tensor {name!r} for {arch}")
            raise ConfigError(f"{local_dir}: {name}", f"shape {tensors[name].shape} does not match the "
                                                      f"config ({_hf_shape(conversion, shape_of(path))})")
    if fresh:  # initialise for real only when some head starts fresh
        model = _build(cfg, rngs or nnx.Rngs(0))
        params = _params(model)

    stacked = {}  # with scan_layers: stacked path -> {layer: array}
    for path, name, conversion in table:
        if path in fresh:
            continue
        x = _to_bmjax(tensors[name], conversion, shape_of(path))
        target, layer = _slot(path, scanned)
        if layer is None:
            params[target].set_value(jnp.asarray(x, dtype=params[target].dtype))
        else:
            stacked.setdefault(target, {})[layer] = x
    for target, per_layer in stacked.items():
        x = np.stack([per_layer[i] for i in range(len(per_layer))])
        params[target].set_value(jnp.asarray(x, dtype=params[target].dtype))
    if any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(nnx.state(model))):
        raise RuntimeError("a model variable was left without a value")  # a bug here, not bad input

    if fresh:
        log.warning("%s: freshly initialised (not in the checkpoint): %s", local_dir, ", ".join(fresh))
    used = {name for _, name, _ in table}
    unused = sorted(n for n in tensors if n not in used and not n.endswith(_DERIVED_SUFFIXES)
                    and not (n == "lm_head.weight" and isinstance(cfg, GPTConfig)))
    if unused:
        log.warning("%s: tensors the bmjax model has no place for: %s", local_dir, ", ".join(unused))
    return model


def _param_arrays(model: nnx.Module) -> dict:
    """Table path -> float32 numpy array; stacked (scan_layers) blocks come apart into blocks.{i}.*."""
    out = {}
    for path, var in _params(model).items():
        x = np.asarray(var[...], dtype=np.float32)
        if model.cfg.scan_layers and path.startswith("blocks."):
            for i, layer in enumerate(x):  # the leading axis is the layer
                out[f"blocks.{i}.{path.removeprefix('blocks.')}"] = layer
        else:
            out[path] = x
    return out


def _as_gpt2_params(params: dict, table: list, cfg: GPTConfig) -> dict:
    """A GPT's parameters as the GPT-2 with the same function holds them: a missing bias (use_bias=False) is
    zeros of its kernel's output (its scale's) shape, and each kv head's key and value kernels (and biases) are
    repeated for the heads // kv_heads query heads it serves (bmjax groups query head h with kv head
    h // (heads // kv_heads))."""
    out = dict(params)
    conversions = {path: conversion for path, _, conversion in table}
    for path, _, conversion in table:
        if conversion == "bias" and path not in out:
            stem = path.removesuffix(".bias")
            if f"{stem}.scale" in out:
                out[path] = np.zeros_like(out[f"{stem}.scale"])
            else:
                kernel = out[f"{stem}.kernel"]
                out[path] = np.zeros(kernel.shape[conversions[f"{stem}.kernel"][1]:], kernel.dtype)
    groups = cfg.num_heads // cfg.kv_heads
    if groups > 1:
        for path in list(out):
            if ".attn.key." in path or ".attn.value." in path:  # [.., kv_heads, head_dim]: heads on axis -2
                out[path] = np.repeat(out[path], groups, axis=-2)
    return out


def _fold_mup(params: dict, cfg: BertConfig | GPTConfig) -> dict:
    """A μP model's parameters as the standard model with the same function holds them (transformers knows no
    multipliers). The readout multiplier scales the readout's input: for GPT (tied or not) that input is ln_f's
    output, for BERT's MLM decoder mlm.ln's, so their scale and bias take it; NSP's and a classifier's input is the
    pooled vector, so their kernels take it (W(r·p) + b = (rW)p + b). The attention scale is linear in the
    queries, so each layer's query kernel and bias take its ratio to transformers' 1/sqrt(head_dim)."""
    if not mup.is_mup(cfg):
        return params
    readout = np.float32(mup.readout_multiplier(cfg))
    scale = mup.attention_scale(cfg)
    query = np.float32(1.0 if scale is None else scale * math.sqrt(cfg.head_dim))
    out = {}
    for path, x in params.items():
        if path.startswith(("ln_f.", "mlm.ln.")) or path in ("nsp.kernel", "classifier.kernel"):
            x = x * readout
        elif ".attn.query." in path:
            x = x * query
        out[path] = x
    return out


def save_pretrained(model: nnx.Module, out_dir) -> pathlib.Path:
    """Write model (a bmjax GPT or Bert, standard or μP) as config.json + model.safetensors (float32) into
    out_dir."""
    cfg = model.cfg
    if isinstance(cfg, GPTConfig):
        hf_config, table, prefix = _hf_gpt2_config(cfg), _gpt2_table(cfg), "transformer."
    elif isinstance(cfg, BertConfig):
        hf_config, table = _hf_bert_config(cfg), _bert_table(cfg)
        prefix = "" if cfg.heads == "none" else "bert."  # BertModel's tensors carry no prefix
    else:
        raise ConfigError("model", f"cannot write {type(model).__name__} in Hugging Face format")
    params = _fold_mup(_param_arrays(model), cfg)
    _check_table(table, params, scanned=False)
    if isinstance(cfg, GPTConfig):
        params = _as_gpt2_params(params, table, cfg)
    tensors = {name: _to_hf(params[path], conversion) for path, name, conversion in table}
    if isinstance(cfg, GPTConfig):
        tensors = _fuse_c_attn(tensors)
    head_names = ("cls.", "classifier.", "lm_head.")
    tensors = {(n if n.startswith(head_names) else prefix + n): np.ascontiguousarray(x)
               for n, x in tensors.items()}
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2) + "\n")
    safetensors.numpy.save_file(tensors, out / WEIGHTS_FILE, metadata={"format": "pt"})
    return out
