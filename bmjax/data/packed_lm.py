"""The packed causal-LM pipeline: document sources (documents.py) -> shuffle, mix, shard -> pack -> batches.

Used for `data.source` arrayrecord or tfds, for any `data.mixture`, and for `data.packing=segments`
(text/builtin with the default concat packing keep lm.py's random windows).

Train: each component's documents are shuffled with `train.seed` (+ its index) by grain's index shuffle, a
new order each epoch, repeated forever and mixed by weight (grain's MapDataset.mix: a fixed interleaving,
no randomness). Process p of P reads documents p, p + P, p + 2P, ... of that global order, and only those
(only their records are read), packs them (packing.py) into rows of data.seq_len and batches
b = data.batch_size / P rows: the global batch is the P local batches side by side. The iterator's state
(grain's, plus SourceTokenCounter's) resumes the exact sequence; a state saved with another process count
is refused. With `data.workers` > 0, grain worker processes read and pack (each a slice of the documents).

Eval: every process packs the whole eval split in a fixed order (no shuffle) into global batches and keeps
its rows [p*b, (p+1)*b), so all processes see the same number of batches: `train.eval_steps` of them
(the eval split repeats if short), or with eval_steps = 0 one pass over the complete batches.
"""
import dataclasses
import logging
import os
import tempfile
import time
from typing import Callable, Iterator

import grain
import numpy as np

from bmjax.data import documents, packing, shards
from bmjax.data.tokenizers import (CharTokenizer, Tokenizer, build_tokenizer, check_tokenizer_config,
                                   token_byte_lengths)
from bmjax.errors import ConfigError

EVAL_SEED = 1234
PREPARED_DIR = "prepared_shards"  # data.prepare_from: where in the workdir the shards are written
_READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=64)


@dataclasses.dataclass
class PackedLMData:
    tokenizer: Tokenizer
    train_iter: packing.SourceTokenCounter  # infinite; get_state()/set_state(); .source_tokens()
    eval_batches: Callable[[], Iterator[dict[str, np.ndarray]]]
    train_tokens: int | None  # None where unknown without reading everything (TFDS)
    eval_tokens: int | None
    source_names: tuple[str, ...]
    # UTF-8 bytes per scored eval token (bits per byte), set by every complete pass of eval_batches over the
    # global batches (the same on every process); None before the first, and for tokenizers without fixed bytes
    eval_bytes_per_token: float | None = None

    def source_tokens(self) -> dict[str, int]:
        """Target tokens each source delivered to this process so far (sum over processes for the run's)."""
        return self.train_iter.source_tokens()


def uses_packed_pipeline(config) -> bool:
    data = config.data
    return (data.source in ("arrayrecord", "tfds") or bool(data.get("mixture"))
            or data.get("packing", "concat") != "concat")


def check_packed_config(config) -> None:
    """Cheap checks: packing, sources, shard globs, tokenizer, sizes. Reads no documents."""
    data = config.data
    if data.get("packing", "concat") not in packing.PACKINGS:
        raise ConfigError("data.packing", f"got {data.packing!r}; allowed: {', '.join(packing.PACKINGS)}")
    if data.get("prepare_from"):
        if data.source != "arrayrecord" or data.get("mixture") or data.path:
            raise ConfigError("data.prepare_from", "works with data.source=arrayrecord and an empty data.path "
                                                   "(it prepares the shards in the workdir)")
        if not os.path.isfile(os.path.expanduser(data.prepare_from)):
            raise ConfigError("data.prepare_from", f"no such file: {data.prepare_from}")
    documents.check_components(config)
    check_tokenizer_config(config)
    for key in ("seq_len", "batch_size"):
        if data[key] < 1:
            raise ConfigError(f"data.{key}", f"must be positive, got {data[key]}")
    if data.get("workers", 0) < 0:
        raise ConfigError("data.workers", f"must be >= 0, got {data.workers}")
    max_len = config.get("model", {}).get("max_len")
    if max_len is not None and data.seq_len > max_len:
        raise ConfigError("data.seq_len", f"{data.seq_len} is longer than model.max_len = {max_len}")


def check_sizes(config, process_count: int) -> None:
    """Batch, seed and eval-step checks shared by both LM pipelines (lm.py and this one)."""
    data, train = config.data, config.train
    if data.batch_size % process_count:
        raise ConfigError("data.batch_size", f"{data.batch_size} does not divide over {process_count} processes")
    if not 0 <= train.seed < 2**32:
        raise ConfigError("train.seed", f"must be in [0, 2**32), got {train.seed}")
    if train.eval_steps < 0:
        raise ConfigError("train.eval_steps", f"must be >= 0, got {train.eval_steps}")


