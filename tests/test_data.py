"""The LM input pipeline: tokenizers, sources, splits, shuffling, sharding, resume, bad input."""
import json
import os

import ml_collections
import numpy as np
import pytest

from bmjax.data import (
    ByteTokenizer,
    CharTokenizer,
    build_tokenizer,
    check_data_config,
    make_lm_data,
    sources,
)
from bmjax.errors import ConfigError


def make_config(**data):
    fields = dict(
        source="text", path="", eval_path="", eval_fraction=0.1, tokenizer="char",
        seq_len=16, batch_size=8, task="lm",
    )
    fields.update(data)
    return ml_collections.ConfigDict(
        dict(data=fields, train=dict(seed=0, eval_steps=3), model=dict(vocab_size=512, max_len=64))
    )


@pytest.fixture(scope="module")
def shakespeare(repo_data):
    path = repo_data / "tinyshakespeare.txt"
    return str(path), path.read_text(encoding="utf-8")


@pytest.fixture
def unique_text(tmp_path):
    """A text in which every 16+ character window occurs once, so a window names its position."""
    letters = np.random.default_rng(0).choice(list("abcdefghijklmnopqrstuvwxyz"), size=5000)
    path = tmp_path / "unique.txt"
    path.write_text("".join(letters), encoding="utf-8")
    return str(path)


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


# --- tokenizers ----------------------------------------------------------------------------------


def test_byte_tokenizer_round_trips_unicode_and_survives_specials_and_bad_bytes():
    tok = ByteTokenizer()
    text = "def f(x):\n    return 'naïve ∑ 🐍'\n"
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and ids.max() < 256 and len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok.vocab_size == 260 and (tok.pad_id, tok.eos_id) == (256, 258)
    assert tok.decode([104, 105, tok.eos_id, 0xFF, 104]) == "hi<|eos|>\ufffdh"


def test_char_tokenizer_round_trips_and_rejects_unknown_characters():
    tok = CharTokenizer.from_texts(["hello world"])
    assert tok.chars == sorted(set("hello world")) and tok.vocab_size == 8
    assert tok.decode(tok.encode("low red")) == "low red"
    with pytest.raises(ConfigError) as e:
        tok.encode("hello, world")
    assert e.value.key == "data.path" and "','" in e.value.message


def test_char_vocab_of_tinyshakespeare_is_65_and_is_saved_and_reloaded(shakespeare, tmp_path):
    path, text = shakespeare
    tok = build_tokenizer(make_config(path=path), str(tmp_path))
    assert tok.vocab_size == 65 and tok.chars == sorted(set(text))
    with open(tmp_path / "vocab.json", encoding="utf-8") as f:
        assert json.load(f)["chars"] == tok.chars
    # The saved vocabulary wins over the data: a resumed run or a sampler keeps the same ids.
    other = tmp_path / "other.txt"
    other.write_text("xyz", encoding="utf-8")
    assert build_tokenizer(make_config(path=str(other)), str(tmp_path)).chars == tok.chars
    other.write_text("price: 5€ " * 10, encoding="utf-8")
    with pytest.raises(ConfigError, match="vocab.json") as e:
        make_lm_data(make_config(path=str(other)), str(tmp_path))
    assert e.value.key == "data.path" and "'€'" in e.value.message


# --- splits and batches --------------------------------------------------------------------------


def test_text_split_matches_nanogpt_first_90_percent_trains(shakespeare, tmp_path):
    path, text = shakespeare
    data = make_lm_data(make_config(path=path, seq_len=64, batch_size=12), str(tmp_path))
    cut = int(len(text) * 0.9)
    assert (data.train_tokens, data.eval_tokens) == (cut, len(text) - cut)
    train_text, eval_text = text[:cut], text[cut:]
    for batch in take(data.train_iter, 5):
        for row in batch["inputs"]:
            assert data.tokenizer.decode(row) in train_text
    for batch in data.eval_batches():
        for row in batch["inputs"]:
            assert data.tokenizer.decode(row) in eval_text


