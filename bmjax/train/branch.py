"""`train.branch_from="WORKDIR@STEP"`: a new run, in its own workdir, that starts from another run's checkpoint at
STEP (parameters, optimizer state, data iterator position and step counter) and trains on with its own run and
schedule length: a cooldown branched from a stable warmup-stable-decay run is then, bit for bit, the run trained
straight with the branch's schedule.

That holds only if nothing but lengths and cadences differ, so the branch's config may differ from the config
that trained the parent's checkpoint only in BRANCH_MAY_CHANGE, and the two learning-rate schedules must give
the same rate at every step before STEP. Both are checked before anything compiles (`check`); any other
difference is one line naming the keys, exit 2.

The parent is recorded in the branch's config.json (the key, its workdir made absolute) and in its summary.json
as `"branch_from": {"workdir": "<absolute path>", "step": N}` (`record`; null for runs that are not branches).
The branch's metrics.jsonl starts with the parent's rows up to STEP, so it reads as the straight run's would.
Once the branch has checkpoints of its own, re-running its command resumes from those, not from the parent.
"""
import dataclasses
import json
import pathlib

import jax.numpy as jnp
import numpy as np

from bmjax import workdir as workdir_lib
from bmjax.errors import ConfigError
from bmjax.train import optim
from bmjax.train import run_config

KEY = "train.branch_from"

# The keys in which a branch may differ from its parent: how long it runs and how its schedule ends, how often it
# logs, evaluates and checkpoints, where it writes and what it prints. Everything else (model, data, seed,
# optimizer, mesh, ...) must be the parent's.
BRANCH_MAY_CHANGE = frozenset({
    "train.steps", "optim.decay_steps", "optim.cooldown_fraction", "optim.cooldown_shape",
    "train.log_every", "train.eval_every", "train.ckpt_every", "train.keep_ckpts", "train.ckpt_steps", KEY,
    "train.progress", "train.sample_tokens", "train.sample_prompt", "train.sample_temperature", "tensorboard",
})
BRANCH_MAY_CHANGE_SECTIONS = ("wandb.",)


@dataclasses.dataclass(frozen=True)
class Parent:
    workdir: pathlib.Path  # absolute
    step: int


def parse(value: str) -> Parent | None:
    """"WORKDIR@STEP" -> Parent (WORKDIR made absolute against the current directory); "" -> None."""
    if not value:
        return None
    path, at, step = str(value).rpartition("@")
    if not at or not path or not step.isdigit() or int(step) <= 0:
        raise ConfigError(KEY, f"expected WORKDIR@STEP with STEP a positive integer, got {value!r}")
    return Parent(pathlib.Path(run_config.absolute(path)), int(step))


def check(config) -> Parent | None:
    """The parent `config.train.branch_from` names, after checking that the branch may start from it: the parent's
    checkpoint at STEP exists, its config differs from `config` only in BRANCH_MAY_CHANGE, and the two schedules
    agree on every step before STEP. A ConfigError otherwise; None when the run is no branch."""
    parent = parse(config.train.branch_from)
    if parent is None:
        return None
    if not (parent.workdir / workdir_lib.CONFIG_FILE).is_file():
        raise ConfigError(KEY, f"{parent.workdir} is not a bmjax-train workdir (no {workdir_lib.CONFIG_FILE})")
    steps = workdir_lib.checkpoint_steps(parent.workdir)
    if parent.step not in steps:
        has = ", ".join(map(str, steps)) if steps else "none"
        raise ConfigError(KEY, f"{parent.workdir} has no checkpoint at step {parent.step}; its checkpoints: {has} "
                               "(train.ckpt_steps keeps one at chosen steps)")
    if config.train.epochs or not config.train.steps or parent.step >= int(config.train.steps):
        raise ConfigError(KEY, f"the branch point {parent.step} must lie before the branch's train.steps="
                               f"{config.train.steps} (a run measured in steps, not train.epochs)")
    path = workdir_lib.config_at(parent.workdir, parent.step)
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(KEY, f"cannot read {path}: {e}") from None
    differ = differences(saved, run_config.as_saved(config))
    if differ:
        listed = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in differ.items())
        raise ConfigError(KEY, f"a branch may change only run and schedule lengths and cadences, but this config "
                               f"changes {listed} against {path}")
    _check_schedules_agree(saved, config, parent)
    return parent


def differences(parent: dict, branch: dict) -> dict:
    """{key: (parent value, branch value)} of every key outside BRANCH_MAY_CHANGE whose value differs."""
    old, new = run_config.flatten(parent), run_config.flatten(branch)
    missing = "(absent)"
    return {key: (old.get(key, missing), new.get(key, missing)) for key in sorted(set(old) | set(new))
            if old.get(key, missing) != new.get(key, missing)
            and key not in BRANCH_MAY_CHANGE and not key.startswith(BRANCH_MAY_CHANGE_SECTIONS)}


def _check_schedules_agree(parent: dict, config, where: Parent):
    """The parent trained steps 0..STEP-1 at the rates of its schedule; the straight run with the branch's
    schedule would have used the branch's. Unless they are the same numbers the branch is not that run."""
    import ml_collections

    parent_optim = ml_collections.ConfigDict(parent["optim"])
    counts = jnp.arange(where.step)
    trained = np.asarray(optim.schedule(parent_optim, int(parent["train"]["steps"]))(counts))
    straight = np.asarray(optim.schedule(config.optim, int(config.train.steps))(counts))
    apart = np.flatnonzero(trained != straight)
    if apart.size:
        s = int(apart[0])
        raise ConfigError(KEY, f"the parent's learning rate differs from this branch's schedule before the branch "
                               f"point {where.step} (first at step {s}: {trained[s]:.6g} vs {straight[s]:.6g}), so the "
                               "branch would not be the run trained straight; branch from a step before the parent's "
                               "decay and the branch's cooldown start (optim.schedule=wsd)")


def record(parent: Parent | None) -> dict | None:
    """summary.json's `branch_from`."""
    return None if parent is None else {"workdir": str(parent.workdir), "step": parent.step}


def copy_metrics(parent: Parent, workdir: pathlib.Path):
    """The branch's metrics.jsonl begins with the parent's rows up to the branch point, byte for byte."""
    source = workdir_lib.metrics_file(parent.workdir)
    lines = source.read_text().splitlines() if source.exists() else []
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= parent.step]
    workdir_lib.write_atomic(workdir_lib.metrics_file(workdir), "".join(line + "\n" for line in kept))
