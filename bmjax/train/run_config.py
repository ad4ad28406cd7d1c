"""The configs a workdir's run was trained with, and the check that a resume does not quietly change the maths.

A fresh run writes its resolved config to `workdir/config.json`; every resume at step N writes the config it
continues with to `workdir/config.stepNNNNNN.json`, so the workdir keeps every config that trained it (the
newest file is the one in force). Before a checkpoint is restored, the resuming config is compared with the
newest saved one: a difference in any key outside HARMLESS stops the run with one line listing the keys, their
old and new values, unless `--allow_config_change=KEY,...` names every one of them.

`optim.decay_steps` is compared as the schedule uses it: unset, it follows `train.steps` (or the epochs), so
extending an unset-decay run reports `optim.decay_steps` (the cosine would bend), while extending a run whose
decay_steps is explicit is harmless.
"""
import json
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
    "train.sample_prompt", "train.sample_temperature", "model.attention", "model.remat", "tensorboard",
})
HARMLESS_SECTIONS = ("mesh.", "wandb.")


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
    old, new = _schedule_keys(flatten(saved)), _schedule_keys(flatten(current))
    missing = "(absent)"
    return {key: (old.get(key, missing), new.get(key, missing)) for key in sorted(set(old) | set(new))
            if old.get(key, missing) != new.get(key, missing)
            and key not in HARMLESS and not key.startswith(HARMLESS_SECTIONS)}


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
    refused = {key: values for key, values in changes(saved, as_saved(config)).items() if key not in allowed}
    if refused:
        listed = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in refused.items())
        raise ConfigError(
            "config", f"resuming {workdir} with a config that changes the maths ({listed}) against {path.name}; "
                      f"use the saved config, a new --workdir, or --allow_config_change={','.join(refused)}")


def record(workdir: pathlib.Path, config, resumed_step: int | None) -> pathlib.Path:
    """Write the config this run trains with: config.json for a fresh start, config.stepNNNNNN.json for a resume
    at that step. Returns the file written."""
    path = workdir_lib.config_file(workdir, resumed_step)
    workdir_lib.write_atomic(path, json.dumps(config.to_dict(), indent=2, default=str) + "\n")
    return path