def test_batches_have_the_right_shape_and_targets_are_next_tokens(unique_text):
    data = make_lm_data(make_config(path=unique_text, seq_len=16, batch_size=8), None)
    text = open(unique_text).read()
    for batch in take(data.train_iter, 3):
        assert set(batch) == {"inputs", "targets"}
        for name in ("inputs", "targets"):
            assert batch[name].shape == (8, 16) and batch[name].dtype == np.int32
        np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
        for inputs, targets in zip(batch["inputs"], batch["targets"]):
            window = data.tokenizer.decode(np.append(inputs, targets[-1]))
            assert window in text  # a contiguous window of 17 tokens from the stream


def test_an_epoch_visits_every_window_once_and_the_next_epoch_reshuffles(tmp_path):
    # 40 distinct characters and seq_len 8: 32 windows, each named by its first character.
    path = tmp_path / "distinct.txt"
    path.write_text("".join(chr(0x100 + i) for i in range(40)), encoding="utf-8")
    data = make_lm_data(make_config(path=str(path), eval_path=str(path), seq_len=8, batch_size=8), None)
    firsts = np.concatenate([b["inputs"][:, 0] for b in take(data.train_iter, 8)])
    epoch1, epoch2 = firsts[:32], firsts[32:]
    assert sorted(epoch1) == list(range(32)) and sorted(epoch2) == list(range(32))
    assert list(epoch1) != list(range(32)) and list(epoch1) != list(epoch2)


def test_same_seed_same_batches_different_seed_different(unique_text):
    def batches(seed):
        config = make_config(path=unique_text)
        config.train.seed = seed
        return take(make_lm_data(config, None).train_iter, 4)

    first, again, other = batches(7), batches(7), batches(8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["inputs"], b["inputs"])
    assert not all(np.array_equal(a["inputs"], c["inputs"]) for a, c in zip(first, other))


def test_set_state_resumes_the_exact_next_batch(unique_text):
    config = make_config(path=unique_text)
    data = make_lm_data(config, None)
    take(data.train_iter, 5)
    state = data.train_iter.get_state()
    expected = take(data.train_iter, 3)

    resumed = make_lm_data(config, None).train_iter
    resumed.set_state(json.loads(json.dumps(state)))  # the state survives a JSON checkpoint
    for want, got in zip(expected, take(resumed, 3)):
        np.testing.assert_array_equal(want["inputs"], got["inputs"])
        np.testing.assert_array_equal(want["targets"], got["targets"])


def test_process_shards_are_disjoint_and_together_make_the_global_batch(unique_text):
    config = make_config(path=unique_text, batch_size=8)
    whole = take(make_lm_data(config, None).train_iter, 4)
    shards = [take(make_lm_data(config, None, process_index=p, process_count=2).train_iter, 4) for p in (0, 1)]
    for step in range(4):
        a, b = shards[0][step]["inputs"], shards[1][step]["inputs"]
        assert a.shape == (4, 16)
        assert not {r.tobytes() for r in a} & {r.tobytes() for r in b}
        np.testing.assert_array_equal(np.concatenate([a, b]), whole[step]["inputs"])
    eval_whole = list(make_lm_data(config, None).eval_batches())
    eval_shards = [list(make_lm_data(config, None, process_index=p, process_count=2).eval_batches()) for p in (0, 1)]
    for step in range(3):
        merged = np.concatenate([eval_shards[0][step]["inputs"], eval_shards[1][step]["inputs"]])
        np.testing.assert_array_equal(merged, eval_whole[step]["inputs"])


def test_eval_batches_are_the_same_every_call_and_for_every_seed(unique_text):
    config = make_config(path=unique_text)
    data = make_lm_data(config, None)
    first, second = list(data.eval_batches()), list(data.eval_batches())
    assert len(first) == config.train.eval_steps == 3
    config.train.seed = 99
    other_seed = list(make_lm_data(config, None).eval_batches())
    for a, b, c in zip(first, second, other_seed):
        np.testing.assert_array_equal(a["inputs"], b["inputs"])
        np.testing.assert_array_equal(a["inputs"], c["inputs"])
    rows = np.concatenate([b["inputs"] for b in first])
    assert len({r.tobytes() for r in rows}) == len(rows)  # distinct windows, not one repeated


