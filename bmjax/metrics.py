"""Metric writers: workdir/metrics.jsonl (always), Weights & Biases and TensorBoard (when configured).

Only process 0 writes. Every writer takes the same call, `write(step, split, scalars)`, one row per call.
A run's summary (bmjax/train/summary.py) goes to W&B's run summary through `summary(values)`.
`read_wandb_offline(run_dir)` reads back what an offline W&B run logged.
"""
import json
import os
import pathlib
import uuid

import numpy as np

from bmjax import workdir as workdir_lib


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

    def summary(self, values: dict):
        self.run.summary.update(values)

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
        self.closed = False
        if not is_primary:
            return
        self.writers.append(JsonlWriter(workdir_lib.metrics_file(workdir)))
        if config.wandb.mode != "disabled":
            os.environ.setdefault("WANDB_SILENT", "true")
            self.writers.append(WandbWriter(config.wandb, config.to_dict(), workdir))
        if config.tensorboard:
            self.writers.append(TensorboardWriter(workdir / "tensorboard"))

    def write(self, step: int, split: str, scalars: dict):
        for writer in self.writers:
            writer.write(step, split, scalars)

    def summary(self, values: dict):
        """The run's summary values (W&B's run.summary; the other writers keep rows only)."""
        for writer in self.writers:
            if hasattr(writer, "summary"):
                writer.summary(values)

    def close(self):
        if self.closed:
            return
        self.closed = True
        for writer in self.writers:
            writer.close()


_WANDB_BLOCK, _WANDB_HEADER = 32768, 7  # LevelDB log framing: 32 KiB blocks, 7-byte record headers
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _wandb_records(path: pathlib.Path):
    """The protobuf Records of one `.wandb` file: a file header (`:W&B`, magic 0xBEE1, version), then
    LevelDB-log chunks (crc32, length, type) that never cross a 32 KiB block; a record may span chunks."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B transaction log")
    pos, pieces = _WANDB_HEADER, []
    while pos + _WANDB_HEADER <= len(data):
        left_in_block = _WANDB_BLOCK - pos % _WANDB_BLOCK
        if left_in_block < _WANDB_HEADER:  # a block's tail too short for a header is padding
            pos += left_in_block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0:  # zero padding: the rest of the block
            pos += left_in_block
            continue
        pieces.append(data[pos + _WANDB_HEADER:pos + _WANDB_HEADER + length])
        pos += _WANDB_HEADER + length
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(pieces))
            pieces = []
            yield record


def read_wandb_offline(run_dir) -> tuple[list[dict], dict]:
    """(history rows, summary) logged by an offline W&B run: `run_dir` is a workdir (every
    `wandb/offline-run-*` under it, oldest first, as a resumed run appends new ones) or one offline-run folder.

    Each history row is {"_step": step, key: value, ...}; the summary holds the last value set for each key."""
    run_dir = pathlib.Path(run_dir)
    files = sorted(run_dir.glob("run-*.wandb")) or sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    rows, summary = [], {}
    for path in files:
        for record in _wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
            elif kind == "summary":
                for item in record.summary.update:
                    summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return rows, summary
