"""The packed LM pipeline (bmjax/data/packed_lm.py): token shards, TFDS, mixtures, per-process reading, exact
resume, and one clear error for each bad input."""
import collections

import ml_collections
import numpy as np
import pytest

from bmjax.data import ByteTokenizer, CharTokenizer, check_data_config, documents, make_data, packed_lm, prepare
from bmjax.errors import ConfigError
from helpers.commands import error_line, run
from helpers.documents import self_naming, write_shards

NUM_DOCS = 240


def lines(count, tag):
    """Distinct short documents: "tag 17: ...\\n" (each one names itself)."""
    return self_naming("{tag} {i}: ", tag, count, seed=len(tag), length=(3, 40))


@pytest.fixture(scope="module")
def shard_dirs(tmp_path_factory):
    """Byte shards of two corpora, and char shards of the first."""
    root = tmp_path_factory.mktemp("shards")
    out = {}
    for tag in ("alpha", "beta"):
        out[tag] = write_shards(lines(NUM_DOCS, tag), root / tag, ByteTokenizer(), num_shards=3)
    docs = lines(NUM_DOCS, "alpha")
    out["char"] = write_shards(docs, root / "char", CharTokenizer.from_texts(docs), num_shards=2)
    return out


def make_config(**data):
    fields = dict(source="arrayrecord", path="", eval_path="", eval_fraction=0.1, tokenizer="byte", seq_len=32,
                  batch_size=8, task="lm", packing="segments", mixture="", tfds_name="", train_split="train",
                  eval_split="test", text_column="text", tfds_data_dir="", prepare_from="", workers=0)
    fields.update(data)
    return ml_collections.ConfigDict(dict(data=fields, train=dict(seed=3, eval_steps=2),
                                          model=dict(vocab_size=320, max_len=64)))


def decoded_segments(batch):
    """The text of every document piece in a segments batch (inputs + last target, EOS stripped)."""
    out = []
    for row in range(batch["inputs"].shape[0]):
        seg = batch["segment_ids"][row]
        for number in range(1, seg.max() + 1):
            where = seg == number
            ids = np.append(batch["inputs"][row][where], batch["targets"][row][where][-1])
            out.append(ByteTokenizer().decode(ids[ids != ByteTokenizer.eos_id]))
    return out


