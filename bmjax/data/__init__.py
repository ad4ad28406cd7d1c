"""Input pipelines. Nothing here knows about models; batches are dicts of numpy arrays.

    tokenizer = build_tokenizer(config, workdir)
    data = make_lm_data(config, workdir, process_index=jax.process_index(),
                        process_count=jax.process_count())
    batch = next(data.train_iter)          # {"inputs", "targets"}: int32 [batch_size // P, seq_len]
    for batch in data.eval_batches(): ...  # the same train.eval_steps batches every call

Task lm with `data.source` arrayrecord (token shards from bmjax-prepare-data) or tfds, a `data.mixture`, or
`data.packing=segments` goes through packed_lm.py (sources: documents.py, packing: packing.py, shards:
shards.py); its batches in segments mode add "segment_ids" and "positions" int32 [b, seq_len], and its data
object adds `source_tokens()` (target tokens delivered per source, this process).

`check_data_config(config)` validates the data keys and files without reading the corpus.
`make_data` / `check_data_config` pick the pipeline of `data.task`: lm (lm.py), mlm (BERT pretraining,
mlm.py) or classification (classification.py); each returns an object with tokenizer, train_iter and
eval_batches.
"""
from bmjax.data import eval_sets, sources
from bmjax.data.classification import ClassificationData, check_classification_config, make_classification_data
from bmjax.data.lm import LMData, make_lm_data
from bmjax.data.lm import check_data_config as check_lm_config
from bmjax.data.mlm import MLMData, check_mlm_config, make_mlm_data
from bmjax.data.packed_lm import PackedLMData
from bmjax.data.tokenizer_files import FileTokenizer
from bmjax.data.tokenizers import ByteTokenizer, CharTokenizer, Tokenizer, build_tokenizer
from bmjax.errors import ConfigError

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


def make_data(config, workdir: str | None, *, process_index: int = 0, process_count: int = 1):
    """The input pipeline of `data.task`: LMData, MLMData or ClassificationData."""
    return _pipeline(config)[1](config, workdir, process_index=process_index, process_count=process_count)


__all__ = [
    "ByteTokenizer",
    "CharTokenizer",
    "ClassificationData",
    "FileTokenizer",
    "LMData",
    "MLMData",
    "PackedLMData",
    "Tokenizer",
    "build_tokenizer",
    "check_data_config",
    "make_classification_data",
    "make_data",
    "make_lm_data",
    "make_mlm_data",
]
