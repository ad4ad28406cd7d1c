"""Every bad config or input is caught before anything compiles and reported as one line naming the key.

The table runs `validate.validate_config` in process (what the CLI runs first, on the resolved config, with the
8 fake devices of conftest); a few cases go through the real CLI to check exit code 2, one line, no traceback.
"""
import ast
import pathlib
import re
import subprocess
import sys

import pytest

from bmjax import validate
from bmjax.errors import ConfigError
from helpers.configs import load_config, set_keys

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def files(tmp_path, repo_data):
    """Paths the table refers to by name: a small text file, empty files, a file standing where a dir should."""
    text = tmp_path / "text.txt"
    text.write_text((repo_data / "tinyshakespeare.txt").read_text()[:20_000])
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "a_file").write_text("not a directory")
    bad_vocab_dir = tmp_path / "bad_vocab_run"
    bad_vocab_dir.mkdir()
    (bad_vocab_dir / "vocab.json").write_text("")
    return {"TEXT": str(text), "EMPTY": str(tmp_path / "empty.txt"), "EMPTYJSON": str(tmp_path / "empty.json"),
            "MISSING": str(tmp_path / "missing.txt"), "TMP": str(tmp_path)}


CHAR = {"data.source": "text", "data.path": "TEXT", "data.tokenizer": "char"}

