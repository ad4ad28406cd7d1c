"""The causal-LM input pipeline (grain): random windows of seq_len + 1 tokens, as nanoGPT samples them; and
`make_lm_data`, the one entry point of task lm, which hands arrayrecord and tfds sources, mixtures and segments
packing to the packed pipeline (packed_lm.py, which never imports this module).

Each split is tokenized into one stream of ids (builtin documents joined by the tokenizer's EOS,
or by "\\n" when it has none). Every start offset of the stream is a window, so a stream of N
tokens has N - seq_len windows. A batch is {"inputs": w[:, :-1], "targets": w[:, 1:]}, int32.

Train: the window indices are repeated forever, each epoch in the permutation of (train.seed, epoch)
(order.py: grain's index shuffle, the same order on every machine), cut into global batches of
`data.batch_size` windows; process p of P gets rows [p*b, (p+1)*b) of every global batch
(b = batch_size // P), so P processes together read exactly the batches one process would.
The iterator's get_state()/set_state() resume the exact batch sequence.

Eval: the first eval_steps * batch_size windows of a shuffle of the eval stream with a fixed seed
(`EVAL_SEED`, not `train.seed`): runs with different seeds are evaluated on the same windows.
`train.eval_steps=0` instead makes one deterministic pass over the whole eval stream (what a scaling law
needs): non-overlapping windows from its start, in order, so every token but the first is scored exactly
once; the last partial window is padded and masked (`weights` 0), as are the rows that fill the last batch.
Eval batches carry "target_bytes", each target's UTF-8 bytes, where the tokenizer's ids stand for fixed bytes
(byte, char, byte-level BPE: tokenizers.token_byte_lengths): the lm task sums them over the scored targets, so
bits per byte (which compares across tokenizers) is exact for whatever the eval scores. For WordPiece and
SentencePiece files each target counts the bytes of text it covers instead (eval_stream_bytes, token_bytes.py).
`eval_sets()`: the named sets of `data.eval_sets`, packed and scored as packed_lm.py scores its held-out split
(eval_sets.py).
"""
import dataclasses
import functools
import logging
import time
from typing import Callable, Iterator

import grain
import numpy as np

from bmjax.data import eval_sets, order, packed_lm, sources
from bmjax.data.pipeline import OneSourceData
from bmjax.data.token_bytes import encode_with_bytes
from bmjax.data.tokenizers import (Tokenizer, build_tokenizer, check_tokenizer_config, counts_covered_bytes,
                                   token_byte_lengths)
from bmjax.errors import ConfigError

EVAL_SEED = 1234
# A few batches ahead is plenty for windows cut from memory; grain's default (500) would hold
# hundreds of MB of large batches.
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


@dataclasses.dataclass
class LMData(OneSourceData):
    tokenizer: Tokenizer
    train_iter: grain.DatasetIterator  # infinite; get_state()/set_state() for checkpoints
    eval_batches: Callable[[], Iterator[dict[str, np.ndarray]]]  # a fresh pass over eval_steps batches
    train_tokens: int
    eval_tokens: int
    eval_sets: Callable[[], list[tuple[str, Iterator[dict[str, np.ndarray]]]]] = list  # data.eval_sets (eval_sets.py)


class _Windows:
    """Window starts -> {"inputs", "targets"} [n, seq_len] int32, gathered from the token stream; with each
    token's bytes (`token_bytes`), also the targets' "target_bytes" float32."""

    def __init__(self, tokens: np.ndarray, seq_len: int, token_bytes: np.ndarray | None = None):
        self.tokens, self.token_bytes = tokens, token_bytes
        self.offsets = np.arange(seq_len + 1)

    def __call__(self, starts: np.ndarray) -> dict[str, np.ndarray]:
        where = np.asarray(starts)[:, None] + self.offsets
        windows = self.tokens[where].astype(np.int32)
        batch = {"inputs": np.ascontiguousarray(windows[:, :-1]), "targets": np.ascontiguousarray(windows[:, 1:])}
        if self.token_bytes is not None:
            batch["target_bytes"] = self.token_bytes[where[:, 1:]].astype(np.float32)
        return batch