def test_builtin_source_with_char_tokenizer_joins_files_with_newlines():
    docs = sources.builtin_documents()
    train_docs = [text for rel, text in docs if not sources.is_builtin_eval_file(rel, 0.1)]
    data = make_lm_data(make_config(source="builtin", tokenizer="char", seq_len=32), None)
    assert data.tokenizer.vocab_size > 95  # at least printable ASCII, plus what the stdlib holds
    assert data.train_tokens == len("\n".join(train_docs))
    list(data.eval_batches())  # eval files encode: the vocabulary covers every file


def test_builtin_source_is_the_stdlib_split_by_file():
    docs = sources.builtin_documents()
    relpaths = [rel for rel, _ in docs]
    assert len(docs) > 100 and relpaths == sorted(relpaths) and "os.py" in relpaths
    assert not any("site-packages" in rel or "__pycache__" in rel for rel in relpaths)
    is_eval = [sources.is_builtin_eval_file(rel, 0.1) for rel in relpaths]
    assert 0.05 < np.mean(is_eval) < 0.15  # about 10% of the files, whole files either side

    data = make_lm_data(make_config(source="builtin", tokenizer="byte", seq_len=64), None)
    eval_docs = [text for (rel, text), e in zip(docs, is_eval) if e]
    train_docs = [text for (rel, text), e in zip(docs, is_eval) if not e]
    # Each document is followed by one EOS.
    assert data.train_tokens == sum(len(t.encode("utf-8")) + 1 for t in train_docs)
    assert data.eval_tokens == sum(len(t.encode("utf-8")) + 1 for t in eval_docs)
    batch = next(data.train_iter)
    assert batch["inputs"].shape == (8, 64) and batch["inputs"].max() < data.tokenizer.vocab_size


# --- bad input -----------------------------------------------------------------------------------


def bad_inputs(tmp_path, unique_text):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    short = tmp_path / "short.txt"
    short.write_text("too short")
    accents = tmp_path / "accents.txt"
    accents.write_text("é" * 100, encoding="utf-8")
    missing = str(tmp_path / "missing.txt")
    return [
        ("data.path", dict(path="")),
        ("data.path", dict(path=missing)),
        ("data.path", dict(path=str(empty))),
        ("data.eval_path", dict(path=unique_text, eval_path=missing)),
        ("data.source", dict(source="web", path=unique_text)),
        ("data.tokenizer", dict(tokenizer="bpe", path=unique_text)),
        ("data.eval_fraction", dict(path=unique_text, eval_fraction=1.5)),
        ("data.seq_len", dict(path=unique_text, seq_len=100)),  # model.max_len is 64
        ("model.vocab_size", dict(path=unique_text, tokenizer="byte", model_vocab=256)),
    ], [
        ("data.path", dict(path=str(short))),
        ("data.eval_fraction", dict(path=unique_text, eval_fraction=0.001)),  # 5 eval chars < 17
        ("data.eval_path", dict(path=unique_text, eval_path=str(accents))),
        ("model.vocab_size", dict(path=unique_text, model_vocab=20)),
        ("data.batch_size", dict(path=unique_text, batch_size=7)),
    ]


def configured(overrides):
    overrides = dict(overrides)
    model_vocab = overrides.pop("model_vocab", 512)
    config = make_config(**overrides)
    config.model.vocab_size = model_vocab
    return config


def test_bad_input_raises_config_error_naming_the_key(tmp_path, unique_text):
    cheap, deep = bad_inputs(tmp_path, unique_text)
    for key, overrides in cheap:
        with pytest.raises(ConfigError) as e:
            check_data_config(configured(overrides))
        assert e.value.key == key, overrides
        with pytest.raises(ConfigError) as e:
            make_lm_data(configured(overrides), str(tmp_path / "run"), process_count=2)
        assert e.value.key == key, overrides
    for key, overrides in deep:
        check_data_config(configured(overrides))  # these need the corpus, or the process count
        with pytest.raises(ConfigError) as e:
            make_lm_data(configured(overrides), None, process_count=2)
        assert e.value.key == key, overrides
    with pytest.raises(ConfigError, match="26 ids"):
        make_lm_data(configured(dict(path=unique_text, model_vocab=20)), None)


def test_a_bad_config_writes_nothing_to_the_workdir(tmp_path, unique_text):
    run = tmp_path / "run"
    with pytest.raises(ConfigError):
        make_lm_data(configured(dict(path=unique_text, eval_path=str(tmp_path / "nope.txt"))), str(run))
    assert not run.exists()
