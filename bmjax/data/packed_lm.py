"""The packed causal-LM pipeline: document sources (documents.py) -> shuffle, shard -> pack -> mix by tokens
-> batches.

Used for `data.source` arrayrecord or tfds, for any `data.mixture`, and for `data.packing=segments`
(text/builtin with the default concat packing keep lm.py's random windows). lm.make_lm_data is the one LM entry
point: it picks this pipeline (uses_packed_pipeline) or its own, and this module imports nothing of lm.py.

Train: each component's documents are repeated forever, each epoch in the permutation of (train.seed,
component, epoch) (order.py: no two share one). Process p of P reads documents p, p + P, p + 2P, ... of each
component's order, and only those (only their records are read), packs each component's into rows of
data.seq_len (packing.py), and mixes the rows by tokens (mixing.py: the `data.mixture` weights are the
fractions of real training tokens), batching b = data.batch_size / P rows: the global batch is the P local
batches side by side. The iterator's state (grain's, the mixer's, SourceTokenCounter's) resumes the exact
sequence; a state saved with another process count is refused. With `data.workers` > 0, grain worker
processes read and pack (each a slice of the rows).

Eval: each component's held-out documents are packed on their own, in their order (no shuffle, no mixing,
so the eval set does not depend on the weights), into global batches; every process packs them all and keeps
its rows [p*b, (p+1)*b), so all processes see the same batches. `train.eval_steps=0` scores every held-out
document of every component exactly once: the last partial window (concat) is zero-padded with weight 0 and
the last batch filled with rows that score nothing, never dropped. `train.eval_steps=K > 0` takes the first K
batches of each component (all of a component with fewer): a fixed subset, the same for any weights.
`eval_parts()` gives the batches component by component (`eval/<source>/...` figures); `eval_batches()` all
of them, component after component; `eval_sets()` the named sets of `data.eval_sets` (eval_sets.py) the same
way. Batches carry "target_bytes" (each target's UTF-8 bytes) where the
tokenizer's ids stand for fixed bytes (byte, char, byte-level BPE), for exact bits per byte, and otherwise
(WordPiece, SentencePiece) the bytes of text each target covers, which every source's held-out documents carry
(text and TFDS counted when read, shards from bmjax-prepare-data: documents.py, token_bytes.py).
"""
import dataclasses
import logging
import os
import tempfile
import time
from typing import Callable, Iterator

import grain
import numpy as np

from bmjax.data import documents, eval_sets, mixing, order, packing, shards
from bmjax.data.pipeline import Data
from bmjax.data.tokenizers import (CharTokenizer, Tokenizer, build_tokenizer, check_tokenizer_config,
                                   token_byte_lengths)
from bmjax.errors import ConfigError

PREPARED_DIR = "prepared_shards"  # data.prepare_from: where in the workdir the shards are written
_READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=64)


@dataclasses.dataclass
class PackedLMData(Data):
    tokenizer: Tokenizer
    train_iter: packing.SourceTokenCounter  # infinite; get_state()/set_state(); .source_tokens()
    eval_batches: Callable[[], Iterator[dict[str, np.ndarray]]]
    train_tokens: int | None  # None where unknown without reading everything (TFDS)
    eval_tokens: int | None
    eval_parts: Callable[[], list[tuple[str, Iterator[dict[str, np.ndarray]]]]]  # (source name, its batches)
    source_names: tuple[str, ...]
    eval_sets: Callable[[], list[tuple[str, Iterator[dict[str, np.ndarray]]]]] = list  # data.eval_sets (eval_sets.py)

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
    eval_sets.check_eval_sets(config)
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


