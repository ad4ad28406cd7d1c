"""Bits per byte for tokenizer files (byte-level BPE, WordPiece): the eval's target bytes are the held-out text's
own UTF-8 bytes, counted directly from the source text."""
import numpy as np
import pytest

from bmjax import data as data_lib
from bmjax.data import prepare, tokenizer_training
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