def make_packed_lm_data(config, workdir: str | None, *, process_index: int = 0, process_count: int = 1):
    data, train = config.data, config.train
    check_packed_config(config)
    check_sizes(config, process_count)
    if train.seed >= 2**31:  # component i shuffles with seed + i, which grain needs below 2**32
        raise ConfigError("train.seed", f"must be in [0, 2**31), got {train.seed}")
    start = time.perf_counter()
    shard_glob = prepare_from_text(config, workdir) if data.get("prepare_from") else ""
    tokenizer = build_tokenizer(config, workdir)  # a char vocabulary comes with the shards (tokenizers.py)
    comps = documents.components(config)
    parts = [documents.open_component(config, c, i, tokenizer, shard_glob) for i, c in enumerate(comps)]
    train_parts, eval_parts = [p[0] for p in parts], [p[1] for p in parts]
    for c, part, split in [(c, p, s) for c, (t, e) in zip(comps, parts) for p, s in ((t, "training"), (e, "eval"))]:
        if len(part) == 0:
            raise ConfigError(c.key, f"{c.name} has no {split} documents")
    weights = [c.weight for c in comps]
    local = data.batch_size // process_count
    mode = data.get("packing", "concat")

    mine = train_documents(train_parts, weights, train.seed, process_index, process_count)
    mine = mine.to_iter_dataset(_READ_OPTIONS)
    rows = packing.pack(mine, mode, data.seq_len, local).batch(local, drop_remainder=True)
    if data.get("workers", 0) > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; a library caller may have parsed none
            flags.FLAGS.mark_as_parsed()
        rows = rows.mp_prefetch(grain.MultiprocessingOptions(num_workers=data.workers))
    names = tuple(c.name for c in comps)
    train_iter = packing.SourceTokenCounter(iter(rows), names, process_count)

    byte_lengths = token_byte_lengths(tokenizer)

    def eval_batches():
        docs = mixed([grain.MapDataset.source(p) for p in eval_parts], weights)
        if train.eval_steps > 0:
            docs = docs.repeat()
        whole = packing.pack(docs.to_iter_dataset(_READ_OPTIONS), mode, data.seq_len, data.batch_size)
        batches = whole.batch(data.batch_size, drop_remainder=True)
        scored_bytes = scored_tokens = 0.0
        for step, batch in enumerate(batches):
            if train.eval_steps and step >= train.eval_steps:
                break
            batch.pop("source")
            if byte_lengths is not None:
                batch_bytes, batch_tokens = scored_text(byte_lengths, batch)
                scored_bytes, scored_tokens = scored_bytes + batch_bytes, scored_tokens + batch_tokens
            yield {k: v[process_index * local:(process_index + 1) * local] for k, v in batch.items()}
        if scored_tokens:
            result.eval_bytes_per_token = scored_bytes / scored_tokens

    logging.info("data: %s, packing %s, tokenizer %s (%d ids), opened in %.2fs", ", ".join(names), mode,
                 tokenizer.name, tokenizer.vocab_size, time.perf_counter() - start)
    result = PackedLMData(tokenizer=tokenizer, train_iter=train_iter, eval_batches=eval_batches,
                          train_tokens=_count_tokens(train_parts), eval_tokens=_count_tokens(eval_parts),
                          source_names=names)
    return result


def scored_text(byte_lengths: np.ndarray, batch: dict[str, np.ndarray]) -> tuple[float, float]:
    """(UTF-8 bytes, count) of the targets the eval step scores in a global batch: the task's lm_token_weights
    (`weights`, 0 on packing's padding), each target's bytes from tokenizers.token_byte_lengths (an EOS none).
    Summed over an eval pass, loss / ln 2 / (bytes / count) is that eval's bits per byte exactly."""
    scored = batch.get("weights", np.ones(batch["targets"].shape, np.float32))
    if "segment_ids" in batch:
        scored = scored * (batch["segment_ids"] != 0)
    return float(np.sum(byte_lengths[batch["targets"]] * scored)), float(np.sum(scored))


def mixed(datasets: list[grain.MapDataset], weights: list[float]) -> grain.MapDataset:
    return datasets[0] if len(datasets) == 1 else grain.MapDataset.mix(datasets, weights)


def train_documents(parts, weights, seed: int, process_index: int, process_count: int) -> grain.MapDataset:
    """This process's documents: every P-th of the global order (each component shuffled anew each epoch,
    repeated, mixed by weight), starting at the process index."""
    shuffled = [grain.MapDataset.source(part).shuffle(seed=seed + i).repeat() for i, part in enumerate(parts)]
    return mixed(shuffled, weights)[process_index::process_count]


def _count_tokens(parts) -> int | None:
    total = 0
    for part in parts:
        if isinstance(part, documents.MemoryDocuments):
            total += sum(len(d) for d in part.docs)
        elif isinstance(part, documents.ShardDocuments) and len(part) == len(part.shards):
            total += part.shards.metadata["tokens"]
        else:
            return None  # a held-out slice of shards or TFDS: not known without reading it
    return total


def prepare_from_text(config, workdir: str | None) -> str:
    """Shards of `data.prepare_from` in WORKDIR/prepared_shards (written on first use); returns their glob."""
    from bmjax.data import prepare

    data = config.data
    root = os.path.join(workdir, PREPARED_DIR) if workdir else tempfile.mkdtemp(prefix="bmjax-shards-")
    if not os.path.isfile(os.path.join(root, shards.METADATA_FILE)):
        docs = prepare.text_documents([os.path.expanduser(data.prepare_from)], "paragraph")
        tokenizer = (CharTokenizer.from_texts(docs, key="data.prepare_from") if data.tokenizer == "char"
                     else build_tokenizer(config, workdir))
        # Several processes may prepare at once: each writes its own directory, the first rename wins.
        os.makedirs(os.path.dirname(os.path.abspath(root)), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f"{PREPARED_DIR}.tmp", dir=os.path.dirname(os.path.abspath(root)))
        prepare.prepare_shards(docs, tmp, tokenizer, num_shards=min(4, len(docs)), workers=1,
                               source=f"text:{os.path.basename(data.prepare_from)}", progress=False)
        try:
            os.rename(tmp, root)
        except OSError:  # another process got there first: same bytes
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(root, "*.arrayrecord")