def test_two_processes_see_every_document_of_an_epoch_exactly_once(shard_dirs):
    config = make_config(path=shard_dirs["alpha"])
    tokenizer = ByteTokenizer()
    train, _ = documents.open_component(config, documents.components(config)[0], 0, tokenizer)
    n = len(train)
    assert n == int(NUM_DOCS * 0.9)  # the last 10% of the documents are held out for eval
    per_process = [packed_lm.train_documents(train, 3, 0, p, 2) for p in range(2)]
    first_epoch = [tuple(d["tokens"]) for p in range(2) for d in per_process[p][:(n - p + 1) // 2]]
    everything = [tuple(train[i]["tokens"]) for i in range(n)]
    assert collections.Counter(first_epoch) == collections.Counter(everything)
    # the order is a shuffle, the same for the same seed, new in the next epoch
    order = [tuple(per_process[0][i]["tokens"]) for i in range(n // 2)]
    assert order != everything[0::2][:n // 2]
    again = packed_lm.train_documents(train, 3, 0, 0, 2)
    assert order == [tuple(again[i]["tokens"]) for i in range(n // 2)]
    next_epoch = [tuple(per_process[0][i]["tokens"]) for i in range(n // 2, n)]
    assert next_epoch != order


def test_the_processes_batches_hold_distinct_documents(shard_dirs):
    """Through the whole pipeline: two processes' first batches share no document, and each is whole."""
    config = make_config(path=shard_dirs["alpha"], seq_len=64)
    seen = []
    for p in range(2):
        data = make_data(config, None, process_index=p, process_count=2)
        batch = next(data.train_iter)
        assert batch["inputs"].shape == (4, 64)
        seen.append(decoded_segments(batch))
    all_docs = set(lines(NUM_DOCS, "alpha"))
    assert all(doc in all_docs for docs in seen for doc in docs)  # short documents arrive whole
    assert not set(seen[0]) & set(seen[1])


@pytest.mark.parametrize("packing", ["segments", "concat"])
def test_resume_gives_the_same_batches(shard_dirs, packing):
    mixture = f"arrayrecord:{shard_dirs['alpha']}=2;arrayrecord:{shard_dirs['beta']}=1"
    config = make_config(mixture=mixture, packing=packing)
    data = make_data(config, None)
    for _ in range(5):
        next(data.train_iter)
    state = data.train_iter.get_state()
    counts = data.source_tokens()
    expected = [next(data.train_iter) for _ in range(4)]
    resumed = make_data(config, None)
    resumed.train_iter.set_state(state)
    assert resumed.source_tokens() == counts
    for want, got in zip(expected, [next(resumed.train_iter) for _ in range(4)]):
        assert sorted(want) == sorted(got) == (["inputs", "positions", "segment_ids", "targets"]
                                               if packing == "segments" else ["inputs", "targets"])
        for key in want:
            np.testing.assert_array_equal(want[key], got[key])


def test_mixture_counts_tokens_per_source_in_proportion(shard_dirs):
    mixture = f"arrayrecord:{shard_dirs['alpha']}=3;arrayrecord:{shard_dirs['beta']}=1"
    data = make_data(make_config(mixture=mixture, packing="concat"), None)
    assert data.source_names == ("arrayrecord:alpha", "arrayrecord:beta")
    batches = [next(data.train_iter) for _ in range(30)]
    counts = data.source_tokens()
    assert sum(counts.values()) == sum(b["targets"].size for b in batches)  # concat: every target is a token
    assert 2.0 < counts["arrayrecord:alpha"] / counts["arrayrecord:beta"] < 4.5  # 3:1 by documents


def test_eval_is_the_same_batches_every_call_and_split_over_processes(shard_dirs):
    config = make_config(path=shard_dirs["alpha"])
    config.train.eval_steps = 0  # one full pass
    whole = list(make_data(config, None).eval_batches())
    assert whole and all(b["inputs"].shape == (8, 32) for b in whole)
    halves = [list(make_data(config, None, process_index=p, process_count=2).eval_batches()) for p in range(2)]
    assert len(halves[0]) == len(halves[1]) == len(whole)
    for b, h0, h1 in zip(whole, *halves):
        np.testing.assert_array_equal(b["inputs"], np.concatenate([h0["inputs"], h1["inputs"]]))
    config.train.eval_steps = 3
    first, second = (list(make_data(config, None).eval_batches()) for _ in range(2))
    assert len(first) == 3 and all(np.array_equal(a["targets"], b["targets"]) for a, b in zip(first, second))


def test_char_shards_bring_their_vocabulary(shard_dirs, tmp_path):
    data = make_data(make_config(path=shard_dirs["char"], tokenizer="char"), str(tmp_path))
    batch = next(data.train_iter)
    assert data.tokenizer.name == "char" and (tmp_path / "vocab.json").exists()
    assert batch["inputs"].max() < data.tokenizer.vocab_size


def test_tfds_source_through_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    config = make_config(source="tfds", tfds_name="lm1b", seq_len=16, batch_size=4)
    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        source = tfds.data_source("lm1b", split="train")
        texts = [source[i]["text"] for i in range(20)]
        data = make_data(config, None)
        batch = next(data.train_iter)
        evals = list(data.eval_batches())
    texts = {t.decode() if isinstance(t, bytes) else t for t in texts}
    assert batch["inputs"].shape == (4, 16) and len(evals) == 2
    pieces = decoded_segments(batch)
    assert all(any(piece in text for text in texts) for piece in pieces)  # pieces of the split's sentences
    assert set(pieces) & texts  # and the short ones whole


def test_text_source_with_segments_packing_alone_and_in_a_mixture(repo_data, shard_dirs):
    text = str(repo_data / "tinyshakespeare.txt")
    data = make_data(make_config(source="text", path=text, seq_len=64), None)
    batch = next(data.train_iter)
    assert set(batch) == {"inputs", "targets", "segment_ids", "positions"}
    assert data.source_names == ("text:tinyshakespeare.txt",)
    config = make_config(mixture=f"arrayrecord:{shard_dirs['alpha']}=1;text:{text}=1", seq_len=64)
    check_data_config(config)
    data = make_data(config, None)
    for _ in range(4):
        next(data.train_iter)
    assert all(count > 0 for count in data.source_tokens().values())


BAD = [
    (dict(path="NOWHERE/*.arrayrecord"), "data.path", "no shard files match"),
    (dict(path="ALPHA", tokenizer="TOKENIZER"), "data.tokenizer", "is not the tokenizer the shards"),
    (dict(path="CHAR"), "data.tokenizer", "is not the tokenizer the shards"),
    (dict(mixture="arrayrecord:ALPHA=1;arrayrecord:BETA=0"), "data.mixture", "weight must be > 0"),
    (dict(mixture="arrayrecord:ALPHA=1;arrayrecord:BETA=-2"), "data.mixture", "weight must be > 0"),
    (dict(mixture="arrayrecord:ALPHA=1;arrayrecord:NOWHERE/*.arrayrecord=1"), "data.mixture", "no shard files"),
    (dict(mixture="arrayrecord:ALPHA=1;tfds:=1"), "data.mixture", "needs a name"),
    (dict(mixture="arrayrecord:ALPHA=1;parquet:x=1"), "data.mixture", "unknown source"),
    (dict(mixture="arrayrecord:ALPHA"), "data.mixture", "is not SPEC=WEIGHT"),
    (dict(path="ALPHA", packing="zigzag"), "data.packing", "allowed"),
    (dict(source="tfds"), "data.tfds_name", "is unset"),
]


@pytest.mark.parametrize("fields,key,message", BAD, ids=[f"{k}-{m.split()[0]}" for _, k, m in BAD])
def test_bad_input_is_a_config_error_before_reading(shard_dirs, tmp_path, fields, key, message):
    tokenizer = tmp_path / "tokenizer.json"
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(tokenizer))
    names = {"ALPHA": shard_dirs["alpha"], "BETA": shard_dirs["beta"], "CHAR": shard_dirs["char"],
             "NOWHERE": str(tmp_path / "nowhere"), "TOKENIZER": str(tokenizer)}
    for name, value in names.items():
        fields = {k: v.replace(name, value) if isinstance(v, str) else v for k, v in fields.items()}
    with pytest.raises(ConfigError, match=message) as error:
        check_data_config(make_config(**fields))
    assert error.value.key == key


def test_cli_refuses_a_shard_glob_matching_nothing_in_one_line(tmp_path):
    result = run("-m", "bmjax.cli.train", "--config", "configs/gpt/gpt2.py:size=124m,runlocal",
                 "--workdir", str(tmp_path / "run"), f"--config.data.path={tmp_path}/none-*.arrayrecord",
                 "--config.data.prepare_from=", devices=8)
    assert error_line(result).startswith("error: data.path: no shard files match")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bert_pretraining_reads_token_shards_as_it_reads_the_text(repo_data, tmp_path):
    from bmjax.defaults import base_config

    text = (repo_data / "tinyshakespeare.txt").read_text(encoding="utf-8")
    files = {}
    for split, piece in (("train", text[:30_000]), ("eval", text[30_000:36_000])):
        files[split] = tmp_path / f"{split}.txt"
        files[split].write_text(piece, encoding="utf-8")
        docs = prepare.text_documents([str(files[split])], "file")
        prepare.prepare_shards(docs, str(tmp_path / split), ByteTokenizer(), num_shards=1, progress=False)

    def bert(**data):
        c = base_config()
        c.model.name, c.model.max_len = "bert", 64
        c.data.task, c.data.seq_len, c.data.batch_size = "mlm", 64, 4
        c.train.eval_steps = 2
        for key, value in data.items():
            c.data[key] = value
        return c

    from_text = make_data(bert(source="text", path=str(files["train"]), eval_path=str(files["eval"])), None)
    from_shards = make_data(bert(source="arrayrecord", path=str(tmp_path / "train"),
                                 eval_path=str(tmp_path / "eval")), None)
    for want, got in [(next(from_text.train_iter), next(from_shards.train_iter)),
                      (next(from_text.eval_batches()), next(from_shards.eval_batches()))]:
        assert sorted(want) == sorted(got)
        for key in want:
            np.testing.assert_array_equal(want[key], got[key])
    with pytest.raises(ConfigError, match="mixtures are for task lm"):
        check_data_config(bert(source="arrayrecord", mixture=f"arrayrecord:{tmp_path / 'train'}=1"))


def test_worker_processes_deliver_the_same_batches_and_resume_exactly(shard_dirs):
    """data.workers=2: grain worker processes each read and pack a slice of the documents; still exact."""
    config = make_config(path=shard_dirs["alpha"], workers=2, seq_len=64)
    data = make_data(config, None)
    first = [next(data.train_iter) for _ in range(3)]
    state = data.train_iter.get_state()
    expected = [next(data.train_iter) for _ in range(3)]
    resumed = make_data(config, None)
    resumed.train_iter.set_state(state)
    for want, got in zip(expected, [next(resumed.train_iter) for _ in range(3)]):
        for key in want:
            np.testing.assert_array_equal(want[key], got[key])
    all_docs = set(lines(NUM_DOCS, "alpha"))
    assert all(doc in all_docs for batch in first for doc in decoded_segments(batch))


@pytest.mark.parametrize("packing", ["concat", "segments"])
@pytest.mark.parametrize("tokenizer, shards", [("byte", "alpha"), ("char", "multibyte")])
def test_eval_target_bytes_are_the_bytes_of_the_held_out_text(shard_dirs, tmp_path, tokenizer, shards, packing):
    """Bits per byte for token shards: the UTF-8 bytes of the targets the eval scores, against the held-out
    documents' text: a full pass scores all of it but the first character (concat's stream, each segments
    document); an EOS and packing's padding carry none."""
    if shards == "multibyte":  # characters of 1, 2 and 3 bytes
        docs = [f"{i}: " + "é€a" * (i % 9 + 3) + "\n" for i in range(400)]
        prepare.prepare_shards(docs, str(tmp_path / "mb"), CharTokenizer.from_texts(docs), num_shards=2,
                               progress=False)
        path, held_out = str(tmp_path / "mb"), docs[360:]
    else:
        path, held_out = shard_dirs[shards], lines(NUM_DOCS, "alpha")[int(NUM_DOCS * 0.9):]
    config = make_config(path=path, tokenizer=tokenizer, packing=packing)
    config.train.eval_steps = 0
    data = make_data(config, str(tmp_path / "work"))
    scored_bytes = sum(float(np.sum(b["target_bytes"] * b.get("weights", 1) * (b.get("segment_ids", 1) != 0)))
                       for b in data.eval_batches())
    first_characters = [held_out[0]] if packing == "concat" else held_out
    expected = sum(len(d.encode("utf-8")) for d in held_out) - sum(len(d[0].encode("utf-8")) for d in first_characters)
    assert scored_bytes == expected