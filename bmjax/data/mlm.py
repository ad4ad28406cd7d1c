"""BERT pretraining examples (masked LM + next-sentence prediction) as a grain pipeline.

The corpus (`data.source` builtin, text, arrayrecord or tfds, split as for the LM task) is cut into lines: every
non-blank line of a document, stripped, with its "\n", tokenized without specials. A line plays the part of
BERT's "sentence". Example `i` of a split is built by a generator seeded with (seed, i) alone, so
it is the same on every machine, in every process and after a resume, and needs no shuffling:

1. Pick a line that has a successor in its document; take it and the following lines of the
   document until they hold the token budget (seq_len - 3) or the document ends (2 lines at least).
2. Split those lines at a random line boundary: A = the lines before it.
   With probability 1/2, B = the lines after it (nsp_label 0, "B follows A"); otherwise B = lines
   from a random line of another document (nsp_label 1; with a single document, from a line
   outside the chunk), as many as fit the budget.
3. Truncate to the budget: the longer segment loses tokens, A from its front and B from its back,
   so the A|B junction the NSP head judges stays intact.
4. `[CLS] A [SEP] B [SEP]`, padded with [PAD] to seq_len; token_type_ids 0 for [CLS] A [SEP] and 1
   for B [SEP]; attention_mask 1 on real tokens.
5. Masking: round(15%) of the A and B tokens (at least one; never [CLS]/[SEP]/[PAD]) are selected;
   of those, 80% become [MASK], 10% a random non-special token, 10% stay as they are.
   As in BERT, only the selected positions are scored: mlm_positions lists them (ascending), padded
   to a fixed P = max_predictions(seq_len) with position 0 and weight 0; mlm_targets holds their
   original tokens and mlm_weights 1.0 for the real ones.

A batch: input_ids, token_type_ids, attention_mask int32 [b, seq_len]; mlm_positions, mlm_targets
int32 and mlm_weights float32 [b, P]; nsp_labels int32 [b]. Global batch g holds examples g*B .. g*B + B-1
(B = data.batch_size); process p of P gets rows [p*b, (p+1)*b), b = B // P. The iterator's
get_state()/set_state() resume the exact sequence. Eval uses the eval split with the fixed
`EVAL_SEED` (not train.seed), and the same train.eval_steps batches on every call.
"""
import dataclasses
import logging
import time
from typing import Callable, Iterator

import grain
import numpy as np

from bmjax.data import documents
from bmjax.data.pipeline import OneSourceData
from bmjax.data.lm import EVAL_SEED
from bmjax.data.tokenizers import ByteTokenizer, Tokenizer, build_tokenizer, check_tokenizer_config
from bmjax.errors import ConfigError

MASK_PROB = 0.15  # share of A and B tokens selected for prediction
MASK_TOKEN_PROB = 0.8  # of the selected: replaced by [MASK]
RANDOM_TOKEN_PROB = 0.1  # of the selected: replaced by a random token (the remaining 10% are kept)
NUM_EXAMPLES = 2**40  # example indices: an effectively endless stream, never repeated
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


@dataclasses.dataclass
class MLMData(OneSourceData):
    tokenizer: Tokenizer
    train_iter: grain.DatasetIterator  # infinite; get_state()/set_state() for checkpoints
    eval_batches: Callable[[], Iterator[dict[str, np.ndarray]]]  # a fresh pass over eval_steps batches
    train_tokens: int
    eval_tokens: int


@dataclasses.dataclass(frozen=True)
class Lines:
    """A split as tokenized lines: line j is tokens[starts[j]:starts[j+1]] and belongs to document doc[j].

    Lines of a document are consecutive; its lines are doc_starts[d] .. doc_starts[d+1] - 1."""

    tokens: np.ndarray
    starts: np.ndarray  # int64 [num_lines + 1]
    doc: np.ndarray  # int64 [num_lines]
    doc_starts: np.ndarray  # int64 [num_docs + 1]
    pair_starts: np.ndarray  # lines with a successor in the same document: where examples start

    @property
    def num_docs(self) -> int:
        return len(self.doc_starts) - 1


def split_lines(docs) -> list[list[str]]:
    """Each document's non-blank lines, stripped (BERT's own data script strips them too), each ending in
    "\n" so a byte-level tokenizer keeps the line breaks (WordPiece drops it as whitespace)."""
    return [[line + "\n" for line in (raw.strip() for raw in doc.splitlines()) if line] for doc in docs]


