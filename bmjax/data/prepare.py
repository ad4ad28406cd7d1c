"""Tokenise documents into ArrayRecord token shards (bmjax/data/shards.py), in parallel worker processes.

Documents come from UTF-8 text files (a whole file, its paragraphs or its lines: the pieces keep their
separators, so their concatenation is the file), JSONL files (one named string field per line) or a TFDS
dataset prepared in the array_record format (tfds_documents.TfdsDocuments: `tfds.data_source`, never downloaded).
With a tokenizer whose ids have no fixed bytes (WordPiece, SentencePiece) each record also holds the bytes of text
each token covers (shards.py), for the evals' bits per byte.

Workers tokenise chunks of documents; the parent writes the records in document order, so the shards are
the same bytes on every run whatever the number of workers.
"""
import multiprocessing
import os
import re

import numpy as np

from bmjax.data import shards
from bmjax.data.token_bytes import encode_with_bytes
from bmjax.data.tokenizers import counts_covered_bytes
from bmjax.errors import ConfigError

SPLITS = ("file", "paragraph", "line")
CHUNK = 64  # documents per worker task: small enough to spread, large enough to amortise the pickling
WRITER_OPTIONS = "group_size:1"  # one record per chunk: shuffled reads decompress only what they read


def paragraphs(text: str) -> list[str]:
    """`text` cut after each run of blank lines: every paragraph keeps the blank line(s) that end it, so the
    paragraphs laid end to end are the text."""
    return [p for p in re.split(r"(?<=\n\n)(?!\n)", text) if p]


def text_documents(paths: list[str], split: str = "paragraph") -> list[str]:
    """The documents of UTF-8 files: whole files, paragraphs (up to and with the blank line) or lines."""
    docs = []
    for path in paths:
        text = _read(path, "--input")
        if split == "file":
            pieces = [text]
        elif split == "paragraph":
            pieces = paragraphs(text)
        else:
            pieces = text.splitlines(keepends=True)
        docs.extend(p for p in pieces if p)
    return docs


def jsonl_documents(paths: list[str], field: str) -> list[str]:
    import json

    docs = []
    for path in paths:
        for number, line in enumerate(_read(path, "--input").splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)[field]
            except (ValueError, KeyError, TypeError, IndexError):
                raise ConfigError("--input", f"{path}:{number}: not a JSON object with a {field!r} field") from None
            if not isinstance(value, str):
                raise ConfigError("--field", f"{path}:{number}: {field!r} is a {type(value).__name__}, not text")
            docs.append(value)
    return docs


# Worker side: one tokenizer per process, built once.
_WORKER = {}


def _init_worker(tokenizer, documents):
    _WORKER["tokenizer"], _WORKER["documents"] = tokenizer, documents
    _WORKER["counts_bytes"] = counts_covered_bytes(tokenizer)


def _encode_task(task):
    """(records, tokens of each, UTF-8 bytes of the texts) of one chunk of documents."""
    start, stop, texts = task
    tokenizer, documents = _WORKER["tokenizer"], _WORKER["documents"]
    if texts is None:
        texts = documents.read(start, stop)
    dtype = shards.record_dtype(tokenizer.vocab_size)
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    records, counts, nbytes = [], [], 0
    for text in texts:
        if _WORKER["counts_bytes"]:
            ids, covered = encode_with_bytes(tokenizer, text)
            covered = np.append(covered, [0] * len(eos))  # the end-of-document id covers no text
        else:
            ids, covered = tokenizer.encode(text), None
        ids = np.append(ids, eos)
        records.append(shards.encode_record(ids, dtype, covered))
        counts.append(len(ids))
        nbytes += len(text.encode("utf-8"))
    return records, counts, nbytes


def prepare_shards(documents, out_dir: str, tokenizer, *, num_shards: int = 8, workers: int = 1,
                   prefix: str = "data", source: str = "", progress: bool = True) -> dict:
    """Write `documents` (a list of str, or tfds_documents.TfdsDocuments) as token shards in `out_dir`; return the metadata.

    A char tokenizer's vocabulary is written beside the shards (vocab.json)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    total = len(documents)
    if total == 0:
        raise ConfigError("--input", "holds no documents")
    if num_shards < 1 or num_shards > total:
        raise ConfigError("--num_shards", f"must be in [1, {total}] (the number of documents), got {num_shards}")
    os.makedirs(out_dir, exist_ok=True)
    in_memory = isinstance(documents, list)
    tasks = [(s, min(s + CHUNK, total), documents[s:s + CHUNK] if in_memory else None) for s in range(0, total, CHUNK)]
    bounds = [i * total // num_shards for i in range(num_shards + 1)]  # shard i: documents [bounds[i], bounds[i+1])
    names = [shards.shard_name(prefix, i, num_shards) for i in range(num_shards)]
    for stale in os.listdir(out_dir):  # a re-run with fewer shards must not leave old ones to match a glob
        if stale.startswith(f"{prefix}-") and stale.endswith(".arrayrecord") and stale not in names:
            os.remove(os.path.join(out_dir, stale))

    context = multiprocessing.get_context("spawn")  # no fork after jax or tokenizers' threads have started
    pool = context.Pool(workers, _init_worker, (tokenizer, documents)) if workers > 1 else None
    results = pool.imap(_encode_task, tasks) if pool else (_encode_direct(tokenizer, documents, t) for t in tasks)
    bar = _progress_bar(total, progress)
    shard, writer, doc, tokens, nbytes = -1, None, 0, 0, 0
    try:
        for records, counts, task_bytes in results:
            for record, count in zip(records, counts):
                while doc >= bounds[shard + 1]:
                    if writer is not None:
                        writer.close()
                    shard += 1
                    writer = ArrayRecordWriter(os.path.join(out_dir, names[shard]), WRITER_OPTIONS)
                writer.write(record)
                doc += 1
                tokens += count
            nbytes += task_bytes
            bar.update(len(records))
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        if pool is not None:
            pool.terminate()
    if tokenizer.name == "char":
        tokenizer.save(os.path.join(out_dir, shards.CHAR_VOCAB_FILE))
    metadata = {"dtype": shards.record_dtype(tokenizer.vocab_size).str, "shards": names,
                **({"token_bytes": shards.BYTES_DTYPE.str} if counts_covered_bytes(tokenizer) else {}),
                "tokenizer": shards.tokenizer_identity(tokenizer), "documents": total, "tokens": tokens,
                "bytes": nbytes, "source": source}
    shards.write_metadata(out_dir, metadata)
    return metadata


def _encode_direct(tokenizer, documents, task):
    _init_worker(tokenizer, documents)
    return _encode_task(task)


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="doc", desc="tokenising", disable=not enabled, mininterval=1.0)


def _read(path: str, key: str) -> str:
    if not os.path.isfile(path):
        raise ConfigError(key, f"no such file: {path}")
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(key, f"{path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
