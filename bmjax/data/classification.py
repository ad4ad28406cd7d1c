"""Sequence classification data: labelled texts (or text pairs) from CSV/JSONL files or a prepared TFDS dataset.

Sources (`data.source`):
- `csv`: `data.path` with a header row (tab-separated when the name ends in .tsv, as GLUE's files).
- `jsonl`: `data.path` with one JSON object per line.
- `tfds`: `data.path` names a TFDS dataset (e.g. `glue/sst2`) already prepared in the array_record
  format under `data.tfds_data_dir` (TFDS's default directory when empty); read with
  `tfds.data_source`, which needs no TensorFlow. Nothing is downloaded: an unprepared dataset is an error.
  Splits `data.train_split` / `data.eval_split`.
For files, `data.eval_path` is the eval split; without it a `data.eval_fraction` share of the rows, drawn
with a fixed seed, is held out.

Columns: `data.text_column`, `data.text_pair_column` (empty: single texts), `data.label_column`.
Labels (`data.labels`, a string): comma-separated label names ("negative,positive"), or a count N,
naming the labels "0" .. "N-1". A row's label is matched by its text ("1", "positive"); TFDS class
labels are already indices. A label outside the list is an error naming the file and line.

Examples are `[CLS] text [SEP]` or `[CLS] text [SEP] pair [SEP]` (token types 0 then 1), truncated to
`data.seq_len` by trimming the longer text's end, padded with [PAD]. Batches: input_ids, token_type_ids,
attention_mask int32 [b, seq_len], labels int32 [b], weights float32 [b].
Train: the examples repeated, each epoch in the permutation of (`train.seed`, epoch) (order.py), cut into
global batches; process p of P gets rows [p*b, (p+1)*b). Eval: the eval split in file order, the last batch padded with
weight-0 rows, at most `train.eval_steps` batches (set it high to score the whole split).
"""
import csv
import dataclasses
import importlib
import json
import logging
import math
import os
from typing import Callable, Iterator

import grain
import numpy as np

from bmjax.data import order
from bmjax.data.pipeline import OneSourceData
from bmjax.data.lm import EVAL_SEED
from bmjax.data.mlm import encode_lines, fit_pair
from bmjax.data.tokenizers import Tokenizer, build_tokenizer, check_tokenizer_config
from bmjax.errors import ConfigError

SOURCES = ("csv", "jsonl", "tfds")
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


@dataclasses.dataclass
class ClassificationData(OneSourceData):
    tokenizer: Tokenizer
    train_iter: grain.DatasetIterator  # infinite; get_state()/set_state() for checkpoints
    eval_batches: Callable[[], Iterator[dict[str, np.ndarray]]]
    train_examples: int
    eval_examples: int
    label_names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Rows:
    """One split's raw examples: texts, optional pair texts, labels, and where each came from."""

    texts: list[str]
    pairs: list[str] | None
    labels: list
    origins: list[str]  # "FILE:LINE" of each row, for error messages
    key: str  # the config key that names this split's source


def label_names(config) -> tuple[str, ...]:
    """data.labels as a tuple of names: "a,b,c" -> ("a", "b", "c"); "3" -> ("0", "1", "2")."""
    spec = str(config.data.labels).strip()
    if not spec:
        raise ConfigError("data.labels", "is unset; give the label names (\"negative,positive\") or their number")
    if spec.isdigit():
        names = tuple(str(i) for i in range(int(spec)))
    else:
        names = tuple(name.strip() for name in spec.split(","))
    if len(names) < 2 or len(set(names)) != len(names) or not all(names):
        raise ConfigError("data.labels", f"needs at least 2 distinct, non-empty labels, got {spec!r}")
    return names


# ---------------------------------------------------------------------------------------------
# Reading files and TFDS


def _file_columns(path: str, source: str) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        if source == "csv":
            return next(csv.reader(f, delimiter=_delimiter(path)), [])
        first = f.readline()
    try:
        return list(json.loads(first))
    except (ValueError, TypeError):
        return []


def _check_file(key: str, path: str) -> None:
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise ConfigError(key, f"no such file: {path}")
    if os.path.getsize(path) == 0:
        raise ConfigError(key, f"file is empty: {path}")


