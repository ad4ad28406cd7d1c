"""How many UTF-8 bytes of text each token id stands for, for bits per byte (tokenizers.token_byte_lengths).

A byte-level BPE (GPT-2's, `bmjax-train-tokenizer --kind bpe`) writes every byte as one character of a fixed
256-character alphabet (`bytes_to_unicode`), so a vocabulary token of k such characters is k bytes, whatever its
neighbours; an added token that is not special is its text's UTF-8 bytes, and a special one (end of text)
none. WordPiece and SentencePiece pieces have no fixed bytes (case, accents and the spaces between words are
normalised away): `encode_with_bytes` counts, for each token of a text, the UTF-8 bytes of the text it covers
instead, from the tokenizer's offsets (token i covers the text from the end of token i-1 to its own end, the
first from the start, the last to the end), so a document's tokens together cover its bytes exactly.
Every source keeps those counts beside the ids of its held-out documents: text is encoded with them when read
(lm.py, documents.py), a TFDS document when indexed (tfds_documents.py), and bmjax-prepare-data writes them into
each shard record after the ids (shards.py), so the eval of any source sums the bytes of exactly the text its
scored targets cover.
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


def encode_with_bytes(tokenizer, text: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids, bytes each id covers) of `text`, both int32 [n], for a tokenizer file that reports offsets (the
    tokenizers library's: character offsets; SentencePiece's: byte offsets); None for any other."""
    if hasattr(tokenizer, "processor"):  # SentencePiece: pieces with byte offsets into the UTF-8 text
        pieces = tokenizer.processor.encode_as_proto(text).pieces
        ids = np.array([p.id for p in pieces], np.int32)
        ends = np.array([p.end for p in pieces], np.int64)
        total = len(text.encode("utf-8"))
    elif hasattr(tokenizer, "tokenizer"):
        encoding = tokenizer.tokenizer.encode(text, add_special_tokens=False)
        ids = np.asarray(encoding.ids, np.int32)
        char_ends = np.array([end for _, end in encoding.offsets], np.int64)
        # byte offset of each character boundary: the UTF-8 bytes of the characters before it
        char_bytes = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), np.uint32)
        widths = 1 + (char_bytes >= 0x80) + (char_bytes >= 0x800) + (char_bytes >= 0x10000)
        boundaries = np.concatenate([[0], np.cumsum(widths)])
        ends, total = boundaries[char_ends], int(boundaries[-1])
    else:
        return None
    if len(ids) == 0:
        return ids, np.zeros(0, np.int32)
    ends = np.maximum.accumulate(np.minimum(ends, total))
    ends[-1] = total  # the last token covers what follows it (trailing spaces)
    return ids, np.diff(np.concatenate([[0], ends])).astype(np.int32)
