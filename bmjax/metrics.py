"""Metric writers: workdir/metrics.jsonl (always), Weights & Biases and TensorBoard (when configured).

Only process 0 writes. Every writer takes the same call, `write(step, split, scalars)`, one row per call.
"""
import json
import os
import pathlib
import uuid

import numpy as np


def _plain(value):
    """Numbers as plain Python floats/ints so json and the loggers all take them."""
    value = np.asarray(value)
    return int(value) if np.issubdtype(value.dtype, np.integer) else float(value)


class JsonlWriter:
    """One JSON object per line: {"step": int, "split": "train"|"eval", ...scalars}."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.file = open(path, "a", buffering=1)

    def write(self, step: int, split: str, scalars: dict):
        row = {"step": int(step), "split": split, **{k: _plain(v) for k, v in scalars.items()}}
        self.file.write(json.dumps(row) + "\n")

    def close(self):
        self.file.close()


def truncate_jsonl(path: pathlib.Path, last_step: int):
    """Drop rows logged after `last_step`: a resumed run logs those steps again, so they must not repeat.

    Atomic: the kept rows go to a new file that replaces the old one, so a kill midway leaves one or the other.
    """
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
    partial = path.with_name(path.name + ".tmp")
    with open(partial, "w") as f:
        f.write("".join(line + "\n" for line in kept))
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


class WandbWriter:
    """W&B in `offline` (files under the workdir) or `online` mode; one run id per workdir so resumes append."""

    def __init__(self, wandb_cfg, config_dict: dict, workdir: pathlib.Path):
        import wandb

        id_file = workdir / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        self.run = wandb.init(
            mode=wandb_cfg.mode,
            project=wandb_cfg.project,
            group=wandb_cfg.group or None,
            tags=list(wandb_cfg.tags),
            dir=str(workdir),
            id=run_id,
            resume="allow",
            config=config_dict,
            name=workdir.name,
        )

    def write(self, step: int, split: str, scalars: dict):
        self.run.log({f"{split}/{k}": _plain(v) for k, v in scalars.items()}, step=int(step))

    def close(self):
        self.run.finish()


class TensorboardWriter:
    def __init__(self, logdir: pathlib.Path):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(logdir))

    def write(self, step: int, split: str, scalars: dict):
        for key, value in scalars.items():
            self.writer.add_scalar(f"{split}/{key}", _plain(value), int(step))

    def close(self):
        self.writer.close()


class MetricWriters:
    """Fans each row out to every configured writer; a no-op on processes other than 0."""

    def __init__(self, config, workdir: pathlib.Path, is_primary: bool):
        self.writers = []
        if not is_primary:
            return
        self.writers.append(JsonlWriter(workdir / "metrics.jsonl"))
        if config.wandb.mode != "disabled":
            os.environ.setdefault("WANDB_SILENT", "true")
            self.writers.append(WandbWriter(config.wandb, config.to_dict(), workdir))
        if config.tensorboard:
            self.writers.append(TensorboardWriter(workdir / "tensorboard"))

    def write(self, step: int, split: str, scalars: dict):
        for writer in self.writers:
            writer.write(step, split, scalars)

    def close(self):
        for writer in self.writers:
            writer.close()
