"""bmjax-prepare-data: text, JSONL or TFDS -> ArrayRecord token shards.

    bmjax-prepare-data --input data/tinyshakespeare.txt --tokenizer byte --out runs/shards/shakespeare
    bmjax-prepare-data --format jsonl --field text --input a.jsonl --input b.jsonl \
        --tokenizer runs/tok/tokenizer.json --out runs/shards/web --num_shards 64 --workers 16
    bmjax-prepare-data --format tfds --tfds_name lm1b --tfds_split train --tokenizer byte --out ...
    python -m bmjax.cli.prepare_data ...     (the same)

Writes OUT/PREFIX-00000-of-0000N.arrayrecord ... and OUT/metadata.json (tokenizer and its hash, vocabulary
size, documents, tokens, bytes, source); train with `--config.data.source=arrayrecord
--config.data.path='OUT/*.arrayrecord'` and the same `--config.data.tokenizer`. Re-running on the same input
writes the same bytes. Bad input: one line `error: FLAG: ...`, exit status 2.
"""
import os
import sys

from absl import flags

from bmjax.cli import common
from bmjax.data import prepare
from bmjax.data.tfds_documents import TfdsDocuments
from bmjax.errors import ConfigError

FORMATS = ("text", "jsonl", "tfds")


def define_flags(argv: list[str]) -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_multi_string("input", [], "Input file (repeatable; formats text and jsonl).", flag_values=fv)
    flags.DEFINE_enum("format", "text", FORMATS, "What the input is.", flag_values=fv)
    flags.DEFINE_enum("split_documents", "paragraph", prepare.SPLITS, "Format text: one document per file, per "
                      "paragraph (up to a blank line) or per line.", flag_values=fv)
    flags.DEFINE_string("field", "text", "Formats jsonl and tfds: the field that holds a document's text.",
                        flag_values=fv)
    flags.DEFINE_string("tfds_name", "", "Format tfds: the dataset (prepared as array_record), e.g. lm1b.",
                        flag_values=fv)
    flags.DEFINE_string("tfds_split", "train", "Format tfds: the split.", flag_values=fv)
    flags.DEFINE_string("tfds_data_dir", "", "Format tfds: where it is prepared (empty: TFDS's default).",
                        flag_values=fv)
    flags.DEFINE_string("tokenizer", "byte", "byte | char | a tokenizer.json | a SentencePiece .model "
                        "(as data.tokenizer).", flag_values=fv)
    flags.DEFINE_string("out", None, "Output directory for the shards and metadata.json.", flag_values=fv)
    flags.DEFINE_integer("num_shards", 8, "Shards to write (at most the number of documents).", flag_values=fv)
    flags.DEFINE_integer("workers", os.cpu_count() or 1, "Tokenising processes (1: none, in this process).",
                         flag_values=fv)
    flags.DEFINE_string("prefix", "data", "Shard file name prefix.", flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=fv)
    return fv


def load_documents(fv):
    if fv.format == "tfds":
        if not fv.tfds_name:
            raise ConfigError("--tfds_name", "is required with --format tfds")
        docs = TfdsDocuments(fv.tfds_name, fv.tfds_split, fv.field, fv.tfds_data_dir)
        len(docs)  # opens the dataset now: an unprepared one fails before any work
        return docs, f"tfds:{fv.tfds_name}/{fv.tfds_split}"
    if not fv.input:
        raise ConfigError("--input", f"at least one file is required with --format {fv.format}")
    if fv.format == "jsonl":
        docs = prepare.jsonl_documents(fv.input, fv.field)
    else:
        docs = prepare.text_documents(fv.input, fv.split_documents)
    names = ",".join(os.path.basename(p) for p in fv.input)
    return docs, f"{fv.format}:{names}"


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


def prepare_data(fv: flags.FlagValues) -> int:
    if not fv.out:
        raise ConfigError("--out", "is required")
    docs, source = load_documents(fv)
    tokenizer = build_tokenizer(fv.tokenizer, docs)
    metadata = prepare.prepare_shards(docs, fv.out, tokenizer, num_shards=fv.num_shards, workers=max(1, fv.workers),
                                      prefix=fv.prefix, source=source, progress=fv.progress)
    print(f"wrote {metadata['documents']} documents, {metadata['tokens']} tokens ({metadata['bytes']} bytes of text) "
          f"in {len(metadata['shards'])} shards to {fv.out} with tokenizer {metadata['tokenizer']['name']} "
          f"({metadata['tokenizer']['vocab_size']} ids)")
    return common.OK


def main(argv: list[str] | None = None) -> int:
    return common.run(define_flags, prepare_data, argv, usage=__doc__)


if __name__ == "__main__":
    sys.exit(main())