def make_packed_lm_data(config, workdir: str | None, *, tokenizer: Tokenizer | None = None, process_index: int = 0,
                        process_count: int = 1):
    data, train = config.data, config.train
    check_packed_config(config)
    check_sizes(config, process_count)
    start = time.perf_counter()
    shard_glob = prepare_from_text(config, workdir) if data.get("prepare_from") else ""
    if tokenizer is None:
        tokenizer = build_tokenizer(config, workdir)  # a char vocabulary comes with the shards (tokenizers.py)
    comps = documents.components(config)
    parts = [documents.open_component(config, c, i, tokenizer, shard_glob) for i, c in enumerate(comps)]
    train_parts, eval_parts_docs = [p[0] for p in parts], [p[1] for p in parts]
    for c, part, split in [(c, p, s) for c, (t, e) in zip(comps, parts) for p, s in ((t, "training"), (e, "eval"))]:
        if len(part) == 0:
            raise ConfigError(c.key, f"{c.name} has no {split} documents")
    weights = [c.weight for c in comps]
    local = data.batch_size // process_count
    mode = data.get("packing", "concat")

    sources = [packing.pack(train_documents(part, train.seed, i, process_index, process_count)
                            .to_iter_dataset(_READ_OPTIONS), mode, data.seq_len, local)
               for i, part in enumerate(train_parts)]
    mixed_rows = sources[0] if len(sources) == 1 else mixing.TokenMixIterDataset(sources, weights)
    rows = mixed_rows.batch(local, drop_remainder=True)
    if data.get("workers", 0) > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; a library caller may have parsed none
            flags.FLAGS.mark_as_parsed()
        rows = rows.mp_prefetch(grain.MultiprocessingOptions(num_workers=data.workers))
    names = tuple(c.name for c in comps)
    train_iter = packing.SourceTokenCounter(iter(rows), names, process_count)

    byte_lengths = token_byte_lengths(tokenizer)
    my_rows = slice(process_index * local, (process_index + 1) * local)

    batches_of = eval_batcher(config, byte_lengths, my_rows)

    def eval_parts():
        return [(name, batches_of(part)) for name, part in zip(names, eval_parts_docs)]

    def eval_batches():
        for _, batches in eval_parts():
            yield from batches

    logging.info("data: %s, packing %s, tokenizer %s (%d ids), opened in %.2fs", ", ".join(names), mode,
                 tokenizer.name, tokenizer.vocab_size, time.perf_counter() - start)
    return PackedLMData(tokenizer=tokenizer, train_iter=train_iter, eval_batches=eval_batches,
                        eval_parts=eval_parts, train_tokens=_count_tokens(train_parts),
                        eval_tokens=_count_tokens(eval_parts_docs), source_names=names,
                        eval_sets=eval_sets.open_eval_sets(config, tokenizer, batches_of))


def eval_batcher(config, byte_lengths: np.ndarray | None, rows: slice):
    """held-out documents -> this process's `rows` of their eval batches, with the run's packing and sizes."""
    data = config.data
    return lambda part: eval_component_batches(part, data.get("packing", "concat"), data.seq_len, data.batch_size,
                                               int(config.train.eval_steps), byte_lengths, rows)


def eval_component_batches(part, mode: str, seq_len: int, batch_size: int, eval_steps: int,
                           byte_lengths: np.ndarray | None, rows: slice) -> Iterator[dict[str, np.ndarray]]:
    """This process's `rows` of the global eval batches of one component: its held-out documents in their
    order, packed with the tail padded (packing.pack's pad_tail), the last batch filled with rows that score
    nothing; all of them (eval_steps 0) or the first eval_steps. With fixed bytes per token
    (token_byte_lengths), "target_bytes" float32 [b, L]: each target's UTF-8 bytes, for exact bits per byte."""
    docs = grain.MapDataset.source(part).to_iter_dataset(_READ_OPTIONS)
    counted = getattr(part, "counts_bytes", False)  # documents that carry each token's bytes of text (documents.py)
    batches = packing.pack(docs, mode, seq_len, batch_size, pad_tail=True, target_bytes=counted)
    batches = batches.batch(batch_size, drop_remainder=False)
    for step, batch in enumerate(batches):
        if eval_steps and step >= eval_steps:
            break
        batch = packing.pad_rows(batch, batch_size)
        batch.pop("source")
        yield {k: v[rows] for k, v in with_target_bytes(batch, byte_lengths).items()}


def with_target_bytes(batch: dict[str, np.ndarray], byte_lengths: np.ndarray | None) -> dict[str, np.ndarray]:
    """`batch` plus "target_bytes" float32: each target's UTF-8 bytes (tokenizers.token_byte_lengths; an EOS
    none), which the lm task sums over the scored targets for bits per byte. Unchanged without fixed bytes."""
    if byte_lengths is None:  # unchanged: packing gave "target_bytes" where the documents count their bytes
        return batch
    return dict(batch, target_bytes=byte_lengths[batch["targets"]].astype(np.float32))


def train_documents(part, seed: int, component: int, process_index: int, process_count: int) -> grain.MapDataset:
    """This process's documents of one component: every P-th of its order (repeated, each epoch in the
    permutation of (seed, component, epoch): order.py), starting at the process index."""
    shuffled = order.EpochShuffleMapDataset(grain.MapDataset.source(part), seed, component)
    return shuffled[process_index::process_count]


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
