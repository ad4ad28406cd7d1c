"""Tokenizers: text <-> int32 ids, vectorised with numpy (the builtin corpus is tens of MB).

- `byte`: ids 0..255 are the UTF-8 bytes; then PAD=256, BOS=257, EOS=258, MASK=259 (MASK is for
  masked-LM tasks). `vocab_size` = 260, the number of ids.
- `char`: the sorted set of characters of the source text (nanoGPT's shakespeare_char: 65 for
  tinyshakespeare), no specials. Built from the whole `data.path` file (as nanoGPT's prepare script
  does, so its held-out tail never meets an unknown character) or the whole builtin corpus, never
  from a separate `data.eval_path`. Saved as WORKDIR/vocab.json and loaded from there when it
  exists, so a resumed run or a sampler gets the same ids.
- a file path: a tokenizers-library `tokenizer.json` or a BERT WordPiece `vocab.txt`
  (bmjax/data/tokenizer_files.py).

BERT tasks need [CLS], [SEP], [MASK] and [PAD] ids (`cls_id`, `sep_id`, `mask_id`, `pad_id`) and
`special_ids` (never masked or drawn as random replacements). The byte tokenizer's BOS and EOS
serve as [CLS] and [SEP], so its 260 ids stay the same for GPT and BERT.
"""
import json
import os
from typing import Protocol, Sequence

import numpy as np

from bmjax.data import sources, token_bytes
from bmjax.data.tokenizer_files import is_tokenizer_file, load_tokenizer_file
from bmjax.errors import ConfigError
from bmjax.workdir import VOCAB_FILE  # a run saves its char vocabulary in its workdir

TOKENIZERS = ("byte", "char")


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eos_id: int | None
    pad_id: int | None

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Sequence[int] | np.ndarray) -> str: ...


class ByteTokenizer:
    name = "byte"
    pad_id = 256
    bos_id = 257
    eos_id = 258
    mask_id = 259
    vocab_size = 260
    cls_id = bos_id  # BERT's [CLS] and [SEP] reuse BOS and EOS
    sep_id = eos_id
    unk_id = None
    special_ids = (256, 257, 258, 259)
    _SPECIALS = {256: "<|pad|>", 257: "<|bos|>", 258: "<|eos|>", 259: "<|mask|>"}

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        """Bytes decode with errors="replace"; specials print as <|name|>; unknown ids as U+FFFD."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        pieces, start = [], 0
        for i in np.flatnonzero((ids < 0) | (ids > 255)):  # split the byte runs at every non-byte id
            pieces.append(ids[start:i].astype(np.uint8).tobytes().decode("utf-8", errors="replace"))
            pieces.append(self._SPECIALS.get(int(ids[i]), "\ufffd"))
            start = i + 1
        pieces.append(ids[start:].astype(np.uint8).tobytes().decode("utf-8", errors="replace"))
        return "".join(pieces)


class CharTokenizer:
    """One id per character of a fixed, sorted character list. Unknown characters are an error."""

    name = "char"
    eos_id = None
    pad_id = None
    bos_id = None
    mask_id = None
    cls_id = None
    sep_id = None
    special_ids = ()

    def __init__(self, chars: Sequence[str], key: str = "data.path", origin: str = ""):
        self.chars = list(chars)
        self.origin = origin  # where the vocabulary came from, for error messages
        if not self.chars or sorted(set(self.chars)) != self.chars or any(len(c) != 1 for c in self.chars):
            raise ConfigError(
                "data.tokenizer", f"a char vocabulary {origin} must be non-empty, sorted, distinct single characters"
            )
        self.vocab_size = len(self.chars)
        self.key = key  # the config key blamed for a character outside the vocabulary
        self._codepoints = np.array([ord(c) for c in self.chars], dtype=np.int64)
        self._table = np.full(int(self._codepoints.max()) + 1, -1, dtype=np.int32)
        self._table[self._codepoints] = np.arange(self.vocab_size, dtype=np.int32)

    @classmethod
    def from_texts(cls, texts: Sequence[str], key: str = "data.path") -> "CharTokenizer":
        seen = np.zeros(0x110000, dtype=bool)
        for text in texts:
            seen[_codepoints(text)] = True
        return cls([chr(c) for c in np.flatnonzero(seen)], key=key)

    def encode(self, text: str) -> np.ndarray:
        codes = _codepoints(text)
        ids = self._table[np.minimum(codes, len(self._table) - 1)]
        unknown = (ids < 0) | (codes >= len(self._table))
        if unknown.any():
            missing = sorted({chr(c) for c in codes[unknown]})
            raise ConfigError(
                self.key,
                f"{len(missing)} character(s) outside the char vocabulary of {self.vocab_size}"
                f"{' read from ' + self.origin if self.origin else ''}, e.g. {missing[:10]}",
            )
        return ids.astype(np.int32)

    def decode(self, ids) -> str:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        return "".join(self.chars[i] if 0 <= i < self.vocab_size else "\ufffd" for i in ids.tolist())

    def save(self, path: str) -> None:
        # Write-then-rename: several processes may write the same file at once.
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"tokenizer": "char", "chars": self.chars}, f, ensure_ascii=False)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "CharTokenizer":
        try:
            with open(path, encoding="utf-8") as f:
                saved = json.load(f)
            chars = saved["chars"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError("data.tokenizer", f"cannot read the char vocabulary {path}: {e}") from None
        return cls(chars, origin=path)


def token_byte_lengths(tokenizer) -> np.ndarray | None:
    """UTF-8 bytes of text each token id stands for, where every id stands for fixed bytes: the byte
    tokenizer's ids one byte each (its specials none), a char vocabulary's ids their character's bytes, a
    byte-level BPE's ids the bytes they spell (token_bytes.py). None for WordPiece and SentencePiece (pieces
    change with their neighbours and case): their evals count the bytes of text each target covers instead."""
    if isinstance(tokenizer, ByteTokenizer):
        lengths = np.zeros(tokenizer.vocab_size, np.int64)
        lengths[:256] = 1
        return lengths
    if isinstance(tokenizer, CharTokenizer):
        return np.array([len(c.encode("utf-8", errors="surrogatepass")) for c in tokenizer.chars], np.int64)
    if hasattr(tokenizer, "tokenizer"):  # a tokenizer file: byte-level BPE ids have fixed bytes (token_bytes.py)
        return token_bytes.byte_level_lengths(tokenizer.tokenizer)
    return None


def counts_covered_bytes(tokenizer) -> bool:
    """Whether `tokenizer`'s ids have no fixed bytes but it reports offsets (WordPiece, SentencePiece, any other
    tokenizer file that is not byte-level), so its evals count the bytes of text each token covers
    (token_bytes.encode_with_bytes)."""
    return token_byte_lengths(tokenizer) is None and token_bytes.encode_with_bytes(tokenizer, "a") is not None


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)


def check_tokenizer_config(config) -> None:
    """Cheap checks: the tokenizer is known, and the byte vocabulary fits the model's."""
    name = config.data.tokenizer
    _check_known(name)
    if name == "byte":
        check_vocab_fits(ByteTokenizer(), config)
    elif name != "char":
        check_vocab_fits(load_tokenizer_file(name), config)  # a missing or broken file fails here


