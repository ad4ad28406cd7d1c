"""The one TFDS reader: a split's text field, read by index from a dataset prepared as array_record with
`tfds.data_source` (no TensorFlow, never downloaded).

bmjax-prepare-data reads its texts (`read(start, stop)`, in worker processes that open the dataset themselves);
the packed LM pipeline reads its documents tokenised (`docs[i]`: {"tokens", "source"}, the end-of-document id
appended, and with `with_bytes` each token's bytes of text as "bytes", for bits per byte where ids have no fixed
bytes: token_bytes.py).
"""
import os

import numpy as np

from bmjax.data.token_bytes import encode_with_bytes
from bmjax.errors import ConfigError


class TfdsDocuments:
    """The text field of a TFDS split by index; tokenised by `tokenizer` when indexed."""

    def __init__(self, name: str, split: str, field: str = "text", data_dir: str = "", key: str = "--tfds_name",
                 tokenizer=None, source: int = 0, with_bytes: bool = False):
        self.name, self.split, self.field, self.data_dir, self.key = name, split, field, data_dir, key
        self.tokenizer, self.source, self.counts_bytes = tokenizer, source, with_bytes
        self._source = None

    def dataset(self):
        if self._source is None:
            self._source = open_tfds(self.name, self.split, self.data_dir, self.key)
        return self._source

    def __len__(self) -> int:
        return len(self.dataset())

    def read(self, start: int, stop: int) -> list[str]:
        """The texts of records [start, stop)."""
        return [tfds_text(self.dataset()[i], self.field, self.key) for i in range(start, stop)]

    def __getitem__(self, index: int) -> dict:
        (text,) = self.read(index, index + 1)
        eos = [] if self.tokenizer.eos_id is None else [self.tokenizer.eos_id]
        if not self.counts_bytes:
            return {"tokens": np.append(self.tokenizer.encode(text), eos).astype(np.int32), "source": self.source}
        ids, covered = encode_with_bytes(self.tokenizer, text)
        return {"tokens": np.append(ids, eos).astype(np.int32), "source": self.source,
                "bytes": np.append(covered, [0] * len(eos)).astype(np.int32)}

    def __getstate__(self):  # worker processes open the dataset again
        return {**self.__dict__, "_source": None}


def open_tfds(name: str, split: str, data_dir: str, key: str):
    """`tfds.data_source` of a prepared dataset; never downloads (an unprepared one is a ConfigError)."""
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(name, split=split, data_dir=os.path.expanduser(data_dir) or None, download=False)
    except Exception as e:  # tfds raises many types: not registered, not prepared, unknown split
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(key, f"cannot open TFDS {name!r} split {split!r} (prepared as array_record, nothing is "
                               f"downloaded): {message}") from None


def tfds_text(record, field: str, key: str) -> str:
    try:
        value = record[field]
    except (KeyError, TypeError):
        raise ConfigError(key, f"the TFDS records have no field {field!r}") from None
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
