"""Input pipelines. Nothing here knows about models; batches are dicts of numpy arrays.

    tokenizer = build_tokenizer(config, workdir)
    data = make_lm_data(config, workdir, process_index=jax.process_index(),
                        process_count=jax.process_count())
    batch = next(data.train_iter)          # {"inputs", "targets"}: int32 [batch_size // P, seq_len]
    for batch in data.eval_batches(): ...  # the same train.eval_steps batches every call

`check_data_config(config)` validates the data keys and files without reading the corpus.
"""
from bmjax.data import sources
from bmjax.data.lm import LMData, check_data_config, make_lm_data
from bmjax.data.tokenizers import ByteTokenizer, CharTokenizer, Tokenizer, build_tokenizer


__all__ = [
    "ByteTokenizer",
    "CharTokenizer",
    "LMData",
    "Tokenizer",
    "build_tokenizer",
    "check_data_config",
    "make_lm_data",
]
