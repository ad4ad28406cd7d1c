"""Train a WordPiece or BPE tokenizer on text and get a tokenizers-library Tokenizer (`bmjax-train-tokenizer`
writes it as a `tokenizer.json`).

- wordpiece: BERT's recipe, as bert-base-uncased: BERT normalizer (lowercasing by default), BERT pre-tokenizer,
  `##` continuation pieces.
- bpe: byte-level BPE as GPT-2 (every byte is in the alphabet, so no text is unknown), no lowercasing by default;
  it also gets `<|endoftext|>`, which the LM pipeline uses as the end of a document.

Both get the specials [PAD] [UNK] [CLS] [SEP] [MASK] as ids 0-4, and a `[CLS] A [SEP] B [SEP]` post-processor so
the file also works as a BERT tokenizer in transformers.
"""
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
