"""Training order: a dataset repeated forever, each epoch in its own permutation.

Epoch e of component c under seed s is permuted by grain's index shuffle (a Feistel network over the indices:
O(1) per element, nothing stored) keyed by a 32-bit seed derived from the triple (s, c, e) with numpy's
SeedSequence, which hashes the whole triple: the analogue of fold_in(fold_in(key(s), c), e). Distinct triples
get unrelated permutations, unlike grain's own `shuffle(seed).repeat()`, which keys epoch e with seed + e, so
that seed 1's epoch 0 was seed 0's epoch 1 (and component c + 1's epoch e component c's epoch e + 1).
"""
import functools
import sys

import grain
import numpy as np

ROUNDS = 4  # grain's shuffle uses 4 rounds of its Feistel network


@functools.lru_cache(maxsize=4096)
def epoch_seed(seed: int, component: int, epoch: int) -> int:
    """The 32-bit index-shuffle seed of one (seed, component, epoch)."""
    return int(np.random.SeedSequence((seed, component, epoch)).generate_state(1, np.uint32)[0])


class EpochShuffleMapDataset(grain.MapDataset):
    """Infinite: element k is the parent's element perm_e(k mod n), e = k // n, perm_e keyed by
    epoch_seed(seed, component, e)."""

    def __init__(self, parent: grain.MapDataset, seed: int, component: int = 0):
        super().__init__(parent)
        if len(parent) == 0:
            raise ValueError("EpochShuffleMapDataset needs a non-empty parent")
        self.seed, self.component = int(seed), int(component)

    def __len__(self) -> int:
        return sys.maxsize

    def __str__(self) -> str:
        return f"EpochShuffleMapDataset(seed={self.seed}, component={self.component})"

    def _index(self, index: int) -> int:
        n = len(self._parent)
        epoch, position = divmod(int(index), n)
        if n == 1:
            return 0
        return int(grain.experimental.index_shuffle(position, max_index=n - 1,
                                                    seed=epoch_seed(self.seed, self.component, epoch),
                                                    rounds=ROUNDS))

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self._index(index)]

