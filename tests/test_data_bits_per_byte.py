"""Bits per byte for a byte-level BPE tokenizer file: the eval's target bytes are the held-out text's own UTF-8
bytes, counted directly from the source text."""
import numpy as np

from bmjax import data as data_lib
from bmjax.data import tokenizer_training
from bmjax.data.tokenizers import token_byte_lengths
from helpers.configs import load_config


def test_byte_level_bpe_ids_spell_the_texts_bytes(tmp_path, repo_data):
    text = (repo_data / "tinyshakespeare.txt").read_text()[:60_000] + "\nnaïve café — “quoted” 日本\n"
    tokenizer = tokenizer_training.train_tokenizer([text[:40_000]], kind="bpe", vocab_size=400)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "corpus.txt").write_text(text)
    config = load_config("configs/gpt/tiny.py:runlocal")
    config.model.update(d_model=32, num_layers=1, num_heads=2, max_len=64, vocab_size=448)
    config.data.update(source="text", path=str(tmp_path / "corpus.txt"), tokenizer=str(tmp_path / "tokenizer.json"),
                       seq_len=64, batch_size=8)
    config.train.eval_steps = 0  # one pass over the whole held-out tail
    data = data_lib.make_data(config, None)

    lengths = token_byte_lengths(data.tokenizer)
    unseen = "Thou art more lovely — “naïve” 日本 ✓"  # characters the vocabulary never merged
    assert lengths[data.tokenizer.encode(unseen)].sum() == len(unseen.encode())

    held_out = text[int(len(text) * 0.9):]
    first = data.tokenizer.encode(held_out)[0]  # the held-out stream's first token is nobody's target
    scored = sum(float(np.sum(b["target_bytes"] * b["weights"])) for b in data.eval_batches())
    assert scored == len(held_out.encode()) - lengths[first]
