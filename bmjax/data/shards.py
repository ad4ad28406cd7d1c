"""Token shards: ArrayRecord files of token ids, one record per document, and the metadata beside them.

A prepared directory holds `NAME-00000-of-00008.arrayrecord` ... and `metadata.json`:

    {"format": "bmjax-token-shards-1", "dtype": "uint16", "shards": [...file names...],
     "tokenizer": {"name": ..., "hash": ..., "vocab_size": ..., "eos_id": ...},
     "documents": D, "tokens": T, "bytes": B, "source": "..."}

A record is the document's ids as little-endian `dtype` (uint16 when the vocabulary fits, else uint32),
followed by the tokenizer's end-of-document id when it has one (byte: 258, a BPE tokenizer.json:
`<|endoftext|>`); a char vocabulary has none and is saved as `vocab.json` beside the shards. With a tokenizer
whose ids have no fixed bytes (WordPiece, SentencePiece: token_bytes.py) the record then holds, after the ids,
the UTF-8 bytes of text each id covers (`"token_bytes": "<u4"` in the metadata; the end-of-document id covers
none), so bits per byte is exact for whatever an eval scores of them. Documents
are laid out in order: shard i holds documents [i*D//n, (i+1)*D//n), so reading the shards in name
order gives the input's order back.

The tokenizer's identity is a hash of what decides its ids (the tokenizer file's bytes, the char list,
the name "byte"), so shards are never read with a tokenizer that would give their ids other meanings.
"""
import glob
import hashlib
import json
import os

import numpy as np

from bmjax.errors import ConfigError

FORMAT = "bmjax-token-shards-1"
METADATA_FILE = "metadata.json"
CHAR_VOCAB_FILE = "vocab.json"
BYTES_DTYPE = np.dtype("<u4")  # each token's bytes of text: a token may cover a long run of normalised-away text


def shard_name(prefix: str, index: int, count: int) -> str:
    return f"{prefix}-{index:05d}-of-{count:05d}.arrayrecord"


def record_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def encode_record(ids: np.ndarray, dtype: np.dtype, covered: np.ndarray | None = None) -> bytes:
    """A document's record: its ids as `dtype`, then (`covered`) each id's bytes of text as BYTES_DTYPE."""
    record = np.asarray(ids).astype(dtype).tobytes()
    return record if covered is None else record + np.asarray(covered).astype(BYTES_DTYPE).tobytes()


def decode_record(record: bytes, dtype: np.dtype, bytes_dtype: np.dtype | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """(ids int32, each id's bytes of text int32 or None) of a record written by encode_record."""
    if bytes_dtype is None:
        return np.frombuffer(record, dtype=dtype).astype(np.int32), None
    count = len(record) // (dtype.itemsize + bytes_dtype.itemsize)
    ids = np.frombuffer(record, dtype=dtype, count=count)
    covered = np.frombuffer(record, dtype=bytes_dtype, offset=count * dtype.itemsize)
    return ids.astype(np.int32), covered.astype(np.int32)


def tokenizer_identity(tokenizer) -> dict:
    """Name, content hash, vocabulary size and end-of-document id of a bmjax tokenizer."""
    if tokenizer.name == "byte":
        content = b"byte"
    elif tokenizer.name == "char":
        content = json.dumps(tokenizer.chars, ensure_ascii=False).encode("utf-8")
    else:  # a tokenizer file: its bytes decide the ids
        with open(tokenizer.path, "rb") as f:
            content = f.read()
    name = tokenizer.name if tokenizer.name in ("byte", "char") else os.path.basename(tokenizer.name)
    return {"name": name, "hash": hashlib.sha256(content).hexdigest()[:16],
            "vocab_size": int(tokenizer.vocab_size), "eos_id": tokenizer.eos_id}


def read_metadata(directory: str, key: str) -> dict:
    path = os.path.join(directory, METADATA_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
    except FileNotFoundError:
        raise ConfigError(key, f"no {METADATA_FILE} beside the shards in {directory} (write them with "
                               "bmjax-prepare-data)") from None
    except (OSError, ValueError) as e:
        raise ConfigError(key, f"cannot read {path}: {e}") from None
    if metadata.get("format") != FORMAT:
        raise ConfigError(key, f"{path} is not bmjax token-shard metadata (format {metadata.get('format')!r})")
    return metadata


def write_metadata(directory: str, metadata: dict) -> None:
    tmp = os.path.join(directory, f"{METADATA_FILE}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"format": FORMAT, **metadata}, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(directory, METADATA_FILE))


def match_shards(pattern: str, key: str) -> list[str]:
    """The files of `pattern` (a glob, or a directory of shards), sorted; ConfigError when none."""
    pattern = os.path.expanduser(pattern)
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, "*.arrayrecord")
    paths = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    if not paths:
        raise ConfigError(key, f"no shard files match {pattern!r}")
    return paths


def shard_metadata(paths: list[str], key: str) -> dict:
    """The metadata of the shards `paths` (all must lie in one prepared directory)."""
    directories = sorted({os.path.dirname(os.path.abspath(p)) for p in paths})
    if len(directories) > 1:
        raise ConfigError(key, f"matches shards in {len(directories)} directories ({', '.join(directories[:3])}); "
                               "use a mixture (data.mixture) to read several prepared sets")
    metadata = read_metadata(directories[0], key)
    unknown = [os.path.basename(p) for p in paths if os.path.basename(p) not in metadata.get("shards", ())]
    if unknown:
        raise ConfigError(key, f"{unknown[0]} is not listed in {os.path.join(directories[0], METADATA_FILE)}")
    return metadata


def check_tokenizer_matches(metadata: dict, tokenizer, directory: str, key: str = "data.tokenizer") -> None:
    """The config's tokenizer must be the one the shards were written with."""
    want, have = metadata["tokenizer"], tokenizer_identity(tokenizer)
    if want["hash"] != have["hash"] or want["vocab_size"] != have["vocab_size"]:
        raise ConfigError(key, f"{have['name']} (hash {have['hash']}, {have['vocab_size']} ids) is not the tokenizer "
                               f"the shards in {directory} were written with: {want['name']} (hash {want['hash']}, "
                               f"{want['vocab_size']} ids)")


class TokenShards:
    """Random access to the documents of some shards: `shards[i]` is document i's int32 ids, `shards.document(i)`
    (ids, each id's bytes of text or None where the shards hold no byte counts)."""

    def __init__(self, paths: list[str], metadata: dict):
        import grain

        self.paths = paths
        self.metadata = metadata
        self.dtype = np.dtype(metadata["dtype"])
        self.bytes_dtype = np.dtype(metadata["token_bytes"]) if metadata.get("token_bytes") else None
        self._source = grain.sources.ArrayRecordDataSource(paths)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.document(index)[0]

    def document(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        return decode_record(self._source[index], self.dtype, self.bytes_dtype)

    def __getstate__(self):  # grain's worker processes reopen the files rather than pickling readers
        return {"paths": self.paths, "metadata": self.metadata}

    def __setstate__(self, state):
        self.__init__(state["paths"], state["metadata"])
