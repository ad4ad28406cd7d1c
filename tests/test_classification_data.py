"""Classification data and metrics: CSV/JSONL/TFDS sources, [CLS] a [SEP] b [SEP] encoding, eval padding,
labels by name or count, bad files, and accuracy/F1 from summed confusion counts."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

from bmjax.data import ByteTokenizer, classification
from bmjax.defaults import base_config
from bmjax.errors import ConfigError
from bmjax.train import tasks

TOK = ByteTokenizer()


def config_for(path, source, **data):
    c = base_config()
    c.model.name = "bert"
    c.model.heads = "classification"
    c.model.num_labels = 2
    c.model.max_len = 32
    c.data.task = "classification"
    c.data.source = source
    c.data.path = str(path)
    c.data.seq_len = 32
    c.data.batch_size = 4
    c.data.labels = "2"
    c.train.eval_steps = 100
    for key, value in data.items():
        c.data[key] = value
    return c


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "train.csv"
    rows = ["text,label"] + [f'"row {i}, with a comma",{i % 2}' for i in range(20)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def jsonl_pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    with open(path, "w") as f:
        for i in range(10):
            label = ["no", "yes", "maybe"][i % 3]
            f.write(json.dumps({"premise": f"prem {i}", "hypothesis": "h" * (40 if i == 0 else 3),
                                "gold": label}) + "\n")
    return path


def test_csv_single_texts_split_and_encoded(csv_file):
    data = classification.make_classification_data(config_for(csv_file, "csv"), None)
    assert (data.train_examples, data.eval_examples) == (18, 2)  # eval_fraction 0.1, drawn with a fixed seed
    batch = next(data.train_iter)
    assert batch["input_ids"].shape == (4, 32) and batch["labels"].shape == (4,)
    row = batch["input_ids"][0]
    n = int(batch["attention_mask"][0].sum())
    assert row[0] == TOK.cls_id and row[n - 1] == TOK.sep_id and (row[n:] == TOK.pad_id).all()
    text = TOK.decode(row[1:n - 1])
    assert text.startswith("row ") and text.endswith(", with a comma")
    assert int(text.split()[1].rstrip(",")) % 2 == batch["labels"][0]  # the label travels with its text
    assert not batch["token_type_ids"].any() and (batch["weights"] == 1).all()


def test_jsonl_pairs_with_named_labels_truncation_and_padded_eval(jsonl_pairs, tmp_path):
    config = config_for(jsonl_pairs, "jsonl", text_column="premise", text_pair_column="hypothesis",
                        label_column="gold", labels="no,yes,maybe", eval_path=str(jsonl_pairs))
    config.model.num_labels = 3
    data = classification.make_classification_data(config, None)
    batches = list(data.eval_batches())
    assert len(batches) == 3  # 10 examples in batches of 4: the last one padded
    weights = np.concatenate([b["weights"] for b in batches])
    assert weights.tolist() == [1.0] * 10 + [0.0] * 2
    labels = np.concatenate([b["labels"] for b in batches])[:10]
    assert labels.tolist() == [i % 3 for i in range(10)]
    first = batches[0]
    ids, types, n = first["input_ids"][0], first["token_type_ids"][0], int(first["attention_mask"][0].sum())
    assert n == 32  # premise + 40-character hypothesis do not fit: the longer one is cut
    seps = np.flatnonzero(ids == TOK.sep_id)
    assert TOK.decode(ids[1:seps[0]]) == "prem 0"
    assert TOK.decode(ids[seps[0] + 1:seps[1]]) == "h" * (32 - 3 - 6)
    assert (types[:seps[0] + 1] == 0).all() and (types[seps[0] + 1:] == 1).all()
    second = batches[0]["input_ids"][1]
    assert TOK.decode(second[second != TOK.pad_id]) == "<|bos|>prem 1<|eos|>hhh<|eos|>"


def test_unknown_label_and_missing_columns_are_config_errors(csv_file, jsonl_pairs, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,0\nodd,2\n")
    with pytest.raises(ConfigError) as error:
        classification.make_classification_data(config_for(bad, "csv"), None)
    assert error.value.key == "data.path" and f"{bad}:3" in error.value.message and "'2'" in error.value.message

    config = config_for(csv_file, "csv", text_pair_column="second")
    with pytest.raises(ConfigError) as error:
        classification.check_classification_config(config)
    assert error.value.key == "data.text_pair_column" and "'second'" in error.value.message

    config = config_for(jsonl_pairs, "jsonl", text_column="premise", label_column="label")
    with pytest.raises(ConfigError) as error:
        classification.check_classification_config(config)
    assert error.value.key == "data.label_column"

    for labels in ("", "1", "a,a"):
        with pytest.raises(ConfigError) as error:
            classification.label_names(config_for(csv_file, "csv", labels=labels))
        assert error.value.key == "data.labels"


def test_train_order_is_seeded_and_epochs_cover_every_example(csv_file):
    config = config_for(csv_file, "csv")
    config.data.eval_fraction = 0.5
    first = classification.make_classification_data(config, None)
    seen = np.concatenate([next(first.train_iter)["input_ids"] for _ in range(5)])  # 10 examples, 2 epochs
    assert len({row.tobytes() for row in seen[:10]}) == 10  # one epoch: each training example once
    again = classification.make_classification_data(config, None)
    assert np.array_equal(next(again.train_iter)["input_ids"], seen[:4])


class StubModel:
    """Returns fixed logits, so eval metrics can be checked against hand-computed values."""

    def __init__(self, predictions, num_labels):
        self.logits = jnp.asarray(np.eye(num_labels)[predictions] * 5.0, jnp.float32)

    def __call__(self, input_ids, token_type_ids=None, attention_mask=None, **unused):  # rngs, positions, segment_ids
        return type("Out", (), {"logits": self.logits})()


def eval_over(batches, num_labels):
    task = tasks.get_task("classification")
    totals = None
    for truth, predicted, weights in batches:
        batch = {"input_ids": jnp.zeros((len(truth), 4), jnp.int32), "token_type_ids": None,
                 "attention_mask": None, "labels": jnp.asarray(truth), "weights": jnp.asarray(weights, jnp.float32)}
        metrics = task.eval_metrics(StubModel(predicted, num_labels), batch)
        totals = metrics if totals is None else {k: (totals[k][0] + v[0], totals[k][1] + v[1])
                                                 for k, v in metrics.items()}
    return task.finalize(totals)


def test_f1_from_confusion_counts_summed_over_batches():
    # Binary: truth 1,1,1,0,0,0 vs predicted 1,0,1,1,0,0 -> tp=2, fp=1, fn=1: precision 2/3, recall 2/3.
    # Split over two batches, the second with a padding row (weight 0) that predicts wrongly.
    out = eval_over([([1, 1, 1], [1, 0, 1], [1, 1, 1]), ([0, 0, 0, 1], [1, 0, 0, 0], [1, 1, 1, 0])], 2)
    assert out["f1"] == pytest.approx(2 / 3)
    assert out["accuracy"] == pytest.approx(4 / 6)
    # Three classes: truth 0,0,1,1,2,2 vs predicted 0,1,1,1,2,0.
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp1 fp0 fn1 -> 2/3; macro = 0.6556.
    out = eval_over([([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], [1] * 6)], 3)
    assert out["f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert out["accuracy"] == pytest.approx(4 / 6)


def test_tfds_source_reads_a_prepared_dataset_without_downloading():
    tfds = pytest.importorskip("tensorflow_datasets")
    c = config_for("glue/sst2", "tfds", text_column="sentence")
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        data = classification.make_classification_data(c, None)
        batch = next(data.train_iter)
    assert (data.train_examples, data.eval_examples) == (12, 12)
    assert data.label_names == ("0", "1")
    assert batch["input_ids"][0][0] == TOK.cls_id and set(batch["labels"].tolist()) <= {0, 1}
