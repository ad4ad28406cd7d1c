"""Causal-LM packing (bmjax/data/packing.py): concat keeps the token stream, segments keeps documents apart."""
import collections

import grain
import numpy as np
import pytest

from bmjax.data import packing
from bmjax.errors import ConfigError

SEQ_LEN = 8


def random_documents(count=60, seed=0, longest=30):
    """Documents of 1..longest tokens (some longer than a row), each from source 0 or 1."""
    rng = np.random.default_rng(seed)
    return [{"tokens": rng.integers(1, 1000, size=int(rng.integers(1, longest))).astype(np.int32), "source": i % 2}
            for i in range(count)]


def stream_of(docs):
    return grain.MapDataset.source(docs).to_iter_dataset()


def test_concat_windows_lay_the_token_stream_end_to_end():
    docs = random_documents()
    windows = list(packing.pack(stream_of(docs), "concat", SEQ_LEN, rows=4))
    stream = np.concatenate([d["tokens"] for d in docs])
    assert len(windows) == (len(stream) - 1) // SEQ_LEN  # every full window, the partial last one dropped
    inputs = np.concatenate([w["inputs"] for w in windows])
    targets = np.concatenate([w["targets"] for w in windows])
    np.testing.assert_array_equal(inputs, stream[:len(inputs)])
    np.testing.assert_array_equal(targets, stream[1:len(inputs) + 1])
    # each token is labelled with the source of the document it came from (+1)
    sources = np.concatenate([np.full(len(d["tokens"]), d["source"] + 1) for d in docs])
    np.testing.assert_array_equal(np.concatenate([w["source"] for w in windows]), sources[1:len(inputs) + 1])


def expected_pieces(docs):
    """What every document must become: its (input, target) pairs in pieces of at most SEQ_LEN."""
    pieces = []
    for d in docs:
        inputs, targets = d["tokens"][:-1], d["tokens"][1:]
        for start in range(0, len(inputs), SEQ_LEN):
            pieces.append((tuple(inputs[start:start + SEQ_LEN]), tuple(targets[start:start + SEQ_LEN])))
    return pieces


def segments_of(row):
    """The (inputs, targets) of each segment of a packed row, checking the row's layout on the way."""
    seg, pos = row["segment_ids"], row["positions"]
    assert row["inputs"].dtype == row["targets"].dtype == seg.dtype == pos.dtype == np.int32
    ids = [int(s) for s in seg if s]
    out = []
    for number in range(1, max(ids, default=0) + 1):
        where = np.flatnonzero(seg == number)
        assert len(where) and np.all(np.diff(where) == 1)  # a segment is one contiguous run
        np.testing.assert_array_equal(pos[where], np.arange(len(where)))  # positions restart at each document
        out.append((tuple(row["inputs"][where]), tuple(row["targets"][where])))
    assert sorted(set(ids)) == list(range(1, len(out) + 1)) and ids == sorted(ids)  # 1, 2, ... in order
    padding = seg == 0
    assert np.all(pos[padding] == 0) and np.all(row["source"][padding] == 0)
    if padding.any():
        assert np.all(padding[np.argmax(padding):])  # padding only at the end of the row
    return out


def test_segments_rows_hold_each_documents_pairs_and_nothing_across_documents():
    docs = random_documents()
    rows = list(packing.pack(stream_of(docs), "segments", SEQ_LEN, rows=4))
    got = [piece for row in rows for piece in segments_of(row)]
    # Every segment is a piece of exactly one document (so no target belongs to another document), and every
    # piece of every document is delivered exactly once.
    assert collections.Counter(got) == collections.Counter(expected_pieces(docs))
    assert all(len(row["inputs"]) == SEQ_LEN for row in rows)
    long_docs = [d for d in docs if len(d["tokens"]) > SEQ_LEN + 1]
    assert long_docs  # the documents longer than a row were split, not dropped
    # first fit packs: the rows are mostly full
    real = sum(int((row["segment_ids"] > 0).sum()) for row in rows)
    assert real / (len(rows) * SEQ_LEN) > 0.8


@pytest.mark.parametrize("mode", packing.PACKINGS)
def test_state_restores_the_exact_rows(mode):
    docs = random_documents(count=80, seed=1)
    dataset = packing.pack(grain.MapDataset.source(docs).repeat().to_iter_dataset(), mode, SEQ_LEN, rows=4).batch(4)
    it = iter(dataset)
    for _ in range(7):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(6)]
    resumed = iter(dataset)
    resumed.set_state(state)
    for want, got in zip(expected, [next(resumed) for _ in range(6)]):
        assert want.keys() == got.keys()
        for key in want:
            np.testing.assert_array_equal(want[key], got[key])


def test_counter_counts_target_tokens_by_source_and_restores_them():
    docs = random_documents(count=40, seed=2)
    batches = packing.pack(grain.MapDataset.source(docs).repeat().to_iter_dataset(), "segments", SEQ_LEN, rows=2)
    counter = packing.SourceTokenCounter(iter(batches.batch(2)), ("a", "b"), process_count=1)
    seen = np.zeros(2, int)
    for _ in range(5):
        batch = next(counter)
        assert "source" not in batch
    # recount from the rows themselves
    again = iter(batches.batch(2))
    for _ in range(5):
        source = next(again)["source"]
        seen += [(source == 1).sum(), (source == 2).sum()]
    assert counter.source_tokens() == {"a": seen[0], "b": seen[1]} and seen.min() > 0
    state = counter.get_state()
    other = packing.SourceTokenCounter(iter(batches.batch(2)), ("a", "b"), process_count=1)
    other.set_state(state)
    assert other.source_tokens() == counter.source_tokens()
    np.testing.assert_array_equal(next(other)["inputs"], next(counter)["inputs"])


def test_a_state_from_another_process_count_is_refused(tmp_path):
    docs = random_documents(count=10)
    batches = packing.pack(stream_of(docs), "concat", SEQ_LEN, rows=2).batch(2)
    saved = packing.SourceTokenCounter(iter(batches), ("a", "b"), process_count=2).get_state()
    with pytest.raises(ConfigError, match="saved by 2 processes; resuming with 1"):
        packing.SourceTokenCounter(iter(batches), ("a", "b"), process_count=1).set_state(saved)
    for i in range(2):
        (tmp_path / f"process_{i}-of-2.json").write_text("{}")
    packing.check_saved_process_count(str(tmp_path), 2)
    with pytest.raises(ConfigError, match="saved by 2 processes; resuming with 4"):
        packing.check_saved_process_count(str(tmp_path), 4)


def test_unknown_packing_is_a_config_error():
    with pytest.raises(ConfigError, match="data.packing"):
        packing.pack(stream_of(random_documents(count=2)), "zigzag", SEQ_LEN, rows=2)
