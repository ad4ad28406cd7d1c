"""Causal-LM packing of a stream of documents into fixed-length rows: `concat` and `segments`.

Input elements are documents {"tokens": int32 [n], "source": int} (source = the index of the mixture
component it came from); each document already ends with the end-of-document id when the tokenizer has one.

- `concat` (nanoGPT): the documents are joined into one token stream and cut into windows of seq_len + 1
  tokens that overlap by one, so window k is stream[k*L : k*L + L + 1] and the windows' inputs laid end to
  end are the stream itself. Rows: {"inputs", "targets"} int32 [L].
- `segments`: a document of n tokens gives the n - 1 (input, target) pairs doc[:-1], doc[1:]; a document with
  more than L pairs is cut into pieces of at most L pairs (each its own segment). Pieces are packed into
  rows by grain's first-fit packer (FirstFitPackIterDataset, no bin shuffling) with `rows` bins at a time.
  Rows: {"inputs", "targets", "segment_ids", "positions"} int32 [L]; segment_ids 1, 2, ... number the
  pieces of the row in order and 0 marks padding; positions count 0, 1, ... from each piece's start (0 on
  padding). No target belongs to another document than its input, and a token is scored iff its segment
  id is not 0.

Both carry "source" int32 [L] (mixture component + 1, 0 on padding) for SourceTokenCounter, which removes
it from the batch and keeps per-source counts of the target tokens delivered. Every iterator here has exact
get_state()/set_state().

Eval (`pad_tail=True`) scores a finite stream whole: concat rows add "weights" float32 [L] (1 on a real target)
and the last partial window is zero-padded with weight 0 instead of dropped; segments packing flushes its last
bins. `pad_rows` fills the last batch with rows that score nothing.
"""
import collections
import os

import grain
import numpy as np

from bmjax.errors import ConfigError

PACKINGS = ("concat", "segments")


class ConcatWindowsIterDataset(grain.IterDataset):
    """Documents -> windows of seq_len + 1 consecutive stream tokens, stepping by seq_len."""

    def __init__(self, parent: grain.IterDataset, seq_len: int, pad_tail: bool = False):
        super().__init__(parent)
        self.seq_len = seq_len
        self.pad_tail = pad_tail

    def __iter__(self):
        return _ConcatWindowsIterator(self._parent.__iter__(), self.seq_len, self.pad_tail)

    def __str__(self) -> str:
        return f"ConcatWindowsIterDataset(seq_len={self.seq_len})"


class _ConcatWindowsIterator(grain.DatasetIterator):
    """Holds the documents the next window touches, each with the parent's state from before it was read,
    so the state is (parent state before the first held document, offset into it): small and exact."""

    def __init__(self, parent: grain.DatasetIterator, seq_len: int, pad_tail: bool = False):
        super().__init__(parent)
        self.seq_len = seq_len
        self.pad_tail = pad_tail  # eval: weights on every row, and the partial last window padded
        self._docs = collections.deque()  # (parent state before it, tokens, source, each token's bytes or None)
        self._total = 0  # tokens of the held documents
        self._offset = 0  # where the next window starts in the first held document

    def __next__(self) -> dict[str, np.ndarray]:
        need = self.seq_len + 1
        while self._total - self._offset < need:
            before = self._parent.get_state()
            try:
                doc = next(self._parent)  # StopIteration ends a finite stream
            except StopIteration:
                if not self.pad_tail or self._total - self._offset < 2:  # training drops a partial window
                    raise
                break
            tokens = np.asarray(doc["tokens"], dtype=np.int32)
            self._docs.append((before, tokens, int(doc["source"]), doc.get("bytes")))
            self._total += len(tokens)
        pieces, sources, covered, start, got = [], [], [], self._offset, 0
        for _, tokens, source, token_bytes in self._docs:
            take = tokens[start:start + need - got]
            pieces.append(take)
            sources.append(np.full(len(take), source + 1, np.int32))
            covered.append(None if token_bytes is None else token_bytes[start:start + len(take)])
            start, got = 0, got + len(take)
            if got == need:
                break
        window, source = np.concatenate(pieces), np.concatenate(sources)
        self._advance(self.seq_len)
        if not self.pad_tail:
            return {"inputs": window[:-1], "targets": window[1:], "source": source[1:]}
        scored = len(window) - 1  # seq_len, or fewer in the last window: zero-padded with weight 0
        pad = lambda x: np.pad(x, (0, self.seq_len - len(x)))  # noqa: E731
        row = {"inputs": pad(window[:-1]), "targets": pad(window[1:]), "source": pad(source[1:]),
               "weights": pad(np.ones(scored, np.float32))}
        if all(c is not None for c in covered):  # documents with each token's bytes (eval): the targets'
            row["target_bytes"] = pad(np.concatenate(covered)[1:].astype(np.float32))
        return row

    def _advance(self, count: int) -> None:
        self._offset += count
        while self._docs and self._offset >= len(self._docs[0][1]):
            dropped = len(self._docs.popleft()[1])
            self._offset -= dropped
            self._total -= dropped

    def get_state(self) -> dict:
        parent = self._docs[0][0] if self._docs else self._parent.get_state()
        return {"parent": parent, "offset": self._offset}

    def set_state(self, state: dict) -> None:
        self._parent.set_state(state["parent"])
        self._docs.clear()
        self._offset, self._total = state["offset"], 0


