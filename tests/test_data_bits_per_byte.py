"""Bits per byte for tokenizer files (byte-level BPE, WordPiece, SentencePiece) and every source (text, ArrayRecord
shards, TFDS, eval sets): the eval's target bytes are the held-out text's own UTF-8 bytes, counted directly from
the source text."""
import numpy as np
import pytest

from bmjax import data as data_lib
from bmjax.data import prepare, tokenizer_training
from bmjax.data.tfds_documents import TfdsDocuments
from bmjax.data.tokenizer_files import load_tokenizer_file
from bmjax.data.tokenizers import token_byte_lengths
from helpers.configs import load_config


def test_byte_level_bpe_ids_spell_the_texts_bytes(tmp_path, repo_data):
    text = (repo_data / "tinyshakespeare.txt").read_text()[:60_000] + "\nnaïve café — “quoted” 日本\n"
    data = text_data(tmp_path, text, text[:40_000], "bpe", tokenizer_vocab=400, model_vocab=448)

    lengths = token_byte_lengths(data.tokenizer)
    unseen = "Thou art more lovely — “naïve” 日本 ✓"  # characters the vocabulary never merged
    assert lengths[data.tokenizer.encode(unseen)].sum() == len(unseen.encode())

    held_out = text[int(len(text) * 0.9):]
    first = data.tokenizer.encode(held_out)[0]  # the held-out stream's first token is nobody's target
    scored = sum(float(np.sum(b["target_bytes"] * b["weights"])) for b in data.eval_batches())
    assert scored == len(held_out.encode()) - lengths[first]


@pytest.mark.parametrize("packing", ["concat", "segments"])
def test_wordpiece_evals_count_the_bytes_of_text_their_targets_cover(tmp_path, repo_data, packing):
    """WordPiece ids have no fixed bytes (lowercased, accents stripped, spaces dropped): each target counts the
    bytes of text from the previous token's end to its own, so a document's targets cover all its bytes but
    those of its first token. Held-out split (lm.py's stream, or packed documents) and an eval set alike."""
    text = (repo_data / "tinyshakespeare.txt").read_text()[:30_000] + "\n\nNaïve CAFÉ — “quoted”,  twice.  \n"
    data = text_data(tmp_path, text, text[:20_000], "wordpiece", tokenizer_vocab=300, model_vocab=320,
                     packing=packing, eval_sets=f"again=text:{tmp_path / 'corpus.txt'}")
    assert token_byte_lengths(data.tokenizer) is None

    def first_token_bytes(doc: str) -> int:  # from the start of the text to the end of its first token
        return len(doc[:data.tokenizer.tokenizer.encode(doc, add_special_tokens=False).offsets[0][1]].encode())

    held_out = text[int(len(text) * 0.9):]
    # concat (lm.py) scores the held-out tail as one stream; segments packs its paragraphs, each a document
    docs = [held_out] if packing == "concat" else prepare.paragraphs(held_out)
    expected = sum(len(d.encode()) - first_token_bytes(d) for d in docs)
    scored = lambda batches: sum(float(np.sum(b["target_bytes"] * tasks_weights(b))) for b in batches)  # noqa: E731
    assert scored(data.eval_batches()) == expected
    [(_, batches)] = data.eval_sets()  # a set's documents are always its paragraphs
    paragraphs = prepare.paragraphs(held_out)
    if packing == "concat":  # one stream of paragraphs: only the first one's first token is not a target
        assert scored(batches) == len(held_out.encode()) - first_token_bytes(paragraphs[0])
    else:
        assert scored(batches) == expected


def tasks_weights(batch) -> np.ndarray:
    """The lm task's weight of each target: `weights`, 0 on packing's padding."""
    weights = batch.get("weights", np.ones(batch["targets"].shape, np.float32))
    return weights * (batch["segment_ids"] != 0) if "segment_ids" in batch else weights


def text_data(tmp_path, text: str, tokenizer_text: str, kind: str, tokenizer_vocab: int, model_vocab: int, **data):
    """The tiny GPT's pipeline over `text` in a file, with a `kind` tokenizer trained on `tokenizer_text`; every
    eval is one pass over the whole held-out part (train.eval_steps=0)."""
    tokenizer = tokenizer_training.train_tokenizer([tokenizer_text], kind=kind, vocab_size=tokenizer_vocab)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "corpus.txt").write_text(text)
    config = load_config("configs/gpt/tiny.py:runlocal")
    config.model.update(d_model=32, num_layers=1, num_heads=2, max_len=64, vocab_size=model_vocab)
    config.data.update(source="text", path=str(tmp_path / "corpus.txt"), tokenizer=str(tmp_path / "tokenizer.json"),
                       seq_len=64, batch_size=8, **data)
    config.train.eval_steps = 0
    return data_lib.make_data(config, None)


@pytest.fixture(scope="module")
def corpus(repo_data):
    return (repo_data / "tinyshakespeare.txt").read_text()[:24_000] + "\n\nNaïve CAFÉ — “quoted”,  twice.  \n"


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory, corpus):
    """A WordPiece tokenizer.json and a SentencePiece model (sentencepiece's trainer), both trained on the corpus."""
    out = tmp_path_factory.mktemp("tokenizers")
    tokenizer_training.train_tokenizer([corpus], kind="wordpiece", vocab_size=300).save(str(out / "wordpiece.json"))
    return {"wordpiece": str(out / "wordpiece.json"), "sentencepiece": train_sentencepiece(corpus, out / "sp")}


def train_sentencepiece(text: str, prefix) -> str:
    spm = pytest.importorskip("sentencepiece")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text.splitlines()), model_prefix=str(prefix),
                                   vocab_size=300, character_coverage=1.0, minloglevel=2)
    return f"{prefix}.model"


