"""The configs a workdir's run was trained with, and the check that a resume does not quietly change the maths.

A fresh run writes its resolved config to `workdir/config.json`; every resume at step N writes the config it
continues with to `workdir/config.stepNNNNNN.json`, so the workdir keeps every config that trained it (the
newest file is the one in force). Before a checkpoint is restored, the resuming config is compared with the
newest saved one: a difference in any key outside HARMLESS stops the run with one line listing the keys, their
old and new values, unless `--allow_config_change=KEY,...` names every one of them.

`optim.decay_steps` is compared as the schedule uses it: unset, it follows `train.steps` (or the epochs), so
extending an unset-decay run reports `train.steps` (the key the user changed; the cosine would bend) and
`--allow_config_change=train.steps` allows it, while extending a run whose decay_steps is explicit is harmless.

`resolve_paths` is where a run's file and directory values (train.branch_from's WORKDIR too) become absolute: relative ones are relative to the
directory the command started in, and the saved config records where they pointed.
"""
import json
import os
import pathlib

from bmjax import workdir as workdir_lib
from bmjax.errors import ConfigError

# Keys that change how a run is run or watched, not what it computes: run length (its effect on the schedule is
# compared through optim.decay_steps), cadences, logging, the mesh (a checkpoint restores onto any mesh), the
# attention kernel and rematerialisation (same maths), init_from (used only by a fresh start) and the
# end-of-run sample.
HARMLESS = frozenset({
    "train.steps", "train.epochs", "train.log_every", "train.eval_every", "train.ckpt_every",
    "train.keep_ckpts", "train.progress", "train.steps_per_call", "train.init_from", "train.sample_tokens",
    "train.sample_prompt", "train.sample_temperature", "train.ckpt_steps", "model.attention", "model.remat",
    "tensorboard", "data.eval_sets",  # eval sets are scored, never trained on
})
HARMLESS_SECTIONS = ("mesh.", "wandb.")


# Keys whose value is a file, a glob of files or a directory (data.path only where it names a file, not a TFDS
# dataset; data.tokenizer only where it is a file, not "byte" or "char").
PATH_KEYS = ("data.path", "data.eval_path", "data.tfds_data_dir", "data.prepare_from", "data.tokenizer",
             "train.init_from")
_NOT_PATHS = {"data.tokenizer": ("byte", "char")}
_MIXTURE_FILES = ("arrayrecord", "text")  # mixture sources given by a path (tfds:NAME and builtin are not)


def absolute(path: str) -> str:
    """`path` relative to the current directory made absolute ('~' expanded); '' and URLs stay as they are."""
    if not path or "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


def _absolute_mixture(mixture: str) -> str:
    """data.mixture with the path of each arrayrecord:/text: part absolute; a malformed part is left for
    bmjax.data.documents to report."""
    parts = []
    for part in mixture.split(";"):
        spec, eq, weight = part.strip().rpartition("=")
        kind, colon, arg = spec.partition(":")
        if eq and colon and kind in _MIXTURE_FILES and arg:
            part = f"{kind}:{absolute(arg)}={weight}"
        parts.append(part)
    return ";".join(parts)


def _absolute_eval_sets(eval_sets: str) -> str:
    """data.eval_sets with the path of each NAME=arrayrecord:/text: set absolute (a malformed one left as it is)."""
    parts = []
    for part in eval_sets.split(";"):
        name, eq, spec = part.strip().partition("=")
        kind, colon, arg = spec.partition(":")
        parts.append(f"{name}={kind}:{absolute(arg)}" if eq and colon and kind in _MIXTURE_FILES and arg else part)
    return ";".join(parts)


def _resolved_paths(flat: dict) -> dict:
    """{key: absolute value} of every path-valued key of a flattened config whose value changes."""
    out = {}
    for key in PATH_KEYS:
        value = flat.get(key)
        if not isinstance(value, str) or value in _NOT_PATHS.get(key, ()):
            continue
        if key == "data.path" and flat.get("data.source") == "tfds":
            continue  # a TFDS dataset's name
        out[key] = absolute(value)
    if isinstance(flat.get("data.mixture"), str) and flat["data.mixture"]:
        out["data.mixture"] = _absolute_mixture(flat["data.mixture"])
    if isinstance(flat.get("data.eval_sets"), str) and flat["data.eval_sets"]:
        out["data.eval_sets"] = _absolute_eval_sets(flat["data.eval_sets"])
    branch, at, step = str(flat.get("train.branch_from") or "").rpartition("@")
    if branch and at:  # WORKDIR@STEP; a malformed value is left for bmjax.train.branch to report
        out["train.branch_from"] = f"{absolute(branch)}@{step}"
    return {key: value for key, value in out.items() if value != flat.get(key)}


