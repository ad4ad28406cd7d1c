"""Mixture weights are fractions of training tokens (as MaxText's, levanter's and Marin's), whatever the sources'
document lengths; a `text:` source is split into documents at blank lines."""
import ml_collections
import numpy as np
import pytest

from bmjax.data import documents, make_data

BATCHES = 150


def write_paragraphs(path, count, length, letter):
    rng = np.random.default_rng(length)
    paragraphs = [letter * int(rng.integers(length // 2, 3 * length // 2)) + "\n\n" for _ in range(count)]
    path.write_text("".join(paragraphs))
    return paragraphs


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    long, short = root / "long.txt", root / "short.txt"
    write_paragraphs(long, 400, 300, "a")  # long paragraphs
    write_paragraphs(short, 4000, 12, "b")  # many short ones
    return long, short


def make_config(mixture, packing):
    data = dict(source="text", path="", eval_path="", eval_fraction=0.1, tokenizer="byte", seq_len=64,
                batch_size=8, task="lm", packing=packing, mixture=mixture, prepare_from="", workers=0)
    return ml_collections.ConfigDict(dict(data=data, train=dict(seed=0, eval_steps=0),
                                          model=dict(vocab_size=320, max_len=64)))


@pytest.mark.parametrize("packing", ["concat", "segments"])
@pytest.mark.parametrize("long_weight,short_weight", [(3, 1), (1, 3), (1, 1)])
def test_weights_are_the_fractions_of_training_tokens(text_files, packing, long_weight, short_weight):
    long, short = text_files
    config = make_config(f"text:{long}={long_weight};text:{short}={short_weight}", packing)
    data = make_data(config, None)
    real = 0
    for _ in range(BATCHES):
        batch = next(data.train_iter)
        real += int(np.sum(batch["segment_ids"] != 0)) if "segment_ids" in batch else batch["targets"].size
    counts = data.source_tokens()
    assert sum(counts.values()) == real  # tokens/<source> count the real (scored) target tokens
    fraction = counts["text:long.txt"] / real
    assert fraction == pytest.approx(long_weight / (long_weight + short_weight), abs=0.02)


def test_a_text_source_is_split_into_documents_at_blank_lines(text_files, tmp_path):
    path = tmp_path / "three.txt"
    path.write_text("first paragraph\nstill first\n\nsecond\n\n\nthird, last")
    config = make_config(f"text:{path}=1;text:{text_files[0]}=1", "segments")
    config.data.eval_fraction = 0.01
    from bmjax.data import ByteTokenizer

    train, _ = documents.open_component(config, documents.components(config)[0], 0, ByteTokenizer())
    texts = [ByteTokenizer().decode(train[i]["tokens"][:-1]) for i in range(len(train))]
    assert texts == ["first paragraph\nstill first\n\n", "second\n\n\n", "third, las"]  # the last 1% held out
