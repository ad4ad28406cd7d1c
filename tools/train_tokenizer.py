"""Train a WordPiece or BPE tokenizer on local text and write a tokenizers-library `tokenizer.json`.

    python tools/train_tokenizer.py --out runs/tok/tokenizer.json [--kind wordpiece|bpe]
        [--vocab_size 8000] [--input FILE ...] [--min_frequency 2] [--lowercase | --no-lowercase]

Without --input it trains on the builtin corpus's training documents (the Python standard library,
the same train/eval split as `data.source=builtin`), so nothing is downloaded. Use the result with
`--config.data.tokenizer=PATH` and a `model.vocab_size` of at least the printed vocabulary size.

- wordpiece (default): BERT's recipe, as bert-base-uncased: BERT normalizer (lowercasing by default),
  BERT pre-tokenizer, `##` continuation pieces.
- bpe: byte-level BPE as GPT-2 (every byte is in the alphabet, so no text is unknown), no lowercasing
  by default; it also gets `<|endoftext|>`, which the LM pipeline uses as the end of a document.

Both get the specials [PAD] [UNK] [CLS] [SEP] [MASK] as ids 0-4, and a `[CLS] A [SEP] B [SEP]`
post-processor so the file also works as a BERT tokenizer in transformers.
"""
import argparse
import os
import sys

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from bmjax.data import sources
from bmjax.data.tokenizer_files import BERT_SPECIALS

KINDS = ("wordpiece", "bpe")
BUILTIN_EVAL_FRACTION = 0.1  # data.eval_fraction's default: keep the builtin eval files out of training


def new_tokenizer(kind: str, lowercase: bool) -> Tokenizer:
    if kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix="##")
    else:
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        if lowercase:
            tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(texts, *, kind: str = "wordpiece", vocab_size: int = 8000, min_frequency: int = 2,
                    lowercase: bool | None = None) -> Tokenizer:
    """A tokenizer of `kind` trained on the iterable of strings `texts`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if lowercase is None:
        lowercase = kind == "wordpiece"
    tokenizer = new_tokenizer(kind, lowercase)
    specials = list(BERT_SPECIALS)
    if kind == "wordpiece":
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=specials, show_progress=False)
    else:
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=specials + ["<|endoftext|>"], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tokenizer


def builtin_training_texts() -> list[str]:
    return [text for rel, text in sources.builtin_documents()
            if not sources.is_builtin_eval_file(rel, BUILTIN_EVAL_FRACTION)]


def file_texts(paths: list[str]):
    for path in paths:
        with open(path, encoding="utf-8") as f:
            yield from f  # line by line: a large file never sits in memory at once


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="Where to write tokenizer.json.")
    parser.add_argument("--kind", choices=KINDS, default="wordpiece")
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--min_frequency", type=int, default=2, help="Pieces seen fewer times are not merged.")
    parser.add_argument("--input", action="append", default=[], help="UTF-8 text file (repeatable). "
                                                                     "Default: the builtin corpus.")
    parser.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=None,
                        help="Lowercase text first. Default: yes for wordpiece, no for bpe.")
    args = parser.parse_args(argv)
    if args.vocab_size < len(BERT_SPECIALS) + 1:
        print(f"error: --vocab_size: must be more than the {len(BERT_SPECIALS)} special tokens", file=sys.stderr)
        return 2
    for path in args.input:
        if not os.path.isfile(path):
            print(f"error: --input: no such file: {path}", file=sys.stderr)
            return 2
    texts = file_texts(args.input) if args.input else builtin_training_texts()
    tokenizer = train_tokenizer(texts, kind=args.kind, vocab_size=args.vocab_size,
                                min_frequency=args.min_frequency, lowercase=args.lowercase)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tokenizer.save(args.out)
    print(f"wrote {args.out}: {args.kind}, {tokenizer.get_vocab_size()} tokens "
          f"(use --config.data.tokenizer={args.out} and model.vocab_size >= {tokenizer.get_vocab_size()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
