"""`bmjax-prepare-data` / `python tools/prepare_data.py`: text, JSONL or TFDS -> ArrayRecord token shards.

    python tools/prepare_data.py --input data/tinyshakespeare.txt --tokenizer byte --out runs/shards/shakespeare
    python tools/prepare_data.py --format jsonl --field text --input a.jsonl --input b.jsonl \
        --tokenizer runs/tok/tokenizer.json --out runs/shards/web --num_shards 64 --workers 16
    python tools/prepare_data.py --format tfds --tfds_name lm1b --tfds_split train --tokenizer byte --out ...

Writes OUT/PREFIX-00000-of-0000N.arrayrecord ... and OUT/metadata.json (tokenizer and its hash, vocabulary
size, documents, tokens, bytes, source); train with `--config.data.source=arrayrecord
--config.data.path='OUT/*.arrayrecord'` and the same `--config.data.tokenizer`. Re-running on the same input
writes the same bytes. Bad input: one line `error: FLAG: ...`, exit status 2.
"""
import os
import sys

from absl import app, flags

from bmjax.data import prepare
from bmjax.errors import ConfigError

FORMATS = ("text", "jsonl", "tfds")
_INPUT = flags.DEFINE_multi_string("input", [], "Input file (repeatable; formats text and jsonl).")
_FORMAT = flags.DEFINE_enum("format", "text", FORMATS, "What the input is.")
_SPLIT = flags.DEFINE_enum("split_documents", "paragraph", prepare.SPLITS,
                           "Format text: one document per file, per paragraph (up to a blank line) or per line.")
_FIELD = flags.DEFINE_string("field", "text", "Formats jsonl and tfds: the field that holds a document's text.")
_TFDS_NAME = flags.DEFINE_string("tfds_name", "", "Format tfds: the dataset (prepared as array_record), e.g. lm1b.")
_TFDS_SPLIT = flags.DEFINE_string("tfds_split", "train", "Format tfds: the split.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", "", "Format tfds: where it is prepared (empty: TFDS's default).")
_TOKENIZER = flags.DEFINE_string("tokenizer", "byte", "byte | char | a tokenizer.json | a SentencePiece .model "
                                 "(as data.tokenizer).")
_OUT = flags.DEFINE_string("out", None, "Output directory for the shards and metadata.json.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 8, "Shards to write (at most the number of documents).")
_WORKERS = flags.DEFINE_integer("workers", os.cpu_count() or 1, "Tokenising processes (1: none, in this process).")
_PREFIX = flags.DEFINE_string("prefix", "data", "Shard file name prefix.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def load_documents():
    if _FORMAT.value == "tfds":
        if not _TFDS_NAME.value:
            raise ConfigError("--tfds_name", "is required with --format tfds")
        docs = prepare.TfdsDocuments(_TFDS_NAME.value, _TFDS_SPLIT.value, _FIELD.value, _TFDS_DATA_DIR.value)
        len(docs)  # opens the dataset now: an unprepared one fails before any work
        return docs, f"tfds:{_TFDS_NAME.value}/{_TFDS_SPLIT.value}"
    if not _INPUT.value:
        raise ConfigError("--input", f"at least one file is required with --format {_FORMAT.value}")
    if _FORMAT.value == "jsonl":
        docs = prepare.jsonl_documents(_INPUT.value, _FIELD.value)
    else:
        docs = prepare.text_documents(_INPUT.value, _SPLIT.value)
    names = ",".join(os.path.basename(p) for p in _INPUT.value)
    return docs, f"{_FORMAT.value}:{names}"


def build_tokenizer(name: str, docs):
    """The tokenizer `name` names; a char vocabulary is built from every document."""
    from bmjax.data.tokenizers import ByteTokenizer, CharTokenizer, TOKENIZERS
    from bmjax.data.tokenizer_files import is_tokenizer_file, load_tokenizer_file

    if name == "byte":
        return ByteTokenizer()
    if name == "char":
        texts = docs if isinstance(docs, list) else docs.read(0, len(docs))
        return CharTokenizer.from_texts(texts, key="--input")
    if not is_tokenizer_file(name):
        raise ConfigError("--tokenizer", f"unknown tokenizer {name!r}; expected one of {TOKENIZERS} or a file")
    try:
        return load_tokenizer_file(name)
    except ConfigError as e:
        raise ConfigError("--tokenizer", e.message) from None


def run(argv) -> int:
    if len(argv) > 1:
        raise ConfigError("argv", f"unexpected arguments {argv[1:]}")
    if not _OUT.value:
        raise ConfigError("--out", "is required")
    docs, source = load_documents()
    tokenizer = build_tokenizer(_TOKENIZER.value, docs)
    metadata = prepare.prepare_shards(docs, _OUT.value, tokenizer, num_shards=_NUM_SHARDS.value,
                                      workers=max(1, _WORKERS.value), prefix=_PREFIX.value, source=source,
                                      progress=_PROGRESS.value)
    print(f"wrote {metadata['documents']} documents, {metadata['tokens']} tokens ({metadata['bytes']} bytes of text) "
          f"in {len(metadata['shards'])} shards to {_OUT.value} with tokenizer {metadata['tokenizer']['name']} "
          f"({metadata['tokenizer']['vocab_size']} ids)")
    return 0


def main(argv) -> int:
    try:
        return run(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2


def run_main():
    """The `bmjax-prepare-data` console script."""
    app.run(main)