def window_batches(
    tokens: np.ndarray, seq_len: int, batch_size: int, seed: int, process_index: int, process_count: int,
    token_bytes: np.ndarray | None = None,
) -> grain.MapDataset:
    """Infinite MapDataset of this process's share of each shuffled global batch of windows."""
    num_windows = len(tokens) - seq_len
    starts = order.EpochShuffleMapDataset(grain.MapDataset.range(num_windows), seed)
    # Local batches of b consecutive windows; global batch g is local batches g*P .. g*P + P-1,
    # so taking every P-th local batch from p gives process p rows [p*b, (p+1)*b) of batch g.
    local = starts.batch(batch_size // process_count, drop_remainder=True, batch_fn=np.asarray)
    return local[process_index::process_count].map(_Windows(tokens, seq_len, token_bytes))


def encode_documents(tokenizer: Tokenizer, docs: tuple[str, ...], key: str) -> np.ndarray:
    """One stream of ids: each document followed by EOS, or documents joined by "\\n" without one."""
    try:
        if tokenizer.eos_id is None:
            ids = tokenizer.encode("\n".join(docs))
        else:
            eos = np.array([tokenizer.eos_id], dtype=np.int32)
            ids = np.concatenate([piece for doc in docs for piece in (tokenizer.encode(doc), eos)])
    except ConfigError as e:
        raise ConfigError(key, e.message) from None
    # uint16 halves the memory of the stream when every id fits.
    return ids.astype(np.uint16) if tokenizer.vocab_size <= 2**16 else ids


def eval_stream_bytes(tokenizer, docs: tuple[str, ...], ids: np.ndarray) -> np.ndarray | None:
    """Each token's bytes of text in encode_documents' stream of `docs` (its separators none), where the
    tokenizer's ids have no fixed bytes but it reports offsets (WordPiece, SentencePiece: token_bytes.py)."""
    if not counts_covered_bytes(tokenizer):
        return None
    if tokenizer.eos_id is None:
        counted, covered = encode_with_bytes(tokenizer, "\n".join(docs))
    else:
        pieces = [encode_with_bytes(tokenizer, doc) for doc in docs]
        counted = np.concatenate([p for ids_, _ in pieces for p in (ids_, [tokenizer.eos_id])])
        covered = np.concatenate([p for _, b in pieces for p in (b, [0])])
    if not np.array_equal(counted, ids):
        raise ValueError(f"{tokenizer.name}: encoding with offsets gave other ids than encode")
    return covered.astype(np.int32)


def check_data_config(config) -> None:
    """Cheap checks before anything compiles; raises ConfigError.

    Known source and tokenizer, files present and non-empty, positive sizes, seq_len within
    model.max_len, a byte vocabulary that fits model.vocab_size. Reads no corpus."""
    if packed_lm.uses_packed_pipeline(config):  # arrayrecord, tfds, mixtures, segments: packed_lm.py
        return packed_lm.check_packed_config(config)
    sources.check_source_config(config)
    check_tokenizer_config(config)
    eval_sets.check_eval_sets(config)
    data = config.data
    for key in ("seq_len", "batch_size"):
        if data[key] < 1:
            raise ConfigError(f"data.{key}", f"must be positive, got {data[key]}")
    max_len = config.get("model", {}).get("max_len")
    if max_len is not None and data.seq_len > max_len:
        raise ConfigError("data.seq_len", f"{data.seq_len} is longer than model.max_len = {max_len}")


def make_lm_data(config, workdir: str | None, *, tokenizer: Tokenizer | None = None, process_index: int = 0,
                 process_count: int = 1) -> LMData:
    data, train = config.data, config.train
    if data.get("task", "lm") != "lm":
        raise ConfigError("data.task", f"the LM pipeline serves task 'lm', not {data.task!r}")
    if packed_lm.uses_packed_pipeline(config):
        return packed_lm.make_packed_lm_data(config, workdir, tokenizer=tokenizer, process_index=process_index,
                                             process_count=process_count)
    check_data_config(config)
    packed_lm.check_sizes(config, process_count)
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} outside [0, {process_count})")

    start = time.perf_counter()
    tokenizer = build_tokenizer(config, workdir) if tokenizer is None else tokenizer
    corpus = sources.load_corpus(config)
    train_ids = encode_documents(tokenizer, corpus.train, corpus.train_key)
    eval_ids = encode_documents(tokenizer, corpus.eval, corpus.eval_key)
    _check_long_enough(train_ids, data.seq_len, corpus.train_key, "training")
    _check_long_enough(eval_ids, data.seq_len, corpus.eval_key, "eval")
    logging.info(
        "data: %s/%s, %d train + %d eval tokens, vocab %d, loaded in %.2fs",
        data.source, tokenizer.name, len(train_ids), len(eval_ids), tokenizer.vocab_size,
        time.perf_counter() - start,
    )

    shard = dict(process_index=process_index, process_count=process_count)
    train_ds = window_batches(train_ids, data.seq_len, data.batch_size, train.seed, **shard)
    eval_bytes = eval_stream_bytes(tokenizer, corpus.eval, eval_ids)
    if train.eval_steps == 0:
        eval_ds = grain.MapDataset.source(full_pass_batches(eval_ids, data.seq_len, data.batch_size, **shard,
                                                            token_bytes=eval_bytes))
    else:
        eval_ds = window_batches(eval_ids, data.seq_len, data.batch_size, EVAL_SEED, **shard,
                                 token_bytes=eval_bytes)[: train.eval_steps]
    byte_lengths = token_byte_lengths(tokenizer)
    eval_ds = eval_ds.map(functools.partial(packed_lm.with_target_bytes, byte_lengths=byte_lengths))
    local = data.batch_size // process_count
    my_rows = slice(process_index * local, (process_index + 1) * local)
    return LMData(
        tokenizer=tokenizer,
        train_iter=iter(train_ds.to_iter_dataset(_READ_OPTIONS)),
        eval_batches=lambda: iter(eval_ds.to_iter_dataset(_READ_OPTIONS)),
        train_tokens=len(train_ids),
        eval_tokens=len(eval_ids),
        eval_sets=eval_sets.open_eval_sets(config, tokenizer, packed_lm.eval_batcher(config, byte_lengths, my_rows)),
    )


