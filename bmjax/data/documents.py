"""Sources of tokenised documents for the packed LM pipeline, and mixtures of them.

A component is one source of documents, given as a spec:
- `arrayrecord:GLOB`: prepared token shards (bmjax/data/shards.py); the shards' tokenizer must be the
  config's. Eval: `data.eval_path` (a glob) for a lone source, else the last `data.eval_fraction` of its
  documents (in shard order), which then never train.
- `tfds:NAME`: a TFDS dataset prepared as array_record, read with `tfds.data_source` (no TensorFlow, never
  downloaded); the text is `data.text_column` of `data.train_split` / `data.eval_split`, tokenised as read.
- `text:PATH`, `builtin`: the sources of bmjax/data/sources.py, tokenised once in memory. A text file's
  documents are its paragraphs: the file (after sources.py holds out its last data.eval_fraction of
  characters) is cut after each run of blank lines, each paragraph keeping the blank lines that end it
  (prepare.paragraphs), so they laid end to end are the file. builtin's documents are the stdlib's files.

`data.mixture` = "SPEC=WEIGHT;SPEC=WEIGHT;..." (weights > 0, normalised: each component's fraction of the
training tokens, mixing.py) mixes components; otherwise the
lone component is `data.source` with `data.path` / `data.tfds_name`. Every document is int32 ids ending with
the tokenizer's end-of-document id when it has one (prepared shards already hold it).
"""
import dataclasses
import logging
import os

import ml_collections
import numpy as np

from bmjax.data import prepare, shards, sources
from bmjax.data.tfds_documents import TfdsDocuments
from bmjax.data.token_bytes import encode_with_bytes
from bmjax.data.tokenizers import counts_covered_bytes
from bmjax.errors import ConfigError

KINDS = ("arrayrecord", "tfds", "text", "builtin")


@dataclasses.dataclass(frozen=True)
class Component:
    kind: str
    arg: str  # the glob, TFDS name or file; "" for builtin
    weight: float
    key: str  # the config key blamed for it

    @property
    def name(self) -> str:
        """Short name for metrics: kind and the file or dataset name."""
        if not self.arg:
            return self.kind
        path = self.arg.rstrip("/")
        if self.kind == "arrayrecord" and any(ch in os.path.basename(path) for ch in "*?["):
            path = os.path.dirname(path)  # a glob of shards: name the directory
        return f"{self.kind}:{os.path.basename(path)}"


def components(config) -> list[Component]:
    """The components `data.mixture` (or the lone `data.source`) names; ConfigError on a bad spec."""
    data = config.data
    mixture = data.get("mixture", "")
    if not mixture:
        arg = {"arrayrecord": data.path, "tfds": data.get("tfds_name", ""), "text": data.path}.get(data.source, "")
        key = "data.tfds_name" if data.source == "tfds" else "data.path"
        return [Component(data.source, arg, 1.0, key)]
    out = []
    for part in filter(None, (p.strip() for p in mixture.split(";"))):
        spec, eq, weight = part.rpartition("=")
        if not eq or not spec:
            raise ConfigError("data.mixture", f"{part!r} is not SPEC=WEIGHT (e.g. arrayrecord:web/*.arrayrecord=0.7)")
        try:
            weight = float(weight)
        except ValueError:
            raise ConfigError("data.mixture", f"{part!r}: weight {weight!r} is not a number") from None
        if not weight > 0:
            raise ConfigError("data.mixture", f"{part!r}: weight must be > 0, got {weight}")
        out.append(parse_spec(spec, weight, "data.mixture", part))
    if not out:
        raise ConfigError("data.mixture", "names no source")
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ConfigError("data.mixture", f"names a source twice ({', '.join(names)})")
    return out


def parse_spec(spec: str, weight: float, key: str, part: str) -> Component:
    """`arrayrecord:GLOB`, `tfds:NAME`, `text:PATH` or `builtin` as a Component; `part` (the spec's whole entry)
    is quoted in errors under `key`."""
    kind, _, arg = spec.partition(":")
    if kind not in KINDS:
        raise ConfigError(key, f"{part!r}: unknown source {kind!r}; expected one of {KINDS}")
    if kind != "builtin" and not arg:
        raise ConfigError(key, f"{part!r}: source {kind} needs a name ({kind}:...)")
    return Component(kind, arg, weight, key)