def _check_known(name: str) -> None:
    if name not in TOKENIZERS and not is_tokenizer_file(name):
        raise ConfigError("data.tokenizer", f"unknown tokenizer {name!r}; expected one of {TOKENIZERS} "
                                            "or a tokenizer file (tokenizer.json, vocab.txt)")


def check_vocab_fits(tokenizer: Tokenizer, config) -> None:
    model = config.get("model")
    if model is not None and model.get("vocab_size") is not None and tokenizer.vocab_size > model.vocab_size:
        raise ConfigError(
            "model.vocab_size",
            f"{model.vocab_size} is smaller than the {tokenizer.name} tokenizer's {tokenizer.vocab_size} ids",
        )


def build_tokenizer(config, workdir: str | None) -> Tokenizer:
    """The tokenizer `config.data.tokenizer` names, checked against `config.model.vocab_size`.

    A `char` vocabulary is loaded from WORKDIR/vocab.json if present, else built from the source
    text and saved there. `workdir=None` neither loads nor saves.
    """
    name = config.data.tokenizer
    _check_known(name)  # and below, once built, that its ids fit the model
    if name == "byte":
        tokenizer = ByteTokenizer()
    elif name == "char":
        tokenizer = _char_tokenizer(config, workdir)
    else:
        tokenizer = load_tokenizer_file(name)
    check_vocab_fits(tokenizer, config)
    return tokenizer


def _char_tokenizer(config, workdir: str | None) -> CharTokenizer:
    vocab_path = os.path.join(workdir, VOCAB_FILE) if workdir else None
    if vocab_path and os.path.exists(vocab_path):
        return CharTokenizer.load(vocab_path)
    if config.data.get("mixture") or config.data.source in ("arrayrecord", "tfds"):
        tokenizer = _char_tokenizer_of_shards(config)
    else:
        corpus = sources.load_corpus(config)
        docs = corpus.vocab_docs
        if config.data.source == "builtin":
            docs = docs + ("\n",)  # documents are joined with newlines
        tokenizer = CharTokenizer.from_texts(docs)
    save_char_vocab(tokenizer, workdir)
    return tokenizer


def save_char_vocab(tokenizer: Tokenizer, workdir: str | None) -> None:
    """A char vocabulary goes to WORKDIR/vocab.json when the workdir has none, for a resume to read back."""
    vocab_path = os.path.join(workdir, VOCAB_FILE) if workdir else None
    if isinstance(tokenizer, CharTokenizer) and vocab_path and not os.path.exists(vocab_path):
        os.makedirs(workdir, exist_ok=True)
        tokenizer.save(vocab_path)


def _char_tokenizer_of_shards(config) -> CharTokenizer:
    """A char vocabulary for token shards: the one saved beside them, or that of data.prepare_from's text (which
    the shards will be prepared with). Mixtures and TFDS have no single vocabulary to read."""
    from bmjax.data import shards

    data = config.data
    if data.get("mixture") or data.source != "arrayrecord":
        raise ConfigError("data.tokenizer", "char needs one text or shard set to take its vocabulary from; "
                                            "use byte or a tokenizer file with a mixture or TFDS")
    if data.get("prepare_from"):
        return CharTokenizer.from_texts([sources.read_text("data.prepare_from", data.prepare_from)])
    paths = shards.match_shards(data.path, "data.path")
    vocab = os.path.join(os.path.dirname(os.path.abspath(paths[0])), shards.CHAR_VOCAB_FILE)
    if not os.path.isfile(vocab):
        raise ConfigError("data.tokenizer", f"char shards come with their vocabulary, but {vocab} is missing")
    return CharTokenizer.load(vocab)