# (id, overrides on configs/gpt/tiny.py, workdir, the key the one-line error must name, text it must contain)
CASES = [
    ("unknown model", {"model.name": "llama"}, None, "model.name", "allowed: gpt"),
    ("unknown schedule", {"optim.schedule": "exponential"}, None, "optim.schedule", "allowed: cosine"),
    ("unknown dtype", {"model.dtype": "float8"}, None, "model.dtype", "allowed: float32, bfloat16"),
    ("unknown attention", {"model.attention": "flash"}, None, "model.attention", "allowed: xla"),
    ("unknown tokenizer", {"data.tokenizer": "sentencepiece"}, None, "data.tokenizer", "byte"),
    ("unknown on_nonfinite", {"train.on_nonfinite": "ignore"}, None, "train.on_nonfinite", "allowed: halt, skip"),
    ("unknown source", {"data.source": "s3"}, None, "data.source", "builtin"),
    ("heads do not divide width", {"model.num_heads": 3}, None, "model.num_heads", "d_model=128"),
    ("kv heads do not divide heads", {"model.num_kv_heads": 3}, None, "model.num_kv_heads", "num_heads=4"),
    ("batch not divisible by devices", {"data.batch_size": 12}, None, "data.batch_size", "data x fsdp = 8"),
    ("grad_accum does not divide batch", {"optim.grad_accum": 3}, None, "optim.grad_accum", "batch_size=16"),
    ("mesh product is not the device count", {"mesh.data": 3}, None, "mesh", "there are 8"),
    ("mup without a base width", {"model.parametrization": "mup"}, None, "model.mup_base_width", "positive integer"),
    ("mup base width 0", {"model.parametrization": "mup", "model.mup_base_width": 0}, None, "model.mup_base_width",
     "got 0"),
    ("mup base width not divisible by the heads", {"model.parametrization": "mup", "model.mup_base_width": 30}, None,
     "model.mup_base_width", "num_heads=4"),
    ("mup base width without mup", {"model.mup_base_width": 64}, None, "model.mup_base_width",
     "only read with model.parametrization=mup"),
    ("mup output multiplier 0", {"model.parametrization": "mup", "model.mup_base_width": 64,
                                 "model.mup_output_mult": 0.0}, None, "model.mup_output_mult", "positive number"),
    ("mup output multiplier without mup", {"model.mup_output_mult": 4.0}, None, "model.mup_output_mult",
     "only read with model.parametrization=mup"),
    ("mesh axes leave no whole data axis", {"mesh.tensor": 3}, None, "mesh.tensor", "does not divide 8"),
    ("negative lr", {"optim.lr": -1e-3}, None, "optim.lr", ">= 0"),
    ("cooldown fraction 0", {"optim.schedule": "wsd", "optim.cooldown_fraction": 0.0}, None,
     "optim.cooldown_fraction", "must be in (0, 1]"),
    ("checkpoint step past the run", {"train.ckpt_steps": (10**6,)}, None, "train.ckpt_steps",
     "must be a list of steps in [1, train.steps="),
    ("NaN lr", {"optim.lr": float("nan")}, None, "optim.lr", "finite"),
    ("negative steps", {"train.steps": -5}, None, "train.steps", "positive"),
    ("dropout of 1", {"model.dropout": 1.0}, None, "model.dropout", "[0, 1)"),
    ("negative dropout", {"model.dropout": -0.1}, None, "model.dropout", "[0, 1)"),
    ("zero layers", {"model.num_layers": 0}, None, "model.num_layers", "positive"),
    ("zero checkpoints kept", {"train.keep_ckpts": 0}, None, "train.keep_ckpts", "positive"),
    ("log_every not a multiple of steps_per_call", {"train.steps_per_call": 2, "train.log_every": 5}, None,
     "train.log_every", "multiple"),
    ("sequence longer than max_len", {"data.seq_len": 256}, None, "data.seq_len", "max_len"),
    ("vocab smaller than the byte tokenizer", {"model.vocab_size": 100}, None, "model.vocab_size", "260"),
    ("vocab smaller than the char tokenizer", {**CHAR, "model.vocab_size": 20}, None, "model.vocab_size", "char"),
    ("sample prompt outside the char vocab", {**CHAR, "train.sample_prompt": "\u00e9t\u00e9"}, None,
     "train.sample_prompt", "outside the char vocabulary"),
    ("missing tokenizer file", {"data.tokenizer": "MISSING/vocab.txt"}, None, "data.tokenizer", "no such"),
    ("empty tokenizer file", {"data.tokenizer": "EMPTYJSON"}, None, "data.tokenizer", "EMPTYJSON"),
    ("missing data file", {"data.source": "text", "data.path": "MISSING"}, None, "data.path", "no such file"),
    ("empty data file", {"data.source": "text", "data.path": "EMPTY"}, None, "data.path", "empty"),
    ("empty saved char vocabulary", CHAR, "TMP/bad_vocab_run", "data.tokenizer", "vocab.json"),
    ("cudnn attention without a GPU", {"model.attention": "cudnn"}, None, "model.attention", "GPU"),
    ("min_lr above lr", {"optim.min_lr": 1.0}, None, "optim.min_lr", "must be in [0, optim.lr=0.002], got 1.0"),
    ("negative warmup", {"optim.warmup_steps": -1}, None, "optim.warmup_steps", "must be >= 0, got -1"),
    ("zero decay steps", {"optim.decay_steps": 0}, None, "optim.decay_steps", "must be positive, got 0"),
    ("negative weight decay", {"optim.weight_decay": -0.1}, None, "optim.weight_decay", "must be >= 0"),
    ("negative grad clip", {"optim.grad_clip": -1.0}, None, "optim.grad_clip", "0 turns clipping off"),
    ("b2 of 1", {"optim.b2": 1.0}, None, "optim.b2", "Adam betas must be in [0, 1), got (0.9, 1.0)"),
    ("zero init_std", {"model.init_std": 0.0}, None, "model.init_std", "must be > 0, got 0.0"),
    ("zero norm_eps", {"model.norm_eps": 0.0}, None, "model.norm_eps", "must be > 0, got 0.0"),
    ("eval fraction of 1", {"data.eval_fraction": 1.0}, None, "data.eval_fraction", "must be in (0, 1)"),
    ("negative sample tokens", {"train.sample_tokens": -1}, None, "train.sample_tokens", "must be >= 0, got -1"),
    ("epochs for a language model", {"train.epochs": 2, "train.steps": 0}, None, "train.epochs",
     "trains for train.steps"),
    ("steps beside epochs", {"data.task": "classification", "model.name": "bert", "model.heads": "classification",
                             "train.epochs": 2}, None, "train.steps", "must be 0 when train.epochs is set"),
    ("GPT for masked LM", {"data.task": "mlm"}, None, "model.name", "task 'mlm' trains a BERT, got 'gpt'"),
    ("BERT for language modelling", {"model.name": "bert"}, None, "model.name", "task 'lm' trains a GPT"),
    ("BERT pretraining without its heads", {"data.task": "mlm", "model.name": "bert", "model.heads": "mlm"}, None,
     "model.heads", "task 'mlm' needs heads='pretraining', got 'mlm'"),
    ("classes that do not match the labels", {"data.task": "classification", "model.name": "bert",
                                              "model.heads": "classification", "model.num_labels": 3,
                                              "data.labels": "neg,pos"}, None, "model.num_labels",
     "3 does not match the 2 labels of data.labels (neg, pos)"),
    ("negative d_ff", {"model.d_ff": -4}, None, "model.d_ff", "must be positive, got -4"),
    ("rotary with an odd head dimension", {"model.num_heads": 128, "model.position": "rotary"}, None,
     "model.position", "rotary needs an even head dimension, got 1"),
    ("sequence not divisible by mesh.sequence", {"mesh.data": 1, "mesh.sequence": 8, "data.seq_len": 100}, None,
     "data.seq_len", "100 is not divisible by mesh.sequence=8"),
    ("workdir under a file", {}, "TMP/a_file/run", "workdir", "not a directory"),
    ("workdir on a filesystem that refuses writes", {}, "/sys/bmjax-run", "workdir", "not writable"),
]


