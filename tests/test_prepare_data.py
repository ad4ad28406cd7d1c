"""bmjax-prepare-data: documents -> ArrayRecord token shards that decode back to the input, the same bytes on
every run, metadata beside them, and one line for bad input."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bmjax.data import ByteTokenizer, CharTokenizer, prepare, shards
from bmjax.data.tfds_documents import TfdsDocuments
from bmjax.data.tokenizer_files import load_tokenizer_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def text(repo_data):
    return (repo_data / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000]


@pytest.fixture(scope="module")
def bpe_path(tmp_path_factory, text):
    """A small GPT-2-style byte-level BPE trained as bmjax-train-tokenizer trains it, on the text."""
    from bmjax.data.tokenizer_training import train_tokenizer

    path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
    train_tokenizer([text], kind="bpe", vocab_size=400).save(str(path))
    return str(path)


def read_documents(out_dir):
    metadata = shards.read_metadata(str(out_dir), "test")
    paths = [os.path.join(out_dir, name) for name in metadata["shards"]]
    token_shards = shards.TokenShards(paths, metadata)
    return metadata, [token_shards[i] for i in range(len(token_shards))]


@pytest.mark.parametrize("kind", ["byte", "char", "bpe"])
def test_records_decode_back_to_the_input(tmp_path, text, bpe_path, kind):
    docs = prepare.text_documents([_write(tmp_path / "in.txt", text)], "paragraph")
    assert "".join(docs) == text and len(docs) > 50
    tokenizer = {"byte": ByteTokenizer(), "char": CharTokenizer.from_texts(docs),
                 "bpe": load_tokenizer_file(bpe_path)}[kind]
    metadata = prepare.prepare_shards(docs, str(tmp_path / "out"), tokenizer, num_shards=3, progress=False)
    _, records = read_documents(tmp_path / "out")
    assert len(records) == len(docs) == metadata["documents"]
    if tokenizer.eos_id is not None:  # every document ends with the end-of-document id
        assert all(r[-1] == tokenizer.eos_id for r in records)
        records = [r[:-1] for r in records]
    assert "".join(tokenizer.decode(r) for r in records) == text
    assert all(tokenizer.decode(r) == d for r, d in zip(records, docs))
    assert metadata["tokens"] == sum(len(r) for r in records) + (len(docs) if tokenizer.eos_id is not None else 0)
    assert metadata["bytes"] == len(text.encode("utf-8"))
    assert metadata["tokenizer"] == shards.tokenizer_identity(tokenizer)
    if kind == "bpe":
        assert metadata["tokenizer"]["name"] == "tokenizer.json" and metadata["tokenizer"]["vocab_size"] == 400
        assert len(np.concatenate(records)) < 0.6 * len(text)  # merges, not bytes
    if kind == "char":
        assert CharTokenizer.load(str(tmp_path / "out" / "vocab.json")).chars == tokenizer.chars


def digest(directory):
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
            for name in sorted(os.listdir(directory))}


def test_shards_are_the_same_bytes_with_any_number_of_workers(tmp_path, text):
    docs = prepare.text_documents([_write(tmp_path / "in.txt", text)], "line")
    prepare.prepare_shards(docs, str(tmp_path / "a"), ByteTokenizer(), num_shards=4, workers=1, progress=False)
    prepare.prepare_shards(docs, str(tmp_path / "b"), ByteTokenizer(), num_shards=4, workers=2, progress=False)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert len([n for n in os.listdir(tmp_path / "a") if n.endswith(".arrayrecord")]) == 4
    # documents are laid out in order over the shards
    metadata, records = read_documents(tmp_path / "a")
    assert [ByteTokenizer().decode(r[:-1]) for r in records] == docs
    # a re-run with fewer shards leaves no stale shard behind
    prepare.prepare_shards(docs, str(tmp_path / "a"), ByteTokenizer(), num_shards=2, progress=False)
    assert sorted(n for n in os.listdir(tmp_path / "a") if n.endswith(".arrayrecord")) == [
        shards.shard_name("data", i, 2) for i in range(2)]


def test_jsonl_field_documents(tmp_path):
    rows = [{"text": "first doc", "id": 1}, {"text": "second\nwith a line", "id": 2}]
    path = _write(tmp_path / "in.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert prepare.jsonl_documents([path], "text") == ["first doc", "second\nwith a line"]


def test_tfds_dataset_through_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        docs = TfdsDocuments("lm1b", "train", "text")
        texts = docs.read(0, len(docs))
        metadata = prepare.prepare_shards(docs, str(tmp_path / "out"), ByteTokenizer(), num_shards=2, progress=False,
                                          source="tfds:lm1b/train")
    _, records = read_documents(tmp_path / "out")
    assert len(texts) == 12 and metadata["documents"] == 12 and metadata["source"] == "tfds:lm1b/train"
    assert [ByteTokenizer().decode(r[:-1]) for r in records] == texts


def run_tool(*args, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "bmjax.cli.prepare_data", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_shards_and_metadata(tmp_path, text):
    result = run_tool("--input", _write(tmp_path / "in.txt", text), "--out", str(tmp_path / "out"),
                      "--num_shards", "2", "--workers", "1", "--noprogress")
    assert result.returncode == 0, result.stderr[-2000:]
    metadata = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert metadata["shards"] == ["data-00000-of-00002.arrayrecord", "data-00001-of-00002.arrayrecord"]
    assert metadata["tokenizer"]["name"] == "byte" and metadata["source"] == "text:in.txt"
    assert "wrote" in result.stdout


def run_in_process(args, capsys):
    """prepare_data's main() on `args`, in this process (a subprocess per case would mostly import grain)."""
    from bmjax.cli import prepare_data

    code = prepare_data.main(args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args,culprit", [
    (["--input", "NOFILE", "--out", "OUT"], "--input"),
    (["--input", "EMPTY", "--out", "OUT"], "--input"),
    (["--input", "GOOD", "--out", "OUT", "--num_shards", "1000"], "--num_shards"),
    (["--input", "GOOD", "--out", "OUT", "--tokenizer", "NOFILE.json"], "--tokenizer"),
    (["--input", "GOOD", "--out", "OUT", "--tokenizer", "sentencepiece"], "--tokenizer"),
    (["--format", "jsonl", "--input", "GOOD", "--out", "OUT"], "--input"),
    (["--format", "tfds", "--tfds_name", "no_such_dataset_xyz", "--out", "OUT"], "--tfds_name"),
    (["--input", "GOOD"], "--out"),
], ids=["missing", "empty", "shards", "tokenizer", "unknown-tokenizer", "not-jsonl", "tfds", "no-out"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, culprit):
    names = {"NOFILE": str(tmp_path / "missing"), "EMPTY": _write(tmp_path / "empty.txt", ""),
             "GOOD": _write(tmp_path / "good.txt", "one\n\ntwo\n"), "OUT": str(tmp_path / "out")}
    args = [names.get(a, a.replace("NOFILE", names["NOFILE"])) for a in args]
    code, err = run_in_process([*args, "--workers", "1"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {culprit}"), err[-2000:]
    assert not (tmp_path / "out" / "metadata.json").exists()


def test_bad_input_exits_2_from_the_command_line(tmp_path):
    result = run_tool("--input", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == f"error: --input: no such file: {tmp_path / 'missing.txt'}"


def _write(path, content) -> str:
    path.write_text(content, encoding="utf-8")
    return str(path)


def test_a_sentencepiece_model_without_the_package_is_one_line(tmp_path, capsys):
    try:
        import sentencepiece  # noqa: F401
        pytest.skip("sentencepiece is installed")
    except ImportError:
        pass
    model = tmp_path / "spm.model"
    model.write_bytes(b"not checked before the import")
    code, err = run_in_process(["--input", _write(tmp_path / "in.txt", "x\n"), "--out", str(tmp_path / "out"),
                                "--tokenizer", str(model), "--workers", "1"], capsys)
    assert code == 2 and err.strip().startswith("error: --tokenizer:") and "sentencepiece package" in err
