"""Tokens per second the packed LM pipeline delivers from ArrayRecord token shards.

    python tools/bench_data.py [--shards 'DIR/*.arrayrecord' --tokenizer byte] [--seq_len 1024] [--batch_size 64]
        [--packing concat,segments] [--workers 0,1,2] [--batches 40] [--json]

Without --shards it prepares byte-level shards of data/tinyshakespeare.txt (paragraphs as documents) in a
temporary directory. For each packing and worker count (0: grain threads in this process; N: N grain worker
processes) it builds the training pipeline exactly as training does (bmjax.data.make_data), takes --warmup
batches, then times --batches batches and reports tokens/s (batch_size x seq_len per batch) and, for
segments, the share of rows that is padding. Compare with the tokens/s a train step consumes
(tools/bench_step.py) on the same machine.
"""
import json
import os
import sys
import tempfile
import time

from absl import app, flags

from bmjax.data import ByteTokenizer, make_data, prepare
from bmjax.defaults import base_config

_SHARDS = flags.DEFINE_string("shards", "", "A glob of prepared shards (default: tinyshakespeare, byte-level).")
_TOKENIZER = flags.DEFINE_string("tokenizer", "byte", "The shards' tokenizer (as data.tokenizer).")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 1024, "Row length.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Rows per batch.")
_PACKING = flags.DEFINE_list("packing", ["concat", "segments"], "Packings to time.")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "data.workers values to time.")
_BATCHES = flags.DEFINE_integer("batches", 40, "Timed batches per setting.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed batches first (worker start-up included).")
_JSON = flags.DEFINE_bool("json", False, "One JSON line per setting instead of text.")


def default_shards(directory: str) -> str:
    text = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "tinyshakespeare.txt")
    docs = prepare.text_documents([text], "paragraph")
    prepare.prepare_shards(docs, directory, ByteTokenizer(), num_shards=8, workers=1, progress=False)
    return os.path.join(directory, "*.arrayrecord")


def config_for(glob: str, packing: str, workers: int):
    c = base_config()
    c.data.source, c.data.path, c.data.tokenizer = "arrayrecord", glob, _TOKENIZER.value
    c.data.packing, c.data.workers = packing, workers
    c.data.seq_len, c.data.batch_size = _SEQ_LEN.value, _BATCH.value
    c.model.max_len, c.model.vocab_size = _SEQ_LEN.value, 2**20
    return c


def time_setting(glob: str, packing: str, workers: int) -> dict:
    data = make_data(config_for(glob, packing, workers), None)
    for _ in range(_WARMUP.value):
        next(data.train_iter)
    start, padding = time.perf_counter(), 0
    for _ in range(_BATCHES.value):
        batch = next(data.train_iter)
        if "segment_ids" in batch:
            padding += int((batch["segment_ids"] == 0).sum())
    seconds = time.perf_counter() - start
    tokens = _BATCHES.value * _BATCH.value * _SEQ_LEN.value
    return {"packing": packing, "workers": workers, "seq_len": _SEQ_LEN.value, "batch_size": _BATCH.value,
            "batches": _BATCHES.value, "seconds": round(seconds, 3), "tokens_per_sec": round(tokens / seconds),
            "padding_fraction": round(padding / tokens, 4)}


def main(argv) -> int:
    del argv
    with tempfile.TemporaryDirectory(prefix="bench_data-") as tmp:
        glob = _SHARDS.value or default_shards(tmp)
        for packing in _PACKING.value:
            for workers in map(int, _WORKERS.value):
                row = time_setting(glob, packing, workers)
                if _JSON.value:
                    print(json.dumps(row), flush=True)
                else:
                    print(f"{packing:>8} workers={workers}: {row['tokens_per_sec']:>12,} tokens/s "
                          f"({row['batches']} batches of {row['batch_size']}x{row['seq_len']} in {row['seconds']}s"
                          f"{', padding %.1f%%' % (100 * row['padding_fraction']) if packing == 'segments' else ''})",
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