def first_token_bytes(tokenizer, doc: str) -> int:
    """The UTF-8 bytes from the start of `doc` to the end of its first token (to its end when that is its only
    token), from the tokenizer library's own offsets (SentencePiece's are bytes, the tokenizers library's
    characters)."""
    if len(tokenizer.encode(doc)) == 1:
        return len(doc.encode())
    if hasattr(tokenizer, "processor"):
        return tokenizer.processor.encode_as_proto(doc).pieces[0].end
    return len(doc[:tokenizer.tokenizer.encode(doc, add_special_tokens=False).offsets[0][1]].encode())


def expected_bytes(tokenizer, docs: list[str], packing: str) -> int:
    """The bytes of text an eval pass over `docs` scores: all of theirs but their first tokens' (segments: every
    document's first token is no target), or but the first document's first token (concat: one stream)."""
    total = sum(len(d.encode()) for d in docs)
    if packing == "concat":
        return total - first_token_bytes(tokenizer, docs[0])
    return total - sum(first_token_bytes(tokenizer, d) for d in docs)


def scored_bytes(batches) -> float:
    return sum(float(np.sum(b["target_bytes"] * tasks_weights(b))) for b in batches)


def lm_config(tmp_path, tokenizer_path: str, **data):
    config = load_config("configs/gpt/tiny.py:runlocal")
    config.model.update(d_model=32, num_layers=1, num_heads=2, max_len=64, vocab_size=320)
    config.data.update(tokenizer=tokenizer_path, seq_len=64, batch_size=8, **data)
    config.train.eval_steps = 0
    return config


@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece"])
@pytest.mark.parametrize("packing", ["concat", "segments"])
def test_shards_record_each_tokens_bytes_for_the_eval(tmp_path, corpus, tokenizer_files, kind, packing):
    """bmjax-prepare-data writes each token's bytes of text beside its id where ids have no fixed bytes, so an
    ArrayRecord run (its held-out documents and an arrayrecord eval set) reports exact bits per byte."""
    tokenizer = load_tokenizer_file(tokenizer_files[kind])
    docs = prepare.text_documents([write(tmp_path / "corpus.txt", corpus)], "paragraph")
    metadata = prepare.prepare_shards(docs, str(tmp_path / "shards"), tokenizer, num_shards=2, progress=False)
    assert metadata["token_bytes"] == "<u4" and metadata["bytes"] == len(corpus.encode())
    glob = str(tmp_path / "shards" / "*.arrayrecord")
    config = lm_config(tmp_path, tokenizer_files[kind], source="arrayrecord", path=glob, packing=packing,
                       eval_sets=f"again=arrayrecord:{glob}")
    data = data_lib.make_data(config, None)
    held_out = docs[int(len(docs) * 0.9):]  # the last data.eval_fraction of the documents
    assert scored_bytes(data.eval_batches()) == expected_bytes(tokenizer, held_out, packing)
    [(_, batches)] = data.eval_sets()
    assert scored_bytes(batches) == expected_bytes(tokenizer, held_out, packing)
    assert "target_bytes" not in next(data.train_iter)  # training reads the ids alone


def test_shards_prepared_without_byte_counts_say_so(tmp_path, corpus, tokenizer_files, caplog):
    """Shards of an older bmjax-prepare-data (no "token_bytes"): the eval has no target bytes, and a warning says
    why rather than a silent null."""
    import json
    import logging

    from array_record.python.array_record_module import ArrayRecordWriter

    from bmjax.data import shards

    tokenizer = load_tokenizer_file(tokenizer_files["wordpiece"])
    docs = prepare.text_documents([write(tmp_path / "corpus.txt", corpus)], "paragraph")
    metadata = prepare.prepare_shards(docs, str(tmp_path / "shards"), tokenizer, num_shards=1, progress=False)
    old = {k: v for k, v in metadata.items() if k != "token_bytes"}
    out = tmp_path / "old"
    out.mkdir()
    for name in metadata["shards"]:  # the ids alone, as older records held them
        token_shards = shards.TokenShards([str(tmp_path / "shards" / name)], metadata)
        writer = ArrayRecordWriter(str(out / name), prepare.WRITER_OPTIONS)
        for i in range(len(token_shards)):
            writer.write(shards.encode_record(token_shards[i], np.dtype(metadata["dtype"])))
        writer.close()
    (out / shards.METADATA_FILE).write_text(json.dumps({"format": shards.FORMAT, **old}))
    config = lm_config(tmp_path, tokenizer_files["wordpiece"], source="arrayrecord", path=str(out / "*.arrayrecord"))
    with caplog.at_level(logging.WARNING):
        data = data_lib.make_data(config, None)
    assert "hold no byte counts" in caplog.text
    assert all("target_bytes" not in b for b in data.eval_batches())


@pytest.mark.parametrize("kind", ["wordpiece", "sentencepiece"])
def test_tfds_documents_count_their_bytes_when_read(tmp_path, tokenizer_files, kind):
    tfds = pytest.importorskip("tensorflow_datasets")
    tokenizer = load_tokenizer_file(tokenizer_files[kind])
    config = lm_config(tmp_path, tokenizer_files[kind], source="tfds", tfds_name="lm1b", train_split="train",
                       eval_split="test", packing="segments")
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        texts = TfdsDocuments("lm1b", "test", "text").read(0, 12)
        scored = scored_bytes(data_lib.make_data(config, None).eval_batches())
    texts = [t for t in texts if len(tokenizer.encode(t)) > 0]
    assert scored == expected_bytes(tokenizer, texts, "segments") > 0


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)
