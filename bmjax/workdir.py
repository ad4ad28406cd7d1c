"""A run directory (workdir): the one module that knows its files.

    DIR/config.json              the first run's resolved config       config_file(DIR), read_config(DIR)
    DIR/config.stepNNNNNN.json   the config of each resume at step N   config_file(DIR, N), newest_config(DIR),
                                                                       config_at(DIR, step)
    DIR/summary.json             N, D, C, losses, status               read_summary(DIR), write_summary(DIR, ...)
    DIR/metrics.jsonl            one JSON object per logged row        metrics_file(DIR), truncate_metrics(DIR, step)
    DIR/checkpoints/             orbax steps                           checkpoint_dir(DIR), newest_checkpoint(DIR),
                                                                       checkpoint_steps(DIR)
    DIR/vocab.json, sample.txt   char vocabulary; GPT's final sample   VOCAB_FILE, sample_file(DIR)
    DIR/lm_eval.json             bmjax-eval's lm-evaluation-harness results (summary.json's `lm_eval` holds
                                 their scores)                          LM_EVAL_FILE, update_summary(DIR, ...)

    config = workdir.read_config(DIR)
    model = workdir.load_model(DIR, config)   # the newest checkpoint's parameters, on one device

Every file is written through `write_atomic` (a new file replaces the old, so a kill midway leaves one or the
other). The readers write nothing, so a run may be read while it trains. A bad directory is a ConfigError
under the caller's flag name (`flag`).
"""
from __future__ import annotations

import json
import os
import pathlib
import re

from bmjax.errors import ConfigError

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
VOCAB_FILE = "vocab.json"
SAMPLE_FILE = "sample.txt"
LM_EVAL_FILE = "lm_eval.json"
_RESUME_CONFIG = re.compile(r"config\.step(\d+)\.json")


def write_atomic(path, text: str):
    """Write `text` to `path` through a temporary file that replaces it once complete and synced."""
    path = pathlib.Path(path)
    partial = path.with_name(path.name + ".tmp")
    with open(partial, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def config_file(workdir, resumed_step: int | None = None) -> pathlib.Path:
    """config.json for a fresh start, config.stepNNNNNN.json for a resume at that step."""
    name = CONFIG_FILE if resumed_step is None else f"config.step{resumed_step:06d}.json"
    return pathlib.Path(workdir) / name


def newest_config(workdir) -> pathlib.Path | None:
    """The newest config file of the workdir's run: the last resume's, else config.json; None if neither."""
    workdir = pathlib.Path(workdir)
    resumes = [(int(m.group(1)), p) for p in workdir.glob("config.step*.json")
               if (m := _RESUME_CONFIG.fullmatch(p.name))]
    if resumes:
        return max(resumes)[1]
    first = workdir / CONFIG_FILE
    return first if first.is_file() else None


def config_at(workdir, step: int) -> pathlib.Path:
    """The config that trained the run's step `step`: that of the last resume before it, else config.json."""
    workdir = pathlib.Path(workdir)
    resumes = [(int(m.group(1)), p) for p in workdir.glob("config.step*.json")
               if (m := _RESUME_CONFIG.fullmatch(p.name)) and int(m.group(1)) < step]
    return max(resumes)[1] if resumes else workdir / CONFIG_FILE


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


def read_summary(workdir) -> dict | None:
    """summary.json, or None where there is none (or a half-written one from a writer older than write_atomic)."""
    path = pathlib.Path(workdir) / SUMMARY_FILE
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except json.JSONDecodeError:
        return None


def write_summary(workdir, values: dict):
    write_atomic(pathlib.Path(workdir) / SUMMARY_FILE, json.dumps(values, indent=2) + "\n")


def update_summary(workdir, values: dict):
    """summary.json with `values` set (the rest kept): for figures computed after the run, such as bmjax-eval's."""
    write_summary(workdir, dict(read_summary(workdir) or {}, **values))


def metrics_file(workdir) -> pathlib.Path:
    return pathlib.Path(workdir) / METRICS_FILE


def read_metrics(workdir) -> list[dict]:
    """Every row of metrics.jsonl (none if there is no file)."""
    path = metrics_file(workdir)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(workdir, last_step: int):
    """Drop rows logged after `last_step`: a resumed run logs those steps again, so they must not repeat."""
    path = metrics_file(workdir)
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
    write_atomic(path, "".join(line + "\n" for line in kept))


def sample_file(workdir) -> pathlib.Path:
    return pathlib.Path(workdir) / SAMPLE_FILE


def checkpoint_dir(workdir) -> pathlib.Path:
    return pathlib.Path(workdir) / CHECKPOINT_DIR


def checkpoint_steps(workdir) -> list[int]:
    """The steps of the finished step folders in workdir/checkpoints (orbax renames a folder once it is complete),
    in order."""
    directory = checkpoint_dir(workdir).resolve()
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()) \
        if directory.is_dir() else []


def newest_checkpoint(workdir, flag: str = "--workdir") -> pathlib.Path:
    """The newest finished step folder in workdir/checkpoints."""
    steps = checkpoint_steps(workdir)
    if not steps:
        raise ConfigError(flag, f"no checkpoint in {checkpoint_dir(workdir).resolve()}")
    return checkpoint_dir(workdir).resolve() / str(steps[-1])


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