def full_pass_batches(tokens: np.ndarray, seq_len: int, batch_size: int, process_index: int,
                      process_count: int, token_bytes: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
    """This process's rows of every global batch of one pass over `tokens` in non-overlapping windows.

    Window i holds tokens [i*seq_len, (i+1)*seq_len + 1); its targets are tokens 1 + i*seq_len onwards, so the
    windows together score tokens 1 .. len-1 once each. The last window, when partial, is zero-padded with
    weight 0 on the padding; rows padding the last global batch have weight 0 throughout."""
    targets = len(tokens) - 1
    num_windows = -(-targets // seq_len)
    num_batches = -(-num_windows // batch_size)
    padded = np.zeros(num_batches * batch_size * seq_len + 1, np.int32)
    padded[: len(tokens)] = tokens
    weights = np.zeros(num_batches * batch_size * seq_len, np.float32)
    weights[:targets] = 1.0
    shape = (num_batches, batch_size, seq_len)
    inputs, labels, weights = padded[:-1].reshape(shape), padded[1:].reshape(shape), weights.reshape(shape)
    rows = slice(process_index * (batch_size // process_count), (process_index + 1) * (batch_size // process_count))
    batches = [{"inputs": inputs[b, rows], "targets": labels[b, rows], "weights": weights[b, rows]}
               for b in range(num_batches)]
    if token_bytes is not None:  # each target's bytes of text (without fixed bytes per id): eval_stream_bytes
        covered = np.zeros(len(padded), np.float32)
        covered[: len(tokens)] = token_bytes
        covered = covered[1:].reshape(shape)
        for b, batch in enumerate(batches):
            batch["target_bytes"] = covered[b, rows]
    return batches


def _check_long_enough(ids: np.ndarray, seq_len: int, key: str, split: str) -> None:
    if len(ids) < seq_len + 1:
        raise ConfigError(
            key, f"the {split} split has {len(ids)} tokens, too few for one window of data.seq_len + 1 = {seq_len + 1}"
        )
