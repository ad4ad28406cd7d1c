"""BERT pretraining examples: [CLS] A [SEP] B [SEP] structure, next-sentence pairs, 15% / 80-10-10 masking,
determinism per example index, exact resume and per-process sharding of the grain pipeline."""
import numpy as np
import pytest

from bmjax.data import ByteTokenizer, mlm
from bmjax.defaults import base_config
from bmjax.errors import ConfigError

TOK = ByteTokenizer()
SEQ_LEN = 64


def numbered_docs(num_docs=12, lines_per_doc=30):
    """Line j of document d reads "dD lJ" plus filler, so a decoded segment tells where it came from."""
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "eps"]
    return tuple("\n".join(f"d{d} l{j} " + " ".join(rng.choice(words, size=rng.integers(0, 3)))
                           for j in range(lines_per_doc)) for d in range(num_docs))


@pytest.fixture(scope="module")
def maker():
    lines = mlm.tokenize_lines(TOK, numbered_docs(), "data.path")
    return mlm.ExampleMaker(lines, TOK, SEQ_LEN, seed=0)


def selected(example):
    """The positions selected for prediction (the real entries of mlm_positions)."""
    return example["mlm_positions"][example["mlm_weights"] > 0]


def original_ids(example):
    """The token ids before masking: selected positions hold their target."""
    ids = example["input_ids"].copy()
    ids[selected(example)] = example["mlm_targets"][example["mlm_weights"] > 0]
    return ids


def segment_lines(example):
    """(A's lines, B's lines) as (doc, line) pairs, decoded from the unmasked example."""
    ids, types = original_ids(example), example["token_type_ids"]
    n = int(example["attention_mask"].sum())
    a = ids[1:np.flatnonzero(ids[:n] == TOK.sep_id)[0]]
    b = ids[:n][(types[:n] == 1)][:-1]

    def parse(segment):
        out = []
        for line in TOK.decode(segment).split("\n"):
            parts = line.split(" ")
            if len(parts) >= 2 and parts[0][:1] == "d" and parts[1][:1] == "l" and parts[0][1:].isdigit() \
                    and parts[1][1:].isdigit():
                out.append((int(parts[0][1:]), int(parts[1][1:])))
        return out

    return parse(a), parse(b)


def test_example_structure_cls_a_sep_b_sep_types_and_padding(maker):
    for index in range(50):
        e = maker(index)
        ids, types, mask = original_ids(e), e["token_type_ids"], e["attention_mask"]
        assert all(e[k].shape == (SEQ_LEN,) for k in ("input_ids", "token_type_ids", "attention_mask"))
        assert all(e[k].shape == (mlm.max_predictions(SEQ_LEN),) for k in ("mlm_positions", "mlm_targets",
                                                                            "mlm_weights"))
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()
        assert ids[0] == TOK.cls_id and ids[n - 1] == TOK.sep_id
        seps = np.flatnonzero(ids[:n] == TOK.sep_id)
        assert len(seps) == 2  # the byte corpus holds no other SEP (EOS) ids
        assert (ids[n:] == TOK.pad_id).all() and (e["input_ids"][n:] == TOK.pad_id).all()
        assert (types[:seps[0] + 1] == 0).all() and (types[seps[0] + 1:n] == 1).all() and not types[n:].any()
        special = np.isin(np.arange(SEQ_LEN), [0, seps[0], n - 1]) | (mask == 0)
        chosen = selected(e)
        assert not special[chosen].any()  # [CLS], [SEP] and padding are never predicted
        assert (np.diff(chosen) > 0).all()  # distinct, ascending
        assert not e["mlm_positions"][e["mlm_weights"] == 0].any()  # padding entries point at 0, weight 0


def test_next_sentence_pairs_are_continuations_or_from_another_document(maker):
    labels = []
    for index in range(300):
        e = maker(index)
        a, b = segment_lines(e)
        if not a or not b:
            continue  # a segment truncated inside its only line (rare): nothing to check
        labels.append(int(e["nsp_labels"]))
        if e["nsp_labels"] == 0:
            assert b[0] == (a[-1][0], a[-1][1] + 1), (a, b)  # B starts on the line after A, same document
        else:
            assert b[0][0] != a[-1][0], (a, b)  # B comes from another document
    assert len(labels) > 250 and 0.4 < np.mean(labels) < 0.6


