"""Named eval sets (`data.eval_sets`): held-out domains a language model is scored on at every eval, beside its
own held-out split, as Paloma, OLMo and Marin report per-domain bits per byte.

    data.eval_sets = "NAME=SOURCE_SPEC;NAME=SOURCE_SPEC"
    e.g. "stdlib=builtin;shakespeare=text:data/tinyshakespeare.txt"

SOURCE_SPEC is a mixture component's spec (documents.py: `arrayrecord:GLOB`, `tfds:NAME`, `text:PATH`,
`builtin`). A set is that source's held-out documents, held out as a mixture component holds them out (the last
`data.eval_fraction` of a text file or of the shards' documents, builtin's held-out files, TFDS's
`data.eval_split`), so a set may name a training source without scoring what trained. Each set is packed on its
own with the run's `data.packing` (segments keeps every document's boundaries: no target is scored with another
document's context) in its own order, and scored like the held-out split (packed_lm.eval_component_batches): one
deterministic pass over all of it with `train.eval_steps=0`, else its first `train.eval_steps` batches. Its
figures are the eval row's `NAME/loss` and `NAME/bits_per_byte` (`eval/NAME/...` in W&B, TensorBoard,
summary.json and a sweep's results.csv).

NAME is letters, digits, `_`, `-` and `.`, unique, and not the name of one of the run's training sources (whose
per-source figures use `SOURCE/...`).
"""
import re

from bmjax.data import documents
from bmjax.errors import ConfigError

KEY = "data.eval_sets"
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def parse_eval_sets(config) -> list[tuple[str, documents.Component]]:
    """(name, component) of every set `data.eval_sets` names, in its order; ConfigError on a bad spec."""
    spec = config.data.get("eval_sets", "")
    sets = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, eq, source = part.partition("=")
        name, source = name.strip(), source.strip()
        if not eq or not source:
            raise ConfigError(KEY, f"{part!r} is not NAME=SOURCE_SPEC (e.g. shakespeare=text:data/tinyshakespeare.txt)")
        if not _NAME.fullmatch(name):
            raise ConfigError(KEY, f"{part!r}: the name {name!r} must be letters, digits, '_', '-' or '.'")
        sets.append((name, documents.parse_spec(source, 1.0, KEY, part)))
    names = [name for name, _ in sets]
    if len(set(names)) != len(names):
        raise ConfigError(KEY, f"names a set twice ({', '.join(names)})")
    return sets


def check_eval_sets(config) -> None:
    """Cheap checks: the spec parses, names are unique and no training source's, every text file exists and is
    UTF-8, every shard glob matches shards of the run's tokenizer. Reads no documents."""
    sets = parse_eval_sets(config)
    if not sets:
        return
    if config.data.get("task", "lm") != "lm":
        raise ConfigError(KEY, f"eval sets are scored by task lm, not {config.data.task!r}")
    training = {c.name for c in documents.components(config)}
    for name, c in sets:
        if name in training:
            raise ConfigError(KEY, f"{name!r} is the name of a training source (its figures are {name}/...); "
                                   "choose another name")
    tokenizer = None
    if any(c.kind == "arrayrecord" for _, c in sets):
        from bmjax.data.tokenizers import build_tokenizer

        if config.data.tokenizer == "char":
            raise ConfigError(KEY, "arrayrecord eval sets need the run's tokenizer ids; a char vocabulary is the "
                                   "training text's")
        tokenizer = build_tokenizer(config, None)
    for _, c in sets:
        documents.check_spec_source(c, tokenizer)


def open_eval_sets(config, tokenizer, batches_of):
    """A function returning [(name, batches_of(the set's held-out documents))], fresh batches each call:
    `batches_of` is the pipeline's eval batcher (packed_lm.eval_component_batches with the run's sizes).

    The sets' documents are read and tokenised here, once; a character outside a char vocabulary, or a set
    without held-out documents, is a ConfigError on data.eval_sets."""
    opened = []
    for index, (name, c) in enumerate(parse_eval_sets(config)):
        try:
            _, held_out = documents.open_component(config, c, index, tokenizer)
        except ConfigError as e:
            raise ConfigError(KEY, f"{name}: {e.message}") from None
        if len(held_out) == 0:
            raise ConfigError(KEY, f"{name}: {c.name} has no held-out documents")
        opened.append((name, held_out))
    return lambda: [(name, batches_of(part)) for name, part in opened]
