"""bmjax-train-tokenizer: train a WordPiece or BPE tokenizer on local text and write a tokenizers-library
`tokenizer.json`.

    bmjax-train-tokenizer --out runs/tok/tokenizer.json [--kind wordpiece|bpe]
        [--vocab_size 8000] [--input FILE ...] [--min_frequency 2] [--lowercase | --nolowercase]
    bmjax-train-tokenizer --kind bpe --input corpus.txt --out runs/tok/tokenizer.json
    python -m bmjax.cli.train_tokenizer ...   (the same)

Without --input it trains on the builtin corpus's training documents (the Python standard library,
the same train/eval split as `data.source=builtin`), so nothing is downloaded. Use the result with
`--config.data.tokenizer=PATH` (a config that leaves `model.vocab_size` unset, as configs/gpt/tiny.py, takes its size).
wordpiece (the default) is BERT's recipe and lowercases; bpe is GPT-2's byte-level BPE and keeps case
(bmjax/data/tokenizer_training.py). `--no-lowercase`, the earlier spelling, still works.
"""
import os
import sys

from absl import flags

from bmjax.cli import common
from bmjax.data.tokenizer_files import BERT_SPECIALS
from bmjax.data.tokenizer_training import KINDS, builtin_training_texts, file_texts, train_tokenizer
from bmjax.errors import ConfigError


def define_flags(argv: list[str]) -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("out", None, "Where to write tokenizer.json.", flag_values=fv)
    flags.DEFINE_enum("kind", "wordpiece", KINDS, "The tokenizer's model.", flag_values=fv)
    flags.DEFINE_integer("vocab_size", 8000, "Vocabulary size, the specials included.", flag_values=fv)
    flags.DEFINE_integer("min_frequency", 2, "Pieces seen fewer times are not merged.", flag_values=fv)
    flags.DEFINE_multi_string("input", [], "UTF-8 text file (repeatable). Default: the builtin corpus.",
                              flag_values=fv)
    flags.DEFINE_bool("lowercase", None, "Lowercase text first. Default: yes for wordpiece, no for bpe.",
                      flag_values=fv)
    return fv


def write_tokenizer(fv: flags.FlagValues) -> int:
    if not fv.out:
        raise ConfigError("--out", "required (where to write tokenizer.json)")
    if fv.vocab_size < len(BERT_SPECIALS) + 1:
        raise ConfigError("--vocab_size", f"must be more than the {len(BERT_SPECIALS)} special tokens")
    for path in fv.input:
        if not os.path.isfile(path):
            raise ConfigError("--input", f"no such file: {path}")
    texts = file_texts(fv.input) if fv.input else builtin_training_texts()
    tokenizer = train_tokenizer(texts, kind=fv.kind, vocab_size=fv.vocab_size, min_frequency=fv.min_frequency,
                                lowercase=fv.lowercase)
    os.makedirs(os.path.dirname(os.path.abspath(fv.out)), exist_ok=True)
    tokenizer.save(fv.out)
    print(f"wrote {fv.out}: {fv.kind}, {tokenizer.get_vocab_size()} tokens "
          f"(use --config.data.tokenizer={fv.out}; an unset model.vocab_size takes its size)")
    return common.OK


def main(argv: list[str] | None = None) -> int:
    return common.run(define_flags, write_tokenizer, argv, usage=__doc__, aliases={"--no-lowercase": "--nolowercase"})


if __name__ == "__main__":
    sys.exit(main())