class SplitDocument(grain.experimental.FlatMapTransform):
    """A document -> its (input, target) pairs in pieces of at most seq_len pairs."""

    max_fan_out = 2**31 - 1

    def __init__(self, seq_len: int):
        self.seq_len = seq_len

    def flat_map(self, doc):
        tokens = np.asarray(doc["tokens"], dtype=np.int32)
        source = int(doc["source"]) + 1
        pieces = []
        covered = doc.get("bytes")
        for start in range(0, len(tokens) - 1, self.seq_len):
            piece = tokens[start:start + self.seq_len + 1]
            pieces.append({"inputs": piece[:-1], "targets": piece[1:],
                           "source": np.full(len(piece) - 1, source, np.int32)})
            if covered is not None:  # each target's bytes of text (eval documents without fixed bytes per id)
                pieces[-1]["target_bytes"] = np.asarray(covered[start + 1:start + len(piece)], np.int32)
        return pieces


def _contract(row: dict) -> dict[str, np.ndarray]:
    """grain's packed feature names -> the batch contract's."""
    out = {"inputs": row["inputs"], "targets": row["targets"], "segment_ids": row["inputs_segment_ids"],
           "positions": row["inputs_positions"], "source": row["source"]}
    if "target_bytes" in row:
        out["target_bytes"] = row["target_bytes"].astype(np.float32)
    return out


def pack(documents: grain.IterDataset, packing: str, seq_len: int, rows: int,
         pad_tail: bool = False, target_bytes: bool = False) -> grain.IterDataset:
    """Rows of `packing` from documents; `rows` is the local batch (first-fit packs that many bins at once).
    `pad_tail` (eval): the last partial concat window is padded and weighted, not dropped. `target_bytes`: the
    documents carry each token's "bytes", and rows each target's ("target_bytes")."""
    if packing == "concat":
        return ConcatWindowsIterDataset(documents, seq_len, pad_tail)
    if packing != "segments":
        raise ConfigError("data.packing", f"got {packing!r}; allowed: {', '.join(PACKINGS)}")
    pieces = grain.experimental.FlatMapIterDataset(documents, SplitDocument(seq_len))
    lengths = {"inputs": seq_len, "targets": seq_len, "source": seq_len}
    if target_bytes:
        lengths["target_bytes"] = seq_len
    packed = grain.experimental.FirstFitPackIterDataset(
        pieces, length_struct=lengths, num_packing_bins=rows, shuffle_bins=False, meta_features=("source",))
    return packed.map(_contract)


def pad_rows(batch: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """`batch` with all-zero rows appended up to `rows`: zero weights and segment ids, so nothing there is scored."""
    missing = rows - len(batch["targets"])
    return {k: np.concatenate([v, np.zeros((missing, *v.shape[1:]), v.dtype)]) if missing else v
            for k, v in batch.items()}


class SourceTokenCounter(grain.DatasetIterator):
    """Takes "source" out of each batch and counts the target tokens each mixture component delivered.

    Its state adds the counts and the process count the stream was cut for: restoring a state saved with a
    different number of processes is refused (each process's share of the documents would differ)."""

    def __init__(self, parent: grain.DatasetIterator, names: tuple[str, ...], process_count: int):
        super().__init__(parent)
        self.names = names
        self.process_count = process_count
        self.tokens = np.zeros(len(names), np.int64)

    def __next__(self) -> dict[str, np.ndarray]:
        batch = dict(next(self._parent))
        source = batch.pop("source")
        self.tokens += np.bincount(source.ravel(), minlength=len(self.names) + 1)[1:]
        return batch

    def source_tokens(self) -> dict[str, int]:
        """Target tokens delivered to this process so far, by source name (sum over processes for the run's)."""
        return {name: int(n) for name, n in zip(self.names, self.tokens)}

    def get_state(self) -> dict:
        return {"parent": self._parent.get_state(), "tokens": self.tokens.tolist(),
                "process_count": self.process_count}

    def set_state(self, state: dict) -> None:
        if state.get("process_count", self.process_count) != self.process_count:
            raise ConfigError("data", f"the checkpoint's data position was saved by {state['process_count']} "
                                      f"processes; resuming with {self.process_count} would read other data "
                                      "(resume with the same process count)")
        self._parent.set_state(state["parent"])
        self.tokens = np.asarray(state["tokens"], np.int64)


def check_saved_process_count(data_dir: str, process_count: int) -> None:
    """ConfigError when the grain iterator states in `data_dir` (a checkpoint step's `data` item, one
    `process_I-of-P.json` per process) were saved by another number of processes than `process_count`."""
    import re

    counts = set()
    for name in os.listdir(data_dir) if os.path.isdir(data_dir) else ():
        match = re.fullmatch(r"process_\d+-of-(\d+)\.json", name)
        if match:
            counts.add(int(match.group(1)))
    if counts and counts != {process_count}:
        raise ConfigError("data", f"the checkpoint's data position in {data_dir} was saved by "
                                  f"{'/'.join(map(str, sorted(counts)))} processes; resuming with {process_count} "
                                  "would read other data (resume with the same process count)")