def _delimiter(path: str) -> str:
    return "\t" if path.endswith(".tsv") else ","


def _records(path: str, source: str, key: str) -> Iterator[tuple[str, dict]]:
    """("FILE:LINE", record) for every row of a CSV/JSONL file."""
    with open(path, encoding="utf-8", newline="") as f:
        if source == "csv":
            # QUOTE_NONE for TSV: GLUE's files hold unbalanced quotes inside sentences.
            quoting = csv.QUOTE_NONE if path.endswith(".tsv") else csv.QUOTE_MINIMAL
            reader = csv.DictReader(f, delimiter=_delimiter(path), quoting=quoting)
            for record in reader:
                yield f"{path}:{reader.line_num}", record
            return
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise ConfigError(key, f"{path}:{number}: not a JSON object ({e})") from None
            if not isinstance(record, dict):
                raise ConfigError(key, f"{path}:{number}: not a JSON object")
            yield f"{path}:{number}", record


def _check_columns(config, where: str, key: str, available) -> None:
    data = config.data
    wanted = [("data.text_column", data.text_column), ("data.label_column", data.label_column)]
    if data.text_pair_column:
        wanted.append(("data.text_pair_column", data.text_pair_column))
    for column_key, column in wanted:
        if column not in available:
            raise ConfigError(column_key, f"column {column!r} is not in {where} ({key}); its columns: "
                                          f"{', '.join(map(str, available))}")


def read_file_rows(config, path: str, key: str) -> Rows:
    data = config.data
    path = os.path.expanduser(path)
    texts, pairs, labels, origins = [], [] if data.text_pair_column else None, [], []
    for origin, record in _records(path, data.source, key):
        _check_columns(config, origin, key, record)  # a JSONL line may lack a field
        texts.append(_text(record[data.text_column]))
        if pairs is not None:
            pairs.append(_text(record[data.text_pair_column]))
        labels.append(record[data.label_column])
        origins.append(origin)
    if not texts:
        raise ConfigError(key, f"{path} holds no examples")
    return Rows(texts, pairs, labels, origins, key)


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def _tfds_module():
    import tensorflow_datasets as tfds

    return tfds


def _register_tfds_dataset(name: str) -> None:
    """Import the module defining TFDS dataset `name` (without TensorFlow, e.g. glue is not auto-registered)."""
    tfds = _tfds_module()
    base = name.split("/")[0].split(":")[0]
    if base in tfds.core.registered.list_imported_builders():
        return
    root = os.path.dirname(tfds.__file__)
    for category in sorted(os.listdir(root)):
        folder = os.path.join(root, category)
        if os.path.exists(os.path.join(folder, f"{base}.py")) or os.path.isdir(os.path.join(folder, base)):
            try:
                importlib.import_module(f"tensorflow_datasets.{category}.{base}")
                return
            except ImportError:
                continue


def read_tfds_rows(config, split: str, split_key: str) -> tuple[Rows, tuple[str, ...] | None]:
    """The split's rows, and the dataset's own label names when its label is a ClassLabel."""
    tfds = _tfds_module()
    data = config.data
    _register_tfds_dataset(data.path)
    data_dir = os.path.expanduser(data.tfds_data_dir) or None
    try:
        source = tfds.data_source(data.path, split=split, data_dir=data_dir, download=False)
        builder = tfds.builder(data.path, data_dir=data_dir)
    except Exception as e:  # not registered, not prepared, bad split: TFDS raises many kinds
        raise ConfigError(split_key, f"cannot open TFDS {data.path!r} split {split!r} (prepared, in the "
                                     f"array_record format, under {data_dir or 'the TFDS default directory'}?): "
                                     f"{str(e).splitlines()[0]}") from None
    features = builder.info.features
    _check_columns(config, f"TFDS {data.path}", split_key, list(features.keys()))
    names = getattr(features[data.label_column], "names", None)
    texts, pairs, labels, origins = [], [] if data.text_pair_column else None, [], []
    for i in range(len(source)):
        record = source[i]
        texts.append(_text(record[data.text_column]))
        if pairs is not None:
            pairs.append(_text(record[data.text_pair_column]))
        labels.append(record[data.label_column].item() if hasattr(record[data.label_column], "item")
                      else record[data.label_column])
        origins.append(f"TFDS {data.path}[{split}][{i}]")
    if not texts:
        raise ConfigError(split_key, f"TFDS {data.path!r} split {split!r} holds no examples")
    return Rows(texts, pairs, labels, origins, split_key), (tuple(names) if names else None)