def check_spec_source(c: Component, tokenizer=None) -> None:
    """Cheap checks of a spec's component (a mixture's or an eval set's): a text file exists, is non-empty and
    UTF-8; a shard glob matches shards of `tokenizer` (when given). Reads no documents."""
    if c.kind == "text":
        sources.read_text(c.key, c.arg)
    elif c.kind == "arrayrecord" and tokenizer is not None:
        open_shards(c.arg, c.key, tokenizer)


# Keys whose components come from a spec: they hold out their own eval documents (data.eval_path is the lone
# source's).
SPEC_KEYS = ("data.mixture", "data.eval_sets")


def check_components(config) -> list[Component]:
    """Cheap checks (specs, files and shard globs exist, TFDS name set); reads no documents."""
    comps = components(config)
    for c in comps:
        if c.kind == "arrayrecord":
            if not c.arg and not config.data.get("prepare_from"):
                raise ConfigError(c.key, "is unset; source 'arrayrecord' needs a glob of token shards")
        elif c.kind == "tfds" and not c.arg:
            raise ConfigError(c.key, "is unset; source 'tfds' needs a TFDS dataset name")
        elif c.kind == "text" and c.key == "data.mixture":
            check_spec_source(c)
        elif c.kind in ("text", "builtin") and c.key != "data.mixture":
            sources.check_source_config(config)
    globs = [(c.arg, c.key) for c in comps if c.kind == "arrayrecord" and c.arg]
    if len(comps) == 1 and comps[0].kind == "arrayrecord" and config.data.get("eval_path"):
        globs.append((config.data.eval_path, "data.eval_path"))
    if globs and config.data.tokenizer != "char":  # char vocabularies come with the shards
        from bmjax.data.tokenizers import build_tokenizer

        tokenizer = build_tokenizer(config, None)
        for pattern, key in globs:
            open_shards(pattern, key, tokenizer)
    return comps


class ShardDocuments:
    """Documents [start, stop) of token shards, as {"tokens", "source"}; with `with_bytes` (shards that hold each
    token's bytes of text: shards.py) also "bytes"."""

    def __init__(self, token_shards: shards.TokenShards, start: int, stop: int, source: int,
                 with_bytes: bool = False):
        self.shards, self.start, self.stop, self.source = token_shards, start, stop, source
        self.counts_bytes = with_bytes and token_shards.bytes_dtype is not None

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> dict:
        tokens, covered = self.shards.document(self.start + index)
        return {"tokens": tokens, "source": self.source, **({"bytes": covered} if self.counts_bytes else {})}


class MemoryDocuments:
    """Tokenised documents in memory; with `byte_lists`, each token's bytes of text too (token_bytes.py)."""

    def __init__(self, token_lists: list[np.ndarray], source: int, byte_lists: list[np.ndarray] | None = None):
        self.docs, self.source, self.byte_lists = token_lists, source, byte_lists
        self.counts_bytes = byte_lists is not None

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, index: int) -> dict:
        doc = {"tokens": self.docs[index], "source": self.source}
        if self.byte_lists is not None:
            doc["bytes"] = self.byte_lists[index]
        return doc


def with_eos(tokenizer, ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int32)
    return ids if tokenizer.eos_id is None else np.append(ids, np.int32(tokenizer.eos_id))


