"""`Data`: what every input pipeline gives the trainer (LMData, PackedLMData, MLMData, ClassificationData).

    data.tokenizer          the run's Tokenizer
    data.train_iter         infinite iterator of batches (dicts of numpy arrays); get_state()/set_state()
    data.eval_batches()     a fresh pass over the held-out batches (the same every call)
    data.eval_parts()       [(source name, its batches)]: the held-out batches source by source
    data.eval_sets()        [(name, its batches)]: the named eval sets of data.eval_sets, scored on their own
    data.source_tokens()    {source: target tokens delivered to this process so far}, or None for a pipeline
                            without padding or sources (every position of every batch is a real token)

The pipelines are dataclasses whose fields supply these; the defaults for a pipeline of one source come from
`OneSourceData` (its held-out set is one part, no eval sets, no per-source counts).
"""
from typing import Callable, Iterator

import numpy as np

from bmjax.data.tokenizers import Tokenizer

Batch = dict[str, np.ndarray]


class Data:
    """The interface, as annotations only: the pipelines' dataclass fields (or methods) fill it in."""
    tokenizer: Tokenizer
    train_iter: Iterator[Batch]
    eval_batches: Callable[[], Iterator[Batch]]
    eval_parts: Callable[[], list[tuple[str, Iterator[Batch]]]]
    eval_sets: Callable[[], list[tuple[str, Iterator[Batch]]]]
    source_tokens: Callable[[], dict[str, int] | None]


class OneSourceData(Data):
    """The defaults of a pipeline of one source."""

    def eval_parts(self) -> list[tuple[str, Iterator[Batch]]]:
        return [("", self.eval_batches())]

    def eval_sets(self) -> list[tuple[str, Iterator[Batch]]]:
        return []

    def source_tokens(self) -> None:
        return None