@pytest.mark.parametrize("overrides,workdir,key,text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_raises_one_line_naming_the_key(tmp_path, files, overrides, workdir, key, text):
    def fill(value):
        if not isinstance(value, str):
            return value
        for name in sorted(files, key=len, reverse=True):  # EMPTYJSON before EMPTY
            value = value.replace(name, files[name])
        return value

    config = tiny_with({dotted: fill(value) for dotted, value in overrides.items()})
    with pytest.raises(ConfigError) as info:
        validate.validate_config(config, pathlib.Path(fill(workdir) if workdir else tmp_path / "run"))
    message = str(info.value)
    assert info.value.key == key, message
    assert message.startswith(f"{key}: ") and "\n" not in message
    assert fill(text) in message, message


def tiny_with(overrides):
    """configs/gpt/tiny.py with `overrides` (dotted keys)."""
    config = load_config("configs/gpt/tiny.py")
    with config.unlocked():
        return set_keys(config, overrides)


def refused(overrides, workdir):
    """The ConfigError validation raises for configs/gpt/tiny.py with `overrides`."""
    config = tiny_with(overrides)
    with pytest.raises(ConfigError) as info:
        validate.validate_config(config, workdir)
    return str(info.value)


@pytest.mark.parametrize("key", list(validate.CHOICES))
def test_every_choice_key_refuses_an_unknown_value_listing_the_allowed_ones(tmp_path, key):
    assert refused({key: "bogus"}, tmp_path) == f"{key}: got 'bogus'; allowed: {', '.join(validate.CHOICES[key])}"


@pytest.mark.parametrize("key", validate.FINITE)
def test_every_float_key_refuses_nan(tmp_path, key):
    assert refused({key: float("nan")}, tmp_path) == f"{key}: must be a finite number, got nan"


POSITIVE_INTEGERS = ("model.vocab_size", "model.d_model", "model.num_layers", "model.num_heads", "model.max_len",
                     "data.seq_len", "data.batch_size", "optim.grad_accum", "train.log_every", "train.eval_every",
                     "train.ckpt_every", "train.keep_ckpts", "train.steps_per_call")


@pytest.mark.parametrize("key", POSITIVE_INTEGERS)
def test_every_count_refuses_zero(tmp_path, key):
    assert refused({key: 0}, tmp_path) == f"{key}: must be a positive integer, got 0"


def test_eval_steps_zero_is_one_full_pass_for_language_models_only(tmp_path):
    """train.eval_steps=0 means one pass over the whole held-out set, which the LM pipelines implement."""
    message = "train.eval_steps: must be a positive integer (or 0 with data.task=lm), got {}"
    assert refused({"train.eval_steps": -1}, tmp_path) == message.format(-1)
    assert refused({"train.eval_steps": 0, "data.task": "mlm", "model.name": "bert"}, tmp_path) == message.format(0)
    validate.validate_config(tiny_with({"train.eval_steps": 0}), tmp_path)  # lm: accepted


def keys_validate_names():
    """Every config key (or 'workdir') written as a string in bmjax/validate.py: the keys its errors name."""
    tree = ast.parse((REPO / "bmjax" / "validate.py").read_text())
    pattern = re.compile(r"(model|data|optim|mesh|train|wandb)\.[a-z0-9_]+|workdir")
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and pattern.fullmatch(node.value)}


def test_every_key_validation_names_has_a_case():
    """A check added to validate.py without a row here fails this test (as does a row whose key no check names
    any more, unless another module's check names it)."""
    covered = ({c[3] for c in CASES} | set(validate.CHOICES) | set(validate.FINITE) | set(POSITIVE_INTEGERS)
               | {"train.eval_steps"})
    assert keys_validate_names() - covered == set()
    elsewhere = {"mesh", "mesh.tensor", "data.tokenizer", "data.source", "data.path"}  # mesh.py, data/, tokenizers
    assert {c[3] for c in CASES} - keys_validate_names() == elsewhere


# --- H3 (issue 11 item 5): validation sits below the trainer ---------------------------------------------------

def test_validation_imports_nothing_from_the_trainer():
    """bmjax.train.loop imports bmjax.validate; the other way round would be a cycle."""
    code = "import sys, bmjax.validate; print(sorted(m for m in sys.modules if m.startswith('bmjax.train')))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