def _take(rows: Rows, keep: np.ndarray) -> Rows:
    pick = lambda xs: [xs[i] for i in keep]  # noqa: E731
    return Rows(pick(rows.texts), pick(rows.pairs) if rows.pairs is not None else None, pick(rows.labels),
                pick(rows.origins), rows.key)


def load_rows(config) -> tuple[Rows, Rows, tuple[str, ...]]:
    """(train rows, eval rows, label names)."""
    data = config.data
    names = label_names(config)
    if data.source == "tfds":
        train, dataset_names = read_tfds_rows(config, data.train_split, "data.train_split")
        held_out, _ = read_tfds_rows(config, data.eval_split, "data.eval_split")
        if dataset_names and len(dataset_names) != len(names):
            raise ConfigError("data.labels", f"{len(names)} labels given; TFDS {data.path} has {len(dataset_names)}: "
                                             f"{', '.join(dataset_names)}")
        return train, held_out, names
    rows = read_file_rows(config, data.path, "data.path")
    if data.eval_path:
        return rows, read_file_rows(config, data.eval_path, "data.eval_path"), names
    n = len(rows.texts)
    num_eval = max(1, int(round(n * data.eval_fraction)))
    if num_eval >= n:
        raise ConfigError("data.eval_fraction", f"{data.eval_fraction} of {n} rows leaves none to train on")
    order = np.random.default_rng(EVAL_SEED).permutation(n)
    held_out = np.sort(order[:num_eval])
    train = np.sort(order[num_eval:])
    return _take(rows, train), _take(rows, held_out), names


# ---------------------------------------------------------------------------------------------
# Encoding


def label_ids(rows: Rows, names: tuple[str, ...]) -> np.ndarray:
    """Each row's label index; an unknown label is a ConfigError naming the row."""
    index = {name: i for i, name in enumerate(names)}
    ids = np.empty(len(rows.labels), dtype=np.int32)
    for i, (label, origin) in enumerate(zip(rows.labels, rows.origins)):
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and origin.startswith("TFDS"):
            found = int(label) if 0 <= int(label) < len(names) else None  # TFDS class labels are indices
        else:
            if isinstance(label, float) and label.is_integer():
                label = int(label)  # JSON 1.0 -> "1"
            found = index.get(str(label).strip())
        if found is None:
            raise ConfigError(rows.key, f"{origin}: label {label!r} is not one of data.labels ({', '.join(names)})")
        ids[i] = found
    return ids


def encode_rows(rows: Rows, names: tuple[str, ...], tokenizer: Tokenizer, seq_len: int) -> dict[str, np.ndarray]:
    """All examples of a split as padded arrays."""
    labels = label_ids(rows, names)
    texts, lengths = encode_lines(tokenizer, rows.texts)
    a_starts = np.concatenate([[0], np.cumsum(lengths)])
    if rows.pairs is not None:
        pair_tokens, pair_lengths = encode_lines(tokenizer, rows.pairs)
        b_starts = np.concatenate([[0], np.cumsum(pair_lengths)])
    n = len(labels)
    ids = np.full((n, seq_len), tokenizer.pad_id, dtype=np.int32)
    types = np.zeros((n, seq_len), dtype=np.int32)
    mask = np.zeros((n, seq_len), dtype=np.int32)
    for i in range(n):
        a = texts[a_starts[i]:a_starts[i + 1]]
        if rows.pairs is None:
            a = a[:seq_len - 2]
            row = np.concatenate([[tokenizer.cls_id], a, [tokenizer.sep_id]])
        else:
            b = pair_tokens[b_starts[i]:b_starts[i + 1]]
            len_a, len_b = fit_pair(len(a), len(b), seq_len - 3)
            row = np.concatenate([[tokenizer.cls_id], a[:len_a], [tokenizer.sep_id], b[:len_b], [tokenizer.sep_id]])
            types[i, len_a + 2:len(row)] = 1
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": labels}


