"""Tokenizers from files (data.tokenizer=PATH): tokenizer.json and BERT vocab.txt through the `tokenizers`
library, bmjax-train-tokenizer, and the errors for a missing file or a vocabulary larger than the model's."""
import pathlib

import pytest

from bmjax.data import FileTokenizer, build_tokenizer
from bmjax.defaults import base_config
from bmjax.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="module")
def train_tool():
    """bmjax-train-tokenizer's module: its main() and the library functions it imports."""
    import bmjax.cli.train_tokenizer

    return bmjax.cli.train_tokenizer


def config_with(tokenizer, vocab_size=1000):
    c = base_config()
    c.data.tokenizer = str(tokenizer)
    c.model.vocab_size = vocab_size
    return c


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    lines = [f"The quick brown fox number {i} jumps over the lazy dog, then sleeps." for i in range(200)]
    path.write_text("\n".join(lines) + "\nPython functions return values.\n")
    return path


def test_train_tokenizer_tool_writes_a_wordpiece_tokenizer_json(train_tool, text_file, tmp_path, capsys):
    out = tmp_path / "tok" / "tokenizer.json"
    assert train_tool.main(["--out", str(out), "--vocab_size", "120", "--input", str(text_file)]) == 0
    assert "wrote" in capsys.readouterr().out
    tok = build_tokenizer(config_with(out), None)
    assert isinstance(tok, FileTokenizer) and tok.vocab_size <= 120
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.special_ids == (0, 1, 2, 3, 4) and tok.eos_id is None
    ids = tok.encode("The LAZY fox")
    assert tok.cls_id not in ids and tok.sep_id not in ids  # encoding adds no specials
    assert tok.decode(ids) == "the lazy fox"  # lowercased, like bert-base-uncased
    assert len(tok.encode_batch(["fox", "the dog"])) == 2


def test_train_tokenizer_tool_bpe_keeps_case_and_has_an_end_of_text(train_tool, text_file, tmp_path):
    out = tmp_path / "bpe.json"
    assert train_tool.main(["--out", str(out), "--kind", "bpe", "--vocab_size", "300", "--input", str(text_file)]) == 0
    tok = build_tokenizer(config_with(out), None)
    assert tok.decode(tok.encode("The Quick fox!")) == "The Quick fox!"  # byte-level: nothing is unknown
    assert tok.eos_id == 5 and tok.mask_id == 4
    assert train_tool.main(["--out", str(out), "--input", str(tmp_path / "missing.txt")]) == 2


def test_train_tokenizer_on_the_builtin_corpus_function(train_tool):
    texts = train_tool.builtin_training_texts()
    tokenizer = train_tool.train_tokenizer(texts[:50], kind="wordpiece", vocab_size=300)
    assert tokenizer.token_to_id("[MASK]") == 4 and tokenizer.get_vocab_size() <= 300


def test_wordpiece_vocab_txt_reads_like_bert_base_uncased(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + ["hello", "world", "##s", "the", ",", "!"]) + "\n")
    tok = build_tokenizer(config_with(vocab), None)
    ids = tok.encode("Hello, WORLDS! the zebra")
    assert tok.vocab_size == 11 and (tok.cls_id, tok.sep_id, tok.mask_id) == (2, 3, 4)
    assert ids.tolist() == [5, 9, 6, 7, 10, 8, 1]  # hello , world ##s ! the [UNK]

    cased = tmp_path / "cased" / "vocab.txt"
    cased.parent.mkdir()
    cased.write_text("\n".join(SPECIALS + ["Hello", "hello"]) + "\n")
    assert build_tokenizer(config_with(cased), None).encode("Hello").tolist() == [5]  # capitals in vocab: cased


def test_missing_broken_or_too_large_tokenizer_files_are_config_errors(tmp_path, train_tool, text_file):
    with pytest.raises(ConfigError) as error:
        build_tokenizer(config_with(tmp_path / "nope.json"), None)
    assert error.value.key == "data.tokenizer" and "no such tokenizer file" in error.value.message

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError) as error:
        build_tokenizer(config_with(broken), None)
    assert error.value.key == "data.tokenizer" and "cannot load" in error.value.message

    out = tmp_path / "tokenizer.json"
    train_tool.main(["--out", str(out), "--vocab_size", "120", "--input", str(text_file)])
    with pytest.raises(ConfigError) as error:
        build_tokenizer(config_with(out, vocab_size=50), None)
    assert error.value.key == "model.vocab_size" and str(out) in error.value.message

    with pytest.raises(ConfigError) as error:
        build_tokenizer(config_with("sentencepiece"), None)
    assert error.value.key == "data.tokenizer" and "unknown tokenizer" in error.value.message
