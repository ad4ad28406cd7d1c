"""Packed LM eval (bmjax/data/packed_lm.py) scores every held-out document of every component exactly once with
train.eval_steps=0, whatever the mixture weights, with the last partial window and batch padded and masked.

The documents name themselves ("~A17:" ...), so the scored targets show which documents an eval covered."""
import collections
import re

import ml_collections
import numpy as np
import pytest

from bmjax.data import ByteTokenizer, documents, make_data
from helpers.documents import self_naming, write_shards

SIZES = {"A": 300, "B": 300, "C": 60}  # documents; eval_fraction 0.1 holds out 30, 30 and 6
NAME = re.compile(rb"([A-Z]\d+):")


@pytest.fixture(scope="module")
def shard_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("named")
    return {tag: write_shards(self_naming("~{tag}{i}:", tag, count, seed=ord(tag), length=(5, 90)), root / tag,
                              ByteTokenizer(), num_shards=2) for tag, count in SIZES.items()}


def make_config(mixture, packing, batch_size, seq_len, eval_steps=0):
    data = dict(source="arrayrecord", path="", eval_path="", eval_fraction=0.1, tokenizer="byte", seq_len=seq_len,
                batch_size=batch_size, task="lm", packing=packing, mixture=mixture, prepare_from="", workers=0)
    return ml_collections.ConfigDict(dict(data=data, train=dict(seed=0, eval_steps=eval_steps),
                                          model=dict(vocab_size=320, max_len=128)))


def held_out_names(config):
    """The names of every held-out document of every component."""
    names = collections.Counter()
    for i, c in enumerate(documents.components(config)):
        _, held_out = documents.open_component(config, c, i, ByteTokenizer())
        for j in range(len(held_out)):
            names.update(NAME.findall(bytes(held_out[j]["tokens"].astype(np.uint8).tolist())))
    return names


def scored_names(batches):
    """Names in the scored targets, read row by row (a row's scored targets in order)."""
    text = b""
    for batch in batches:
        weights = batch.get("weights", np.ones(batch["targets"].shape))
        if "segment_ids" in batch:
            weights = weights * (batch["segment_ids"] != 0)
        for row in range(batch["targets"].shape[0]):
            ids = batch["targets"][row][weights[row] > 0]
            text += bytes(np.where(ids < 256, ids, ord("|")).astype(np.uint8).tolist())
    return collections.Counter(NAME.findall(text))


def mixture(shard_dirs, weights):
    return ";".join(f"arrayrecord:{shard_dirs[tag]}={w}" for tag, w in weights.items())


@pytest.mark.parametrize("packing", ["concat", "segments"])
@pytest.mark.parametrize("weights", [{"B": 1, "C": 1}, {"A": 3, "B": 1}, {"A": 1, "B": 2, "C": 5}])
@pytest.mark.parametrize("batch_size,seq_len", [(8, 64), (6, 40)])
def test_every_held_out_document_is_scored_exactly_once(shard_dirs, packing, weights, batch_size, seq_len):
    config = make_config(mixture(shard_dirs, weights), packing, batch_size, seq_len)
    batches = list(make_data(config, None).eval_batches())
    expected = held_out_names(config)
    assert sum(expected.values()) == sum(SIZES[t] // 10 for t in weights)
    assert scored_names(batches) == expected
    assert all(b["targets"].shape == (batch_size, seq_len) for b in batches)  # the last batch padded, not short


def test_the_eval_set_does_not_depend_on_the_weights(shard_dirs):
    def scored(weights):
        return scored_names(make_data(make_config(mixture(shard_dirs, weights), "segments", 8, 64),
                                      None).eval_batches())

    assert scored({"A": 1, "B": 1}) == scored({"A": 9, "B": 1}) == scored({"A": 1, "B": 9})


def test_two_processes_score_the_rows_one_process_scores(shard_dirs):
    config = make_config(mixture(shard_dirs, {"A": 1, "C": 3}), "concat", 6, 40)
    whole = list(make_data(config, None).eval_batches())
    halves = [list(make_data(config, None, process_index=p, process_count=2).eval_batches()) for p in range(2)]
    assert len(halves[0]) == len(halves[1]) == len(whole)
    for batch, first, second in zip(whole, *halves):
        for key in batch:
            np.testing.assert_array_equal(batch[key], np.concatenate([first[key], second[key]]))


def test_eval_parts_name_each_component_and_hold_its_documents(shard_dirs):
    config = make_config(mixture(shard_dirs, {"A": 3, "C": 1}), "segments", 8, 64)
    parts = make_data(config, None).eval_parts()
    assert [name for name, _ in parts] == [f"arrayrecord:{t}" for t in ("A", "C")]
    for (name, batches), tag in zip(parts, "AC"):
        names = scored_names(batches)
        assert sum(names.values()) == SIZES[tag] // 10 and all(n.startswith(tag.encode()) for n in names)


def test_eval_steps_takes_the_first_batches_of_each_component(shard_dirs):
    config = make_config(mixture(shard_dirs, {"A": 1, "C": 1}), "segments", 4, 64, eval_steps=2)
    parts = make_data(config, None).eval_parts()
    full = make_data(make_config(mixture(shard_dirs, {"A": 1, "C": 1}), "segments", 4, 64), None).eval_parts()
    for (_, few), (_, every) in zip(parts, full):
        few, every = list(few), list(every)
        assert len(few) == min(2, len(every))
        for a, b in zip(few, every):
            np.testing.assert_array_equal(a["targets"], b["targets"])
