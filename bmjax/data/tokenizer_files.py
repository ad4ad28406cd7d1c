"""Tokenizers from a file (`data.tokenizer=PATH`), through the Hugging Face `tokenizers` library.

- `*.json`: a tokenizers-library `tokenizer.json` (WordPiece, BPE, Unigram: whatever it holds),
  e.g. one written by `bmjax-train-tokenizer` or shipped next to a Hugging Face model.
- `*.model`: a SentencePiece model (needs the `sentencepiece` package); its `</s>` is the end of a document.
- `*.txt`: a BERT WordPiece vocabulary, one token per line (`vocab.txt`), read the way
  bert-base-uncased's tokenizer reads it: BERT normalizer (clean text, Chinese characters split,
  accents stripped when lowercasing), BERT pre-tokenizer, `##` continuation pieces, `[UNK]`.
  Lowercasing follows `do_lower_case` in a `tokenizer_config.json` beside the file when there is
  one; otherwise the vocabulary decides: lowercase unless some non-special token has an upper-case
  letter (bert-base-uncased's has none, bert-base-cased's has many).

Encoding never adds special tokens, pads or truncates (whatever a tokenizer.json asks for): the pipelines
place [CLS]/[SEP] and cut sequences themselves, the same way for every tokenizer. The special ids ([PAD]
[UNK] [CLS] [SEP] [MASK], and an end-of-text token for causal LMs: `<|endoftext|>` or `</s>`) are looked
up by name and are None when absent.
Nothing is downloaded: a missing file is a ConfigError naming `data.tokenizer`.
"""
import functools
import json
import os

import numpy as np

from bmjax.errors import ConfigError

BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
EOS_TOKENS = ("<|endoftext|>", "</s>")


def is_tokenizer_file(name: str) -> bool:
    """A `data.tokenizer` value that names a file rather than a builtin tokenizer."""
    return name.endswith((".json", ".txt", ".model")) or os.sep in name or "/" in name


class FileTokenizer:
    """The `Tokenizer` protocol over a `tokenizers.Tokenizer`, plus BERT's special ids."""

    def __init__(self, tokenizer, path: str):
        self.tokenizer = tokenizer
        self.path = path
        self.name = path  # error messages name the file
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        find = tokenizer.token_to_id
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (find(t) for t in BERT_SPECIALS)
        self.eos_id = next((find(t) for t in EOS_TOKENS if find(t) is not None), None)
        self.bos_id = None
        named = (self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id, self.eos_id)
        added = [i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special]
        self.special_ids = tuple(sorted({i for i in (*named, *added) if i is not None}))

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Many texts at once (the library encodes them in parallel)."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encodings]

    def decode(self, ids) -> str:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        return self.tokenizer.decode([int(i) for i in ids if 0 <= i < self.vocab_size], skip_special_tokens=False)


def load_tokenizer_file(path: str) -> FileTokenizer:
    """The tokenizer in `path` (tokenizer.json or vocab.txt); ConfigError on data.tokenizer if unusable."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(path):
        raise ConfigError("data.tokenizer", f"no such tokenizer file: {path} (expected byte, char, a tokenizer.json "
                                            "or a WordPiece vocab.txt)")
    stat = os.stat(path)
    return _load_cached(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, size: int, mtime_ns: int) -> FileTokenizer:
    del size, mtime_ns  # only part of the cache key: a changed file loads again
    if path.endswith(".model"):
        return SentencePieceTokenizer(path)
    try:
        if path.endswith(".txt"):
            tokenizer = _wordpiece_from_vocab(path)
        else:
            import tokenizers

            tokenizer = tokenizers.Tokenizer.from_file(path)
            # A model's tokenizer.json may pad or truncate every text to its serving length (all-MiniLM-L6-v2's:
            # 128); the pipelines cut and pad sequences themselves, so encoding returns every token of a text.
            tokenizer.no_truncation()
            tokenizer.no_padding()
    except ConfigError:
        raise
    except Exception as e:  # the library raises plain Exceptions for malformed files
        raise ConfigError("data.tokenizer", f"cannot load tokenizer file {path}: {str(e).splitlines()[0]}") from None
    return FileTokenizer(tokenizer, path)


def _wordpiece_from_vocab(path: str):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    with open(path, encoding="utf-8") as f:
        vocab = [line.rstrip("\n") for line in f]
    if "[UNK]" not in vocab:
        raise ConfigError("data.tokenizer", f"{path} has no [UNK] token; is it a BERT WordPiece vocab.txt?")
    tokenizer = Tokenizer(models.WordPiece.from_file(path, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=_lowercase(path, vocab))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.add_special_tokens([t for t in BERT_SPECIALS if t in vocab])
    return tokenizer


def _lowercase(path: str, vocab: list[str]) -> bool:
    config_path = os.path.join(os.path.dirname(path), "tokenizer_config.json")
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as f:
            setting = json.load(f).get("do_lower_case")
        if setting is not None:
            return bool(setting)
    return not any(t != t.lower() for t in vocab if not (t.startswith("[") and t.endswith("]")))


class SentencePieceTokenizer:
    """The `Tokenizer` protocol over a SentencePiece model file (no BERT specials)."""

    pad_id = unk_id = cls_id = sep_id = mask_id = bos_id = None

    def __init__(self, path: str):
        try:
            import sentencepiece
        except ImportError:
            raise ConfigError("data.tokenizer", f"{path} is a SentencePiece model, which needs the sentencepiece "
                                                "package (pip install sentencepiece)") from None
        try:
            self.processor = sentencepiece.SentencePieceProcessor(model_file=path)
        except Exception as e:  # noqa: BLE001  the library raises plain errors for unreadable models
            raise ConfigError("data.tokenizer", f"cannot load SentencePiece model {path}: {e}") from None
        self.path = self.name = path
        self.vocab_size = int(self.processor.get_piece_size())
        eos = int(self.processor.eos_id())
        self.eos_id = eos if eos >= 0 else None
        self.special_ids = () if self.eos_id is None else (self.eos_id,)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.processor.encode(text), dtype=np.int32)

    def decode(self, ids) -> str:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        return self.processor.decode([int(i) for i in ids if 0 <= i < self.vocab_size])

    def __getstate__(self):  # worker processes load the model again
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])
