"""Mixing sources by tokens: rows packed from each source alone, drawn so that each source's share of the
real (scored) target tokens follows its weight.

Each row comes whole from one source (packing.pack over that source's documents), with "source" int32 [L]
(source + 1 on a real target, 0 on padding). The next row is always taken from the source furthest behind
its share: the lowest delivered_i / w_i (ties to the first). No randomness: the same rows on every run, and
after any number of rows each source's real tokens are within one row of w_i / sum(w) of the total, so the
weights mean fractions of training tokens, as MaxText's, levanter's and Marin's mixture weights do, whatever
the sources' document lengths or packing's padding. The iterator's state (parents' states and the tokens
each delivered) resumes the exact sequence.
"""
import grain
import numpy as np


class TokenMixIterDataset(grain.IterDataset):
    def __init__(self, parents: list[grain.IterDataset], weights: list[float]):
        super().__init__(parents)
        self.weights = np.asarray(weights, np.float64) / np.sum(weights)

    def __iter__(self):
        return _TokenMixIterator([p.__iter__() for p in self._parents], self.weights)

    def __str__(self) -> str:
        return f"TokenMixIterDataset(weights={self.weights.tolist()})"


class _TokenMixIterator(grain.DatasetIterator):
    def __init__(self, parents: list[grain.DatasetIterator], weights: np.ndarray):
        super().__init__(parents)
        self.weights = weights
        self.delivered = np.zeros(len(parents), np.int64)  # real target tokens each source gave

    def __next__(self) -> dict[str, np.ndarray]:
        source = int(np.argmin(self.delivered / self.weights))
        row = next(self._parents[source])
        self.delivered[source] += int(np.count_nonzero(row["source"]))
        return row

    def get_state(self) -> dict:
        return {"parents": [p.get_state() for p in self._parents], "delivered": self.delivered.tolist()}

    def set_state(self, state: dict) -> None:
        for parent, parent_state in zip(self._parents, state["parents"]):
            parent.set_state(parent_state)
        self.delivered = np.asarray(state["delivered"], np.int64)