def test_masking_proportions(maker):
    examples = [maker(i) for i in range(2000)]
    weights = np.stack([e["mlm_weights"] for e in examples]) > 0
    real = np.stack([e["attention_mask"] for e in examples]).sum(axis=1) - 3
    assert weights.sum(axis=1).min() >= 1
    assert abs(weights.sum() / real.sum() - 0.15) < 0.01
    inputs = np.concatenate([e["input_ids"][selected(e)] for e in examples])
    targets = np.stack([e["mlm_targets"] for e in examples])[weights]
    masked = np.mean(inputs == TOK.mask_id)
    kept = np.mean(inputs == targets)
    replaced = inputs[(inputs != TOK.mask_id) & (inputs != targets)]
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.015 and abs(len(replaced) / len(inputs) - 0.1) < 0.015
    assert replaced.max() < 256  # random replacements are ordinary tokens, never specials
    assert 0.45 < np.mean([e["nsp_labels"] for e in examples]) < 0.55


def test_examples_depend_only_on_seed_and_index(maker):
    again = mlm.ExampleMaker(maker.lines, TOK, SEQ_LEN, seed=0)
    other_seed = mlm.ExampleMaker(maker.lines, TOK, SEQ_LEN, seed=1)
    for index in (0, 7, 12345):
        first, second = maker(index), again(index)
        assert all(np.array_equal(first[k], second[k]) for k in first)
        assert not np.array_equal(first["input_ids"], other_seed(index)["input_ids"])
    assert not np.array_equal(maker(0)["input_ids"], maker(1)["input_ids"])


def test_fit_pair_trims_the_longer_segment_first():
    assert mlm.fit_pair(10, 5, 20) == (10, 5)
    assert mlm.fit_pair(30, 5, 20) == (15, 5)
    assert mlm.fit_pair(5, 30, 20) == (5, 15)
    assert mlm.fit_pair(30, 30, 21) == (11, 10)
    assert sum(mlm.fit_pair(100, 12, 61)) == 61


def pipeline_config(path, batch_size=8):
    c = base_config()
    c.model.name = "bert"
    c.model.max_len = SEQ_LEN
    c.data.task = "mlm"
    c.data.source = "text"
    c.data.path = str(path)
    c.data.seq_len = SEQ_LEN
    c.data.batch_size = batch_size
    c.train.eval_steps = 2
    return c


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(numbered_docs(num_docs=4)))
    return path


def test_pipeline_batches_resume_exactly_and_shard_over_processes(corpus_file):
    config = pipeline_config(corpus_file)
    data = mlm.make_mlm_data(config, None)
    batch = next(data.train_iter)
    assert batch["input_ids"].shape == (8, SEQ_LEN) and batch["nsp_labels"].shape == (8,)
    assert batch["mlm_positions"].shape == (8, mlm.max_predictions(SEQ_LEN))
    assert batch["mlm_weights"].dtype == np.float32 and batch["input_ids"].dtype == np.int32
    next(data.train_iter)
    state = data.train_iter.get_state()
    expected = [next(data.train_iter) for _ in range(2)]

    resumed = mlm.make_mlm_data(config, None)
    resumed.train_iter.set_state(state)
    for want in expected:
        got = next(resumed.train_iter)
        assert all(np.array_equal(got[k], want[k]) for k in want)

    halves = [mlm.make_mlm_data(config, None, process_index=p, process_count=2) for p in range(2)]
    whole = mlm.make_mlm_data(config, None)
    for _ in range(2):
        want, parts = next(whole.train_iter), [next(h.train_iter) for h in halves]
        assert all(np.array_equal(np.concatenate([p[k] for p in parts]), want[k]) for k in want)

    evals = [list(data.eval_batches()), list(data.eval_batches())]
    assert len(evals[0]) == 2
    assert all(np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(*evals))


def test_a_corpus_without_line_pairs_and_a_char_tokenizer_are_config_errors(tmp_path, corpus_file):
    single = tmp_path / "single.txt"
    single.write_text("just one line\n")
    with pytest.raises(ConfigError) as error:
        mlm.make_mlm_data(pipeline_config(single), None)
    assert error.value.key == "data.path" and "two non-blank lines" in error.value.message

    config = pipeline_config(corpus_file)
    config.data.tokenizer = "char"
    with pytest.raises(ConfigError) as error:
        mlm.make_mlm_data(config, None)
    assert error.value.key == "data.tokenizer" and "[CLS]" in error.value.message