class _Gather:
    """Example indices -> a batch; indices past the end are padding rows (example 0 with weight 0)."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays
        self.size = len(arrays["labels"])

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        indices = np.asarray(indices)
        real = indices < self.size
        batch = {k: v[np.where(real, indices, 0)] for k, v in self.arrays.items()}
        batch["weights"] = real.astype(np.float32)
        return batch


def _sharded(indices: grain.MapDataset, arrays, batch_size: int, process_index: int, process_count: int):
    local = indices.batch(batch_size // process_count, drop_remainder=True, batch_fn=np.asarray)
    return local[process_index::process_count].map(_Gather(arrays))


# ---------------------------------------------------------------------------------------------
# Checks and the pipeline


def check_classification_config(config) -> None:
    """Cheap checks: source, files, columns (from the header), labels, tokenizer and sizes."""
    data = config.data
    if data.source not in SOURCES:
        raise ConfigError("data.source", f"task 'classification' reads {', '.join(SOURCES)}; got {data.source!r}")
    label_names(config)
    check_tokenizer_config(config)
    for key in ("seq_len", "batch_size"):
        if data[key] < 1:
            raise ConfigError(f"data.{key}", f"must be positive, got {data[key]}")
    if data.seq_len < 4:
        raise ConfigError("data.seq_len", f"must hold [CLS] text [SEP] (pairs: one more [SEP]): at least 4, "
                                          f"got {data.seq_len}")
    if data.seq_len > config.model.max_len:
        raise ConfigError("data.seq_len", f"{data.seq_len} is longer than model.max_len = {config.model.max_len}")
    if data.source == "tfds":
        if not data.path:
            raise ConfigError("data.path", "is unset; source 'tfds' needs a dataset name such as glue/sst2")
        return
    for key in ("data.path", "data.eval_path"):
        path = config.data[key.split(".")[1]]
        if key == "data.path" and not path:
            raise ConfigError(key, f"is unset; source {data.source!r} needs a file")
        if path:
            _check_file(key, path)
            _check_columns(config, path, key, _file_columns(os.path.expanduser(path), data.source))
    if not data.eval_path and not 0.0 < data.eval_fraction < 1.0:
        raise ConfigError("data.eval_fraction", f"must be in (0, 1), got {data.eval_fraction}")


def make_classification_data(config, workdir: str | None, *, tokenizer: Tokenizer | None = None,
                             process_index: int = 0, process_count: int = 1) -> ClassificationData:
    data, train = config.data, config.train
    check_classification_config(config)
    if data.batch_size % process_count:
        raise ConfigError("data.batch_size", f"{data.batch_size} does not divide over {process_count} processes")
    tokenizer = build_tokenizer(config, workdir) if tokenizer is None else tokenizer
    if tokenizer.cls_id is None or tokenizer.sep_id is None or tokenizer.pad_id is None:
        raise ConfigError("data.tokenizer", f"classification needs [CLS], [SEP] and [PAD] ids; the "
                                            f"{tokenizer.name} tokenizer lacks some")
    train_rows, eval_rows, names = load_rows(config)
    train_arrays = encode_rows(train_rows, names, tokenizer, data.seq_len)
    eval_arrays = encode_rows(eval_rows, names, tokenizer, data.seq_len)
    n_train, n_eval = len(train_rows.texts), len(eval_rows.texts)
    logging.info("classification data: %d train + %d eval examples, labels %s", n_train, n_eval, names)

    shard = dict(batch_size=data.batch_size, process_index=process_index, process_count=process_count)
    train_order = order.EpochShuffleMapDataset(grain.MapDataset.range(n_train), train.seed)
    train_ds = _sharded(train_order, train_arrays, **shard)
    eval_batches = min(math.ceil(n_eval / data.batch_size), train.eval_steps)
    eval_ds = _sharded(grain.MapDataset.range(eval_batches * data.batch_size), eval_arrays, **shard)
    return ClassificationData(
        tokenizer=tokenizer,
        train_iter=iter(train_ds.to_iter_dataset(_READ_OPTIONS)),
        eval_batches=lambda: iter(eval_ds.to_iter_dataset(_READ_OPTIONS)),
        train_examples=n_train,
        eval_examples=n_eval,
        label_names=names,
    )
