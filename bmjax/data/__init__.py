"""Input pipelines. Nothing here knows about models; batches are dicts of numpy arrays.

    tokenizer = build_tokenizer(config, workdir)
    data = make_lm_data(config, workdir, process_index=jax.process_index(),
                        process_count=jax.process_count())
    batch = next(data.train_iter)          # {"inputs", "targets"}: int32 [batch_size // P, seq_len]
    for batch in data.eval_batches(): ...  # the same train.eval_steps batches every call

Task lm with `data.source` arrayrecord (token shards from bmjax-prepare-data) or tfds, a `data.mixture`, or
`data.packing=segments` goes through packed_lm.py (sources: documents.py, packing: packing.py, shards:
shards.py); its batches in segments mode add "segment_ids" and "positions" int32 [b, seq_len], and its data
object counts `source_tokens()` (target tokens delivered per source, this process).

`check_data_config(config)` validates the data keys and files without reading the corpus.
`make_data` / `check_data_config` pick the pipeline of `data.task`: lm (lm.py), mlm (BERT pretraining,
mlm.py) or classification (classification.py); each returns a `Data` (pipeline.py: tokenizer, train_iter,
eval_batches(), eval_parts(), eval_sets(), source_tokens()), which is all the trainer reads of it.
"""
from bmjax.data import eval_sets, sources
from bmjax.data.classification import ClassificationData, check_classification_config, make_classification_data
from bmjax.data.lm import LMData, make_lm_data
from bmjax.data.lm import check_data_config as check_lm_config
from bmjax.data.mlm import MLMData, check_mlm_config, make_mlm_data
from bmjax.data.packed_lm import PackedLMData
from bmjax.data.pipeline import Data, OneSourceData
from bmjax.data.tokenizer_files import FileTokenizer
from bmjax.data.tokenizers import ByteTokenizer, CharTokenizer, Tokenizer, build_tokenizer, save_char_vocab
from bmjax.errors import ConfigError

# An unset model.vocab_size is the tokenizer's ids rounded up to a multiple of this, as MaxText and levanter pad
# vocabularies (matmul tiles): the byte tokenizer's 260 ids give 320.
VOCAB_MULTIPLE = 64

PIPELINES = {  # data.task -> (cheap config check, data builder)
    "lm": (check_lm_config, make_lm_data),
    "mlm": (check_mlm_config, make_mlm_data),
    "classification": (check_classification_config, make_classification_data),
}


def _pipeline(config):
    task = config.data.get("task", "lm")
    if task not in PIPELINES:
        raise ConfigError("data.task", f"got {task!r}; allowed: {', '.join(PIPELINES)}")
    return PIPELINES[task]


def check_data_config(config) -> None:
    """The cheap checks of `data.task`'s pipeline; raises ConfigError."""
    _pipeline(config)[0](config)
    if config.data.get("task", "lm") != "lm":  # the lm pipelines check their eval sets themselves
        eval_sets.check_eval_sets(config)


def model_vocab_size(config, tokenizer: Tokenizer | None = None) -> int:
    """The model's vocabulary size: model.vocab_size where set, else the ids of the config's tokenizer
    (`tokenizer`, or the one `data.tokenizer` names, built without a workdir) rounded up to VOCAB_MULTIPLE.
    Every count of a config (the trainer, its summary, the sweep planner) resolves it here."""
    if config.model.get("vocab_size") is not None:
        return int(config.model.vocab_size)
    tokenizer = build_tokenizer(config, None) if tokenizer is None else tokenizer
    return -(-tokenizer.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def with_model_vocab_size(config, tokenizer: Tokenizer | None = None):
    """`config` with model.vocab_size resolved (`model_vocab_size`): itself where set, else a copy."""
    if config.model.get("vocab_size") is not None:
        return config
    vocab_size = model_vocab_size(config, tokenizer)
    config = config.copy_and_resolve_references()
    config.model.vocab_size = vocab_size
    return config


def make_data(config, workdir: str | None, *, tokenizer: Tokenizer | None = None, process_index: int = 0,
              process_count: int = 1) -> Data:
    """The input pipeline of `data.task`: LMData, PackedLMData, MLMData or ClassificationData. `tokenizer`: the
    run's, already built and checked (bmjax.validate's); None builds the config's (build_tokenizer)."""
    if tokenizer is not None:
        save_char_vocab(tokenizer, workdir)
    return _pipeline(config)[1](config, workdir, tokenizer=tokenizer, process_index=process_index,
                                process_count=process_count)


__all__ = [
    "ByteTokenizer",
    "CharTokenizer",
    "ClassificationData",
    "Data",
    "FileTokenizer",
    "LMData",
    "MLMData",
    "OneSourceData",
    "PackedLMData",
    "Tokenizer",
    "build_tokenizer",
    "check_data_config",
    "make_classification_data",
    "make_data",
    "make_lm_data",
    "make_mlm_data",
    "model_vocab_size",
    "with_model_vocab_size",
]
