"""How many UTF-8 bytes of text each token id stands for, for bits per byte (tokenizers.token_byte_lengths).

A byte-level BPE (GPT-2's, `bmjax-train-tokenizer --kind bpe`) writes every byte as one character of a fixed
256-character alphabet (`bytes_to_unicode`), so a vocabulary token of k such characters is k bytes, whatever its
neighbours; an added token that is not special is its text's UTF-8 bytes, and a special one (end of text)
none. WordPiece and SentencePiece pieces have no fixed bytes (case, accents and the spaces between words are
normalised away): they get none here.
"""
import numpy as np


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to the printable character that stands for it in a byte-level vocabulary."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def byte_level_lengths(tokenizer) -> np.ndarray | None:
    """Bytes per id of a tokenizers-library Tokenizer whose decoder is ByteLevel; None for any other."""
    if type(tokenizer.decoder).__name__ != "ByteLevel":
        return None
    alphabet = set(bytes_to_unicode().values())
    added = tokenizer.get_added_tokens_decoder()
    lengths = np.zeros(tokenizer.get_vocab_size(with_added_tokens=True), np.int64)
    for token, index in tokenizer.get_vocab(with_added_tokens=True).items():
        if index in added:
            lengths[index] = 0 if added[index].special else len(token.encode("utf-8"))
        elif all(ch in alphabet for ch in token):
            lengths[index] = len(token)
        else:
            return None  # a token outside the byte alphabet: not a byte-level vocabulary after all
    return lengths