def resolve_paths(config):
    """A copy of `config` with every path-valued key (PATH_KEYS, data.mixture's files) absolute, resolved
    against the current directory: the one place a run's relative paths get their meaning."""
    config = config.copy_and_resolve_references()
    for key, value in _resolved_paths(flatten(as_saved(config))).items():
        section, name = key.split(".")
        config[section][name] = value
    return config


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"optim.lr": 0.001, ...}: every leaf of a nested config dict under its dotted key."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def as_saved(config) -> dict:
    """The config as config.json holds it (tuples become lists), so saved and current compare alike."""
    return json.loads(json.dumps(config.to_dict(), default=str))


def _schedule_keys(flat: dict) -> dict:
    """`flat` with optim.decay_steps as the schedule uses it (see the module docstring)."""
    flat = dict(flat)
    if flat.get("optim.schedule") == "constant":
        flat["optim.decay_steps"] = None
    elif flat.get("optim.decay_steps") is None:
        steps = flat.get("train.steps")
        flat["optim.decay_steps"] = steps if steps else f"{flat.get('train.epochs')} epochs"
    return flat


def changes(saved: dict, current: dict) -> dict:
    """{key: (saved value, current value)} of every key whose value differs and that can change the maths."""
    old, new = flatten(saved), flatten(current)
    old.update(_resolved_paths(old))  # a config saved before paths were resolved: relative to this directory
    # An unset decay follows the run's length: the user changed train.steps (or the epochs), so that is the key
    # named, and the one --allow_config_change takes.
    follows = old.get("optim.decay_steps") is None and new.get("optim.decay_steps") is None
    old, new = _schedule_keys(old), _schedule_keys(new)
    missing = "(absent)"
    found = {key: (old.get(key, missing), new.get(key, missing)) for key in sorted(set(old) | set(new))
             if old.get(key, missing) != new.get(key, missing)
             and key not in HARMLESS and not key.startswith(HARMLESS_SECTIONS)}
    if follows and "optim.decay_steps" in found:
        del found["optim.decay_steps"]
        length = "train.epochs" if old.get("train.epochs") or new.get("train.epochs") else "train.steps"
        found[length] = (old.get(length, missing), new.get(length, missing))
    return found


def check_allowed_keys(config, allowed) -> None:
    """Every key of --allow_config_change names a config key."""
    known = flatten(as_saved(config))
    for key in allowed:
        if key not in known:
            raise ConfigError("--allow_config_change", f"unknown config key {key!r}")


def check_resume(workdir: pathlib.Path, config, allowed=()) -> None:
    """Raise a ConfigError listing the maths-changing keys in which `config` differs from the run's newest saved
    config and that `allowed` does not name. Nothing to compare (no saved config) passes."""
    path = workdir_lib.newest_config(workdir)
    if path is None:
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError("workdir", f"cannot read {path}: {e}") from None
    if "optim.decay_steps" in allowed:  # the name this change went by before it was reported as train.steps
        allowed = (*allowed, "train.steps", "train.epochs")
    refused = {key: values for key, values in changes(saved, as_saved(config)).items() if key not in allowed}
    if refused:
        listed = ", ".join(f"{key} {old!r} -> {new!r}" + (" (optim.decay_steps follows it: the schedule would "
                                                           "bend)" if key in ("train.steps", "train.epochs") else "")
                           for key, (old, new) in refused.items())
        raise ConfigError(
            "config", f"resuming {workdir} with a config that changes the maths ({listed}) against {path.name}; "
                      f"use the saved config, a new --workdir, or --allow_config_change={','.join(refused)}")


def record(workdir: pathlib.Path, config, resumed_step: int | None) -> pathlib.Path:
    """Write the config this run trains with: config.json for a fresh start, config.stepNNNNNN.json for a resume
    at that step. Returns the file written."""
    path = workdir_lib.config_file(workdir, resumed_step)
    workdir_lib.write_atomic(path, json.dumps(config.to_dict(), indent=2, default=str) + "\n")
    return path