def open_component(config, c: Component, index: int, tokenizer, shard_glob: str = ""):
    """(train documents, eval documents) of component `c`, both random-access sequences of documents. Where the
    tokenizer's ids have no fixed bytes, the eval documents carry each token's bytes of text ("bytes",
    `counts_bytes`; shards prepared with them: shards.py)."""
    data = config.data
    fraction = data.get("eval_fraction", 0.1)
    if c.kind == "arrayrecord":
        train = open_shards(shard_glob or c.arg, c.key, tokenizer)
        if c.key not in SPEC_KEYS and data.get("eval_path"):
            held_out = open_shards(data.eval_path, "data.eval_path", tokenizer)
            return (ShardDocuments(train, 0, len(train), index),
                    ShardDocuments(held_out, 0, len(held_out), index, with_bytes=True))
        cut = int(len(train) * (1.0 - fraction))
        if cut < 1 or cut >= len(train):
            raise ConfigError(c.key, f"{len(train)} documents are too few to hold out data.eval_fraction={fraction} "
                                     "(set data.eval_path)")
        return ShardDocuments(train, 0, cut, index), ShardDocuments(train, cut, len(train), index, with_bytes=True)
    if c.kind == "tfds":
        field, data_dir = data.get("text_column", "text"), data.get("tfds_data_dir", "")
        parts = []
        for split, with_bytes in ((data.get("train_split", "train"), False),
                                  (data.get("eval_split", "validation"), counts_covered_bytes(tokenizer))):
            parts.append(TfdsDocuments(c.arg, split, field, data_dir, c.key, tokenizer, index, with_bytes))
            if len(parts[-1]) == 0:
                raise ConfigError(c.key, f"TFDS {c.arg!r} split {split!r} is empty")
        return tuple(parts)
    # text / builtin: the corpus loader of sources.py, on the keys it reads, naming this component
    eval_path = data.get("eval_path", "") if c.key not in SPEC_KEYS else ""
    sub = ml_collections.ConfigDict({"data": {"source": c.kind, "path": c.arg, "eval_path": eval_path,
                                              "eval_fraction": fraction}})
    corpus = sources.load_corpus(sub)

    def encode(docs, key):
        try:
            return [with_eos(tokenizer, tokenizer.encode(d)) for d in docs]
        except ConfigError as e:
            raise ConfigError(key, e.message) from None

    if c.kind == "text":  # a text file's documents are its paragraphs (prepare.paragraphs)
        corpus = dataclasses.replace(corpus, train=_paragraphs(corpus.train), eval=_paragraphs(corpus.eval))
    held_out = encode_counting_bytes(tokenizer, corpus.eval, index)  # bits per byte without fixed bytes per id
    return (MemoryDocuments(encode(corpus.train, corpus.train_key), index),
            held_out or MemoryDocuments(encode(corpus.eval, corpus.eval_key), index))


def encode_counting_bytes(tokenizer, texts, source: int) -> MemoryDocuments | None:
    """`texts` tokenised with each token's bytes of text (the end-of-document id none), where the tokenizer's ids
    have no fixed bytes but it reports offsets (WordPiece, SentencePiece: token_bytes.py); else None."""
    if not counts_covered_bytes(tokenizer):
        return None
    tokens, counts = [], []
    for text in texts:
        ids, covered = encode_with_bytes(tokenizer, text)
        tokens.append(with_eos(tokenizer, ids))
        counts.append(np.pad(covered, (0, len(tokens[-1]) - len(ids))))
    return MemoryDocuments(tokens, source, counts)


def _paragraphs(texts: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p for text in texts for p in prepare.paragraphs(text))


def open_shards(pattern: str, key: str, tokenizer) -> shards.TokenShards:
    paths = shards.match_shards(pattern, key)
    metadata = shards.shard_metadata(paths, key)
    directory = os.path.dirname(os.path.abspath(paths[0]))
    shards.check_tokenizer_matches(metadata, tokenizer, directory)
    if not metadata.get("token_bytes") and counts_covered_bytes(tokenizer):
        logging.warning("the shards in %s hold no byte counts (prepared by an older bmjax-prepare-data): their evals "
                        "report no bits_per_byte until they are prepared again", directory)
    return shards.TokenShards(paths, metadata)


# Tasks that hold their corpus as text in memory (BERT's MLM/NSP) read the new sources through these.
TEXT_TASK_SOURCES = ("arrayrecord", "tfds")


def check_text_corpus_config(config) -> None:
    """sources.check_source_config, extended to a lone arrayrecord or tfds source (no mixtures)."""
    data = config.data
    if data.get("mixture"):
        raise ConfigError("data.mixture", f"task {data.get('task')!r} reads one source; mixtures are for task lm")
    if data.source in TEXT_TASK_SOURCES:
        check_components(config)
    else:
        sources.check_source_config(config)


def load_text_corpus(config, tokenizer) -> sources.Corpus:
    """The source's documents as text: shards are decoded (end-of-document ids dropped), TFDS read as text."""
    data = config.data
    if data.source not in TEXT_TASK_SOURCES:
        return sources.load_corpus(config)
    c = components(config)[0]
    train, held_out = open_component(config, c, 0, tokenizer)
    eos = tokenizer.eos_id

    def texts(part):
        if isinstance(part, TfdsDocuments):
            return tuple(part.read(0, len(part)))
        docs = (part[i]["tokens"] for i in range(len(part)))
        return tuple(tokenizer.decode(d[:-1] if eos is not None and len(d) and d[-1] == eos else d) for d in docs)

    train_texts, eval_texts = texts(train), texts(held_out)
    eval_key = "data.eval_path" if data.get("eval_path") and c.kind == "arrayrecord" else c.key
    return sources.Corpus(train_texts, eval_texts, train_texts + eval_texts, c.key, eval_key)
