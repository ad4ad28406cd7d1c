"""An unset model.vocab_size is the tokenizer's (bmjax.data.model_vocab_size): the README's ArrayRecord recipe
(a BPE tokenizer -> shards -> configs/gpt/tiny.py with data.tokenizer) trains without --config.model.vocab_size,
its config.json records the resolved value, and the sweep planner counts N and FLOPs as the run's summary.json
does. An explicit value too small for the tokenizer stays one ConfigError."""
import json
import pathlib

import jax
import pytest

from bmjax import data as data_lib
from bmjax import validate
from bmjax.data import sources, tokenizer_training
from bmjax.errors import ConfigError
from bmjax.models import flops, model_config
from bmjax.scaling import plan
from bmjax.scaling import sweep as sweep_lib
from bmjax.train.loop import train_and_evaluate
from helpers.configs import load_config
from helpers.documents import write_shards

BPE_IDS = 600  # not a multiple of 64: resolved to 640
STEPS = 4


def recipe_overrides(files: dict) -> dict:
    return {"data.source": "arrayrecord", "data.path": files["shards"] + "/*.arrayrecord",
            "data.tokenizer": files["tokenizer"], "data.seq_len": 32, "data.batch_size": 8, "train.steps": STEPS,
            "train.log_every": 2, "train.eval_every": STEPS, "train.ckpt_every": STEPS, "train.eval_steps": 1,
            "train.sample_tokens": 0, "train.progress": False}


def tiny_with(overrides: dict):
    config = load_config("configs/gpt/tiny.py:runlocal")
    for key, value in overrides.items():
        sweep_lib.set_key(config, key, value)
    return config


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A byte-level BPE tokenizer of BPE_IDS ids and ArrayRecord shards it tokenised, as the README's recipe."""
    root = tmp_path_factory.mktemp("recipe")
    config = load_config("configs/gpt/tiny.py")
    docs = list(sources.load_corpus(config).train[:200])
    tokenizer = tokenizer_training.train_tokenizer(docs, kind="bpe", vocab_size=BPE_IDS)
    assert tokenizer.get_vocab_size() == BPE_IDS
    tokenizer.save(str(root / "tokenizer.json"))
    write_shards(docs, root / "shards", data_lib.build_tokenizer(tiny_with(
        {"data.tokenizer": str(root / "tokenizer.json")}), None), num_shards=2)
    return {"tokenizer": str(root / "tokenizer.json"), "shards": str(root / "shards"), "root": root}


@pytest.fixture(scope="module")
def trained(files):
    workdir = files["root"] / "run"
    train_and_evaluate(tiny_with(recipe_overrides(files)), str(workdir))
    return workdir


def test_the_byte_tokenizer_resolves_to_the_old_explicit_320():
    config = load_config("configs/gpt/tiny.py")
    assert config.model.vocab_size is None
    assert data_lib.model_vocab_size(config) == 320
    assert validate.validate_compile_target(config, jax.devices()[:1]).config.model.vocab_size == 320


def test_the_recipe_trains_without_the_flag_and_records_the_resolved_size(trained):
    recorded = json.loads((trained / "config.json").read_text())
    assert recorded["model"]["vocab_size"] == 640
    assert json.loads((trained / "summary.json").read_text())["status"] == "finished"


def test_the_sweep_planner_counts_what_the_summary_counts(files, trained, tmp_path):
    summary = json.loads((trained / "summary.json").read_text())
    counted = flops.param_counts(model_config(json.loads((trained / "config.json").read_text())["model"]))
    assert summary["N"] == counted["non_embedding"] and summary["N_total"] == counted["total"]

    sweep_file = tmp_path / "vocab_sweep.py"
    sweep_file.write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('tiny', {str(pathlib.Path('configs/gpt/tiny.py').resolve())!r})\n"
        "tiny = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(tiny)\n"
        "def get_config(arg=''):\n"
        "    return tiny.get_config('runlocal')\n"
        "def get_sweep(arg=''):\n"
        f"    return [{recipe_overrides(files)!r}]\n")
    (run,) = sweep_lib.load_sweep(str(sweep_file)).runs
    assert "model.vocab_size" not in run.args  # the trainer resolves it the same way
    per_token = run.flops_per_step / (8 * 32)
    assert summary["C"] == pytest.approx(summary["D"] * per_token, rel=1e-12)

    unset = tiny_with(recipe_overrides(files))  # the planner's count of the config itself
    assert plan.count_params(unset, "non_embedding") == summary["N"]
    assert plan.count_params(unset, "total") == summary["N_total"]


def test_an_explicit_size_too_small_for_the_tokenizer_is_one_error(files, tmp_path):
    config = tiny_with({**recipe_overrides(files), "model.vocab_size": 320})
    with pytest.raises(ConfigError) as error:
        validate.validate_config(config, tmp_path / "run")
    assert error.value.key == "model.vocab_size"
    assert "320 is smaller than the" in error.value.message and f"{BPE_IDS} ids" in error.value.message
    assert not (tmp_path / "run").exists()
