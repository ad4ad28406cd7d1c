"""Models: GPT (and BERT), built from a config mapping with logical axis names on every parameter."""
from __future__ import annotations

from typing import Any, Mapping

from flax import nnx

from bmjax.models.bert import Bert, BertConfig, BertOutput
from bmjax.models.gpt import GPT, GPTConfig

# model.name -> (config dataclass with from_mapping, module class taking (cfg, *, rngs)).
MODELS: dict[str, tuple[type, type]] = {
    "gpt": (GPTConfig, GPT),
    "bert": (BertConfig, Bert),
}


def _lookup(model_cfg: Mapping[str, Any]) -> tuple[type, type]:
    name = model_cfg["name"]
    if name not in MODELS:
        raise ValueError(f"model.name={name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name]


def model_config(model_cfg: Mapping[str, Any]):
    """The model's own frozen config dataclass (e.g. GPTConfig) from a dict/ConfigDict."""
    config_cls, _ = _lookup(model_cfg)
    if model_cfg.get("vocab_size") is None:  # a config's own: its tokenizer says (bmjax.data.model_vocab_size)
        raise ValueError("model.vocab_size is unset; resolve it from the tokenizer first "
                         "(bmjax.data.with_model_vocab_size)")
    return config_cls.from_mapping(model_cfg)


def build_model(model_cfg: Mapping[str, Any], *, rngs: nnx.Rngs) -> nnx.Module:
    """The model named by model_cfg["name"], with parameters initialised from rngs.

    Built without eager sharding: parameters carry logical axis names as metadata,
    and the trainer places them on a mesh afterwards (eager sharding needs a mesh).
    """
    _, module_cls = _lookup(model_cfg)
    cfg = model_config(model_cfg)
    with nnx.use_eager_sharding(False):
        return module_cls(cfg, rngs=rngs)


# Hugging Face format import/export (imports bert and gpt, so it comes after them).
from bmjax.models.hf import config_from_hf, from_pretrained, save_pretrained  # noqa: E402

__all__ = ["Bert", "BertConfig", "BertOutput", "GPT", "GPTConfig", "MODELS", "build_model",
           "config_from_hf", "from_pretrained", "model_config", "save_pretrained"]