def tokenize_lines(tokenizer: Tokenizer, docs, key: str) -> Lines:
    """Tokenize every line of every document; lines that yield no tokens are dropped."""
    per_doc = split_lines(docs)
    flat = [line for lines in per_doc for line in lines]
    try:
        tokens, lengths = encode_lines(tokenizer, flat)
    except ConfigError as e:
        raise ConfigError(key, e.message) from None
    doc_of_line = np.repeat(np.arange(len(per_doc)), [len(lines) for lines in per_doc])
    keep = lengths > 0  # empty lines own no tokens, so dropping them leaves `tokens` as it is
    lengths, doc_of_line = lengths[keep], doc_of_line[keep]
    tokens = tokens.astype(np.uint16 if tokenizer.vocab_size <= 2**16 else np.int32)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    # Renumber documents 0..D-1 over those that kept a line.
    _, doc = np.unique(doc_of_line, return_inverse=True)
    doc_starts = np.searchsorted(doc, np.arange(doc.max() + 2 if len(doc) else 1))
    pair_starts = np.flatnonzero(doc[:-1] == doc[1:])
    if len(pair_starts) == 0:
        raise ConfigError(key, "no document has two non-blank lines; BERT pretraining needs sentence pairs")
    return Lines(tokens, starts, doc, doc_starts, pair_starts)


def encode_lines(tokenizer: Tokenizer, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(all tokens concatenated, tokens per line) for a list of lines."""
    if isinstance(tokenizer, ByteTokenizer):  # bytes are their own ids: one conversion for the lot
        encoded = [line.encode("utf-8") for line in lines]
        tokens = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.int32)
        return tokens, np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    if hasattr(tokenizer, "encode_batch"):
        pieces = tokenizer.encode_batch(lines)
    else:
        pieces = [tokenizer.encode(line) for line in lines]
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    return np.concatenate(pieces or [np.zeros(0, np.int32)]).astype(np.int32), lengths


def max_predictions(seq_len: int) -> int:
    """P: the most tokens an example selects (A and B fill at most seq_len - 3 positions)."""
    return max(1, int(round(MASK_PROB * (seq_len - 3))))


def fit_pair(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Lengths after removing one token at a time from the longer segment (B on ties) until both fit."""
    if len_a + len_b <= budget:
        return len_a, len_b
    short = min(len_a, len_b)
    if 2 * short <= budget:  # only the longer one shrinks
        return (budget - short, short) if len_a > len_b else (short, budget - short)
    return (budget + 1) // 2, budget // 2


class ExampleMaker:
    """Example index -> one pretraining example (dict of numpy arrays), deterministic in (seed, index)."""

    def __init__(self, lines: Lines, tokenizer: Tokenizer, seq_len: int, seed: int):
        missing = [name for name in ("cls_id", "sep_id", "mask_id", "pad_id") if getattr(tokenizer, name, None) is None]
        if missing:
            raise ConfigError("data.tokenizer", f"BERT tasks need [CLS], [SEP], [MASK] and [PAD] ids; the "
                                                f"{tokenizer.name} tokenizer lacks {', '.join(missing)}")
        self.lines, self.seq_len, self.seed = lines, seq_len, seed
        self.budget = seq_len - 3  # [CLS] A [SEP] B [SEP]
        self.num_predictions = max_predictions(seq_len)
        self.cls, self.sep = tokenizer.cls_id, tokenizer.sep_id
        self.mask, self.pad = tokenizer.mask_id, tokenizer.pad_id
        specials = np.asarray(tokenizer.special_ids, dtype=np.int64)
        self.normal_ids = np.setdiff1d(np.arange(tokenizer.vocab_size), specials)  # random replacements

    def _lines_up_to(self, first: int, budget: int, min_lines: int) -> int:
        """End line (exclusive) of the run from `first` that holds `budget` tokens, within its document."""
        lines = self.lines
        doc_end = lines.doc_starts[lines.doc[first] + 1]
        end = np.searchsorted(lines.starts, lines.starts[first] + budget, side="left")
        return int(min(max(end, first + min_lines), doc_end))

    def _random_line(self, rng, chunk: tuple[int, int]) -> int:
        """A random line of another document (of the chunk's one outside it when there is one document)."""
        lines = self.lines
        num_lines = len(lines.doc)
        if lines.num_docs > 1:
            doc = lines.doc[chunk[0]]
            other = rng.integers(lines.num_docs - 1)
            other += other >= doc  # uniform over the other documents
            return int(rng.integers(lines.doc_starts[other], lines.doc_starts[other + 1]))
        outside = num_lines - (chunk[1] - chunk[0])
        if outside == 0:
            return int(rng.integers(num_lines))  # nothing outside: any line (rare: a two-line corpus)
        j = int(rng.integers(outside))
        return j if j < chunk[0] else j + (chunk[1] - chunk[0])

    def segments(self, rng) -> tuple[np.ndarray, np.ndarray, int]:
        """(A, B, nsp_label) before truncation."""
        lines = self.lines
        first = int(lines.pair_starts[rng.integers(len(lines.pair_starts))])
        end = self._lines_up_to(first, self.budget, min_lines=2)
        split = first + int(rng.integers(1, end - first))
        a = lines.tokens[lines.starts[first]:lines.starts[split]]
        if rng.random() < 0.5:
            return a, lines.tokens[lines.starts[split]:lines.starts[end]], 0
        start = self._random_line(rng, (first, end))
        b_end = self._lines_up_to(start, max(self.budget - len(a), 1), min_lines=1)
        return a, lines.tokens[lines.starts[start]:lines.starts[b_end]], 1

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.seed, int(index)))
        a, b, nsp_label = self.segments(rng)
        len_a, len_b = fit_pair(len(a), len(b), self.budget)
        a, b = a[len(a) - len_a:], b[:len_b]
        n = len_a + len_b + 3
        ids = np.full(self.seq_len, self.pad, dtype=np.int32)
        ids[:n] = np.concatenate([[self.cls], a, [self.sep], b, [self.sep]])
        token_types = np.zeros(self.seq_len, dtype=np.int32)
        token_types[len_a + 2:n] = 1
        attention_mask = (np.arange(self.seq_len) < n).astype(np.int32)

        candidates = np.concatenate([np.arange(1, len_a + 1), np.arange(len_a + 2, n - 1)])
        chosen = np.sort(rng.choice(candidates, size=max(1, int(round(MASK_PROB * len(candidates)))),
                                    replace=False))
        positions = np.zeros(self.num_predictions, dtype=np.int32)
        targets = np.zeros(self.num_predictions, dtype=np.int32)
        weights = np.zeros(self.num_predictions, dtype=np.float32)
        positions[:len(chosen)], targets[:len(chosen)], weights[:len(chosen)] = chosen, ids[chosen], 1.0
        r = rng.random(len(chosen))
        ids[chosen[r < MASK_TOKEN_PROB]] = self.mask
        replaced = chosen[r >= 1.0 - RANDOM_TOKEN_PROB]
        ids[replaced] = self.normal_ids[rng.integers(len(self.normal_ids), size=len(replaced))]
        return {"input_ids": ids, "token_type_ids": token_types, "attention_mask": attention_mask,
                "mlm_positions": positions, "mlm_targets": targets, "mlm_weights": weights,
                "nsp_labels": np.int32(nsp_label)}


