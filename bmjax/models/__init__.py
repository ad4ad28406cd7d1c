"""Models: GPT (and BERT), built from a config mapping with logical axis names on every parameter."""
from __future__ import annotations

from typing import Any, Mapping

from flax import nnx

from bmjax.models.gpt import GPT, GPTConfig


def model_config(model_cfg: Mapping[str, Any]):
    """The frozen config dataclass of the model named by model_cfg["name"] (e.g. GPTConfig)."""
    name = model_cfg["name"]
    if name == "gpt":
        return GPTConfig.from_mapping(model_cfg)
    raise ValueError(f"model.name={name!r}; expected 'gpt'")


def build_model(model_cfg: Mapping[str, Any], *, rngs: nnx.Rngs) -> nnx.Module:
    """The model named by model_cfg["name"], with parameters initialised from rngs.

    Built without eager sharding: parameters carry logical axis names as metadata,
    and the trainer places them on a mesh afterwards (eager sharding needs a mesh).
    """
    name = model_cfg["name"]
    with nnx.use_eager_sharding(False):
        if name == "gpt":
            return GPT(GPTConfig.from_mapping(model_cfg), rngs=rngs)
        # "bert": added with bmjax/models/bert.py.
    raise ValueError(f"model.name={name!r}; expected 'gpt'")


__all__ = ["GPT", "GPTConfig", "build_model", "model_config"]
