"""A training run's directory, read-only: its resolved config, its newest checkpoint, its model.

    config = runs.read_config(workdir)
    model = runs.load_model(workdir, config)   # the newest checkpoint's parameters, on one device

For tools that use a run without training it (bmjax-sample, bmjax-convert). Nothing here writes into the
directory or cleans it up, so they may read a run that is still training. A bad directory is a ConfigError
under the caller's flag name (`flag`).
"""
from __future__ import annotations

import json
import pathlib

from bmjax.errors import ConfigError

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


def read_config(workdir, flag: str = "--workdir"):
    """The run's config.json as a ConfigDict."""
    import ml_collections

    workdir = pathlib.Path(workdir)
    if not workdir.is_dir():
        raise ConfigError(flag, f"{workdir} does not exist")
    path = workdir / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(flag, f"cannot read {path}: {e}") from None
    if not isinstance(config, dict) or "model" not in config:
        raise ConfigError(flag, f"{path} has no model section: not a bmjax-train workdir")
    return ml_collections.ConfigDict(config)


def newest_checkpoint(workdir, flag: str = "--workdir") -> pathlib.Path:
    """The newest finished step folder in workdir/checkpoints (orbax renames a folder once it is complete)."""
    directory = (pathlib.Path(workdir) / CHECKPOINT_DIR).resolve()
    steps = [int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()] if directory.is_dir() else []
    if not steps:
        raise ConfigError(flag, f"no checkpoint in {directory}")
    return directory / str(max(steps))


def load_model(workdir, config, flag: str = "--workdir"):
    """The model `config.model` describes, with the parameters of the run's newest checkpoint, on one device.

    Only the parameters are read (the optimizer state stays on disk); the model is in inference mode (no
    dropout unless a call passes rngs).
    """
    import jax
    from flax import nnx

    from bmjax.checkpoint import read_tree
    from bmjax.models import build_model

    step_dir = newest_checkpoint(workdir, flag)
    try:
        abstract = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0)))
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(flag, f"{pathlib.Path(workdir) / CONFIG_FILE}: cannot build its model: {e}") from None
    graphdef, abstract_params, rest = nnx.split(abstract, nnx.Param, ...)
    params = jax.device_put(read_tree(step_dir, abstract_params, "params/"), jax.devices()[0])
    return nnx.merge(graphdef, params, rest)