class _Batch:
    """Example indices -> a batch (examples stacked on a leading axis)."""

    def __init__(self, maker: ExampleMaker):
        self.maker = maker

    def __call__(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        examples = [self.maker(i) for i in indices]
        return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def example_batches(maker: ExampleMaker, batch_size: int, process_index: int, process_count: int) -> grain.MapDataset:
    """This process's rows of global batch g = examples g*batch_size .. (g+1)*batch_size - 1."""
    local = grain.MapDataset.range(NUM_EXAMPLES).batch(batch_size // process_count, drop_remainder=True,
                                                       batch_fn=np.asarray)
    return local[process_index::process_count].map(_Batch(maker))


def check_mlm_config(config) -> None:
    """Cheap checks: source, tokenizer, sizes. Reads no corpus."""
    documents.check_text_corpus_config(config)  # text, builtin, or a lone arrayrecord / tfds source
    check_tokenizer_config(config)
    data = config.data
    for key in ("seq_len", "batch_size"):
        if data[key] < 1:
            raise ConfigError(f"data.{key}", f"must be positive, got {data[key]}")
    if data.seq_len < 8:
        raise ConfigError("data.seq_len", f"BERT pretraining needs room for [CLS] A [SEP] B [SEP]: at least 8, "
                                          f"got {data.seq_len}")
    if data.seq_len > config.model.max_len:
        raise ConfigError("data.seq_len", f"{data.seq_len} is longer than model.max_len = {config.model.max_len}")


def make_mlm_data(config, workdir: str | None, *, tokenizer: Tokenizer | None = None, process_index: int = 0,
                  process_count: int = 1) -> MLMData:
    data, train = config.data, config.train
    check_mlm_config(config)
    if data.batch_size % process_count:
        raise ConfigError("data.batch_size", f"{data.batch_size} does not divide over {process_count} processes")
    start = time.perf_counter()
    tokenizer = build_tokenizer(config, workdir) if tokenizer is None else tokenizer
    corpus = documents.load_text_corpus(config, tokenizer)
    train_lines = tokenize_lines(tokenizer, corpus.train, corpus.train_key)
    eval_lines = tokenize_lines(tokenizer, corpus.eval, corpus.eval_key)
    logging.info("mlm data: %s/%s, %d train + %d eval tokens in %d + %d lines, loaded in %.2fs", data.source,
                 tokenizer.name, len(train_lines.tokens), len(eval_lines.tokens), len(train_lines.doc),
                 len(eval_lines.doc), time.perf_counter() - start)
    shard = dict(process_index=process_index, process_count=process_count)
    train_ds = example_batches(ExampleMaker(train_lines, tokenizer, data.seq_len, train.seed), data.batch_size, **shard)
    eval_ds = example_batches(ExampleMaker(eval_lines, tokenizer, data.seq_len, EVAL_SEED), data.batch_size,
                              **shard)[: train.eval_steps]
    return MLMData(
        tokenizer=tokenizer,
        train_iter=iter(train_ds.to_iter_dataset(_READ_OPTIONS)),
        eval_batches=lambda: iter(eval_ds.to_iter_dataset(_READ_OPTIONS)),
        train_tokens=len(train_lines.tokens),
        eval_tokens=len(eval_lines.tokens),
    )
