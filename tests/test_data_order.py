"""The training order of documents (packed LM), windows (lm.py) and examples (classification): every
(seed, component, epoch) gets its own permutation, so seed replicates and epochs are independent orders rather
than one sequence of permutations shifted by an epoch or a component."""
import ml_collections
import numpy as np
import pytest

from bmjax.data import documents, lm, packed_lm

SIZES = (20, 20)  # documents of two components: equal, so a shared permutation would show across them
EPOCHS = 4


def component_epochs(seed: int) -> dict[tuple[int, int], tuple[int, ...]]:
    """{(component, epoch): the order its documents came in} in each component's training stream."""
    out = {}
    for c, n in enumerate(SIZES):
        part = documents.MemoryDocuments([np.array([1000 * c + i]) for i in range(n)], c)
        stream = packed_lm.train_documents(part, seed, c, 0, 1)
        order = [int(stream[k]["tokens"][0]) % 1000 for k in range(EPOCHS * n)]
        for epoch in range(EPOCHS):
            out[(c, epoch)] = tuple(order[epoch * n:(epoch + 1) * n])
            assert sorted(out[(c, epoch)]) == list(range(n))  # each epoch holds every document once
    return out


def test_no_two_seed_component_epochs_share_a_permutation():
    orders = {(seed, *key): order for seed in (0, 1, 2) for key, order in component_epochs(seed).items()}
    by_order = {}
    for key, order in orders.items():
        by_order.setdefault(order, []).append(key)
    # e.g. seed + component + epoch shuffles gave (0, 0, 1), (0, 1, 0) and (1, 0, 0) one permutation
    assert [keys for keys in by_order.values() if len(keys) > 1] == []


def test_the_same_seed_gives_the_same_order():
    assert component_epochs(5) == component_epochs(5)


def window_epochs(seed: int, tokens=200, seq_len=8, batch_size=4) -> list[tuple[int, ...]]:
    """lm.py's training windows by epoch: a window's start is its first input (the stream is 0, 1, 2, ...)."""
    ds = lm.window_batches(np.arange(tokens, dtype=np.uint16), seq_len, batch_size, seed, 0, 1)
    windows = tokens - seq_len
    starts = [int(s) for b in range(EPOCHS * windows // batch_size) for s in ds[b]["inputs"][:, 0]]
    return [tuple(starts[e * windows:(e + 1) * windows]) for e in range(EPOCHS)]


def test_lm_windows_of_each_seed_and_epoch_come_in_their_own_order():
    orders = [order for seed in (0, 1, 2) for order in window_epochs(seed)]
    assert all(sorted(order) == list(range(len(order))) for order in orders)
    assert len(set(orders)) == len(orders)


def test_classification_examples_of_each_seed_and_epoch_come_in_their_own_order(tmp_path):
    from bmjax.data import make_data

    rows = ["text,label"] + [f"example {i:03d},{i % 2}" for i in range(40)]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    orders = []
    for seed in (0, 1):
        config = ml_collections.ConfigDict(dict(
            data=dict(task="classification", source="csv", path=str(tmp_path / "train.csv"), eval_path="",
                      eval_fraction=0.25, tokenizer="byte", seq_len=16, batch_size=5, text_column="text",
                      text_pair_column="", label_column="label", labels="2"),
            train=dict(seed=seed, eval_steps=10), model=dict(vocab_size=320, max_len=16)))
        data = make_data(config, None)
        n = data.train_examples
        ids = [tuple(row) for _ in range(EPOCHS * n // 5) for row in next(data.train_iter)["input_ids"]]
        orders += [tuple(ids[e * n:(e + 1) * n]) for e in range(EPOCHS)]
    assert len(set(orders)) == len(orders)
    assert len({frozenset(o) for o in orders}) == 1  # every epoch holds the same examples
