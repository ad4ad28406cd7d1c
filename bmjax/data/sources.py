"""Where the text comes from: a UTF-8 file (`text`) or the running Python's standard library (`builtin`).

A source yields a `Corpus`: the training documents, the eval documents, and the documents whose
characters define a `char` vocabulary. Splitting happens here, on text, so every tokenizer sees the
same split.

- `text`: `data.path` is one document. With `data.eval_path` set, that file is the eval split and
  all of `data.path` trains; otherwise the LAST `data.eval_fraction` of `data.path` (in characters)
  is held out, exactly as nanoGPT's shakespeare_char prepare script: train = text[:int(n * 0.9)].
- `builtin`: every `.py` file under `sysconfig.get_paths()["stdlib"]` (skipping `site-packages`,
  `dist-packages` and `__pycache__`), one document per file, in sorted relative-path order. A file
  goes to eval when `crc32(relative_path) / 2**32 < data.eval_fraction`, so the split is by file,
  the same on every machine with the same Python, and adding a file never moves another one.
  Files are decoded as UTF-8 with errors="replace" (a few test files are deliberately not UTF-8).
  With `data.eval_path` set, every file trains and that file is the eval split.

The pretraining sources (token shards `arrayrecord`, `tfds`) and mixtures are in documents.py; they reuse
these two for `text:` and `builtin` components.

Reads are cached in memory (keyed by path, size and mtime), so building a tokenizer and then the
pipeline reads each file once.
"""
import dataclasses
import functools
import os
import sysconfig
import zlib

from bmjax.errors import ConfigError

SOURCES = ("builtin", "text")
_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Documents of each split, and the config key that names each split's text (blamed for it)."""

    train: tuple[str, ...]
    eval: tuple[str, ...]
    vocab_docs: tuple[str, ...]  # the documents a `char` vocabulary is built from
    train_key: str
    eval_key: str


def check_source_config(config) -> None:
    """Cheap checks (enums, files exist and are non-empty); reads no corpus."""
    data = config.data
    if data.source not in SOURCES:
        raise ConfigError("data.source", f"unknown source {data.source!r}; expected one of {SOURCES}")
    if data.source == "text":
        if not data.path:
            raise ConfigError("data.path", "is unset; source 'text' needs a UTF-8 text file")
        _check_file("data.path", data.path)
    if data.get("eval_path"):
        _check_file("data.eval_path", data.eval_path)
    if not data.get("eval_path"):  # the fraction splits only when no eval file is given
        fraction = data.get("eval_fraction", 0.1)
        if not 0.0 < fraction < 1.0:
            raise ConfigError("data.eval_fraction", f"must be in (0, 1), got {fraction}")


def _check_file(key: str, path: str) -> None:
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise ConfigError(key, f"no such file: {path}")
    if os.path.getsize(path) == 0:
        raise ConfigError(key, f"file is empty: {path}")


def load_corpus(config) -> Corpus:
    check_source_config(config)
    data = config.data
    fraction = data.get("eval_fraction", 0.1)
    if data.source == "text":
        text = read_text("data.path", data.path)
        if data.get("eval_path"):
            eval_text = read_text("data.eval_path", data.eval_path)
            return Corpus((text,), (eval_text,), (text,), "data.path", "data.eval_path")
        cut = int(len(text) * (1.0 - fraction))
        return Corpus((text[:cut],), (text[cut:],), (text,), "data.path", "data.eval_fraction")
    # builtin
    docs = builtin_documents()
    if data.get("eval_path"):
        everything = tuple(text for _, text in docs)
        eval_docs = (read_text("data.eval_path", data.eval_path),)
        return Corpus(everything, eval_docs, everything, "data.source", "data.eval_path")
    train = tuple(text for rel, text in docs if not is_builtin_eval_file(rel, fraction))
    held_out = tuple(text for rel, text in docs if is_builtin_eval_file(rel, fraction))
    return Corpus(train, held_out, train + held_out, "data.source", "data.eval_fraction")


def read_text(key: str, path: str) -> str:
    """The whole file as str; a missing, empty or non-UTF-8 file is a ConfigError naming `key`."""
    _check_file(key, path)
    path = os.path.abspath(os.path.expanduser(path))
    stat = os.stat(path)
    try:
        return _read_text_cached(path, stat.st_size, stat.st_mtime_ns)
    except UnicodeDecodeError as e:
        raise ConfigError(key, f"{path} is not UTF-8 text (byte {e.start}: {e.reason})") from None


@functools.lru_cache(maxsize=8)
def _read_text_cached(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # only part of the cache key: a changed file is read again
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


def stdlib_dir() -> str:
    return sysconfig.get_paths()["stdlib"]


def is_builtin_eval_file(relative_path: str, eval_fraction: float) -> bool:
    """A stable hash of the path decides, so the split never depends on which other files exist."""
    return zlib.crc32(relative_path.encode("utf-8")) / 2**32 < eval_fraction


def builtin_documents() -> tuple[tuple[str, str], ...]:
    """(relative path, text) for every standard-library `.py` file, sorted by relative path."""
    return _builtin_documents(stdlib_dir())


@functools.lru_cache(maxsize=2)
def _builtin_documents(root: str) -> tuple[tuple[str, str], ...]:
    relative = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        for name in filenames:
            if name.endswith(".py"):
                relative.append(os.path.relpath(os.path.join(dirpath, name), root))
    # Sort on "/"-separated paths so the order is the same on every OS.
    relative.sort(key=lambda rel: rel.replace(os.sep, "/"))
    docs = []
    for rel in relative:
        with open(os.path.join(root, rel), "rb") as f:
            docs.append((rel.replace(os.sep, "/"), f.read().decode("utf-8", errors="replace")))
    if not docs:
        raise ConfigError("data.source", f"'builtin' found no .py files under {root}")
    return tuple(docs)
