"""A SentencePiece model (trained here by sentencepiece's own trainer) as data.tokenizer: bmjax-prepare-data writes
its shards, a tiny GPT trains on them, and summary.json's bits per byte is the eval's nats over the held-out text's
own UTF-8 bytes."""
import json
import math

import numpy as np
import pytest

from bmjax.cli import prepare_data
from bmjax.data import prepare, shards
from bmjax.data.tokenizer_files import load_tokenizer_file
from bmjax.train.loop import train_and_evaluate
from helpers.configs import load_config

spm = pytest.importorskip("sentencepiece")


@pytest.fixture(scope="module")
def corpus(repo_data):
    return (repo_data / "tinyshakespeare.txt").read_text()[:24_000] + "\n\nNaïve CAFÉ — “quoted”,  twice.  \n"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, corpus):
    prefix = tmp_path_factory.mktemp("sp") / "sp"
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus.splitlines()), model_prefix=str(prefix),
                                   vocab_size=300, character_coverage=1.0, minloglevel=2)
    return f"{prefix}.model"


def test_prepare_data_train_and_bits_per_byte(tmp_path, corpus, model_path):
    tokenizer = load_tokenizer_file(model_path)
    assert tokenizer.vocab_size == 300 and tokenizer.eos_id == 2 and tokenizer.special_ids == (2,)
    (tmp_path / "corpus.txt").write_text(corpus)
    code = prepare_data.main(["--input", str(tmp_path / "corpus.txt"), "--out", str(tmp_path / "shards"),
                              "--tokenizer", model_path, "--num_shards", "2", "--workers", "2", "--noprogress"])
    assert code == 0
    metadata = shards.read_metadata(str(tmp_path / "shards"), "test")
    token_shards = shards.TokenShards([str(tmp_path / "shards" / n) for n in metadata["shards"]], metadata)
    records = [token_shards[i] for i in range(len(token_shards))]
    docs = prepare.text_documents([str(tmp_path / "corpus.txt")], "paragraph")
    assert metadata["tokenizer"]["name"] == "sp.model" and metadata["token_bytes"] == "<u4"
    assert len(records) == len(docs) and all(r[-1] == tokenizer.eos_id for r in records)
    # SentencePiece normalises whitespace (runs of spaces and newlines to one space, none at the ends)
    assert [tokenizer.decode(r[:-1]) for r in records] == [" ".join(d.split()) for d in docs]

    config = load_config("configs/gpt/tiny.py:runlocal")
    config.model.update(d_model=32, num_layers=1, num_heads=2, max_len=64, vocab_size=300)
    config.data.update(source="arrayrecord", path=str(tmp_path / "shards" / "*.arrayrecord"), tokenizer=model_path,
                       seq_len=64, batch_size=8)
    config.train.update(steps=4, eval_every=4, log_every=2, eval_steps=0)
    train_and_evaluate(config, str(tmp_path / "run"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and math.isfinite(summary["final_eval_loss"])

    # one concat stream of the held-out documents (the last tenth): every token a target but the first, whose
    # bytes (to the end of its first piece, from SentencePiece's own byte offsets) are not scored
    held_out = docs[int(len(docs) * 0.9):]
    scored_bytes = sum(len(d.encode()) for d in held_out) - tokenizer.processor.encode_as_proto(held_out[0]).pieces[0].end
    targets = sum(len(records[i]) for i in range(int(len(docs) * 0.9), len(docs))) - 1
    nats = summary["final_eval_loss"] * targets
    np.testing.assert_allclose(summary["bits_per_byte"], nats / math.log(2) / scored_bytes, rtol=1e-5)
