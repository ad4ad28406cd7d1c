"""μP through the trainer: the coordinate check tells μP from the standard parametrisation, μP at the base width
trains exactly as the standard model, and a μP model resumes exactly, shards, accumulates gradients and
fine-tunes (train.init_from) like any other, a BERT classifier from a μP pretraining workdir included."""
import importlib.util
import json
import pathlib
import shutil

import numpy as np
import pytest

from bmjax.defaults import base_config
from bmjax.errors import ConfigError
from bmjax.train import init_from
from bmjax.train.loop import train_and_evaluate

REPO = pathlib.Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("mup_coord_check", REPO / "tools" / "mup_coord_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WIDTHS = (32, 64, 128)
MUP_FACTOR = 2.0  # μP: after updates every layer's RMS varies less than this across a 4x range of widths


@pytest.fixture(scope="module")
def coord_check():
    """3 Adam steps (lr 1e-2) of a 1-layer GPT at widths 32-128 (μP base 32), both parametrisations."""
    return _tool().coord_check(WIDTHS, steps=3, base_width=32, num_layers=1, seq_len=32, batch_size=8)


def _spread(result, parametrization, step, layer):
    sizes = [result[parametrization][w][step][layer] for w in WIDTHS]
    return sizes, max(sizes) / min(sizes)


def test_coordinate_check_mup_layers_stay_flat_in_width(coord_check):
    """Before step 3 (two updates in), every layer's output RMS under μP is within MUP_FACTOR across widths
    (measured: at most 1.3x)."""
    for layer in coord_check["mup"][WIDTHS[0]][2]:
        sizes, spread = _spread(coord_check, "mup", 2, layer)
        assert spread < MUP_FACTOR, (layer, sizes)


def test_coordinate_check_standard_logits_grow_with_width(coord_check):
    """Under the standard parametrisation the same two updates make the logits (and the residual stream) grow
    with width: by more than the factor μP stays within (measured: ~3.7x over 4x width)."""
    for layer in ("logits", "block0.out"):
        sizes, spread = _spread(coord_check, "standard", 2, layer)
        assert sizes == sorted(sizes) and spread > MUP_FACTOR, (layer, sizes)


def gpt_config(steps=8, **model):
    c = base_config()
    c.model.update(dict(vocab_size=320, d_model=32, num_layers=1, num_heads=2, max_len=32, **model))
    c.data.source = "builtin"
    c.data.seq_len = 32
    c.data.batch_size = 8
    c.optim.lr = 1e-2
    c.optim.warmup_steps = 2
    c.train.steps = steps
    c.train.log_every = 1
    c.train.eval_every = steps
    c.train.eval_steps = 1
    c.train.ckpt_every = 4
    c.train.sample_tokens = 0
    c.train.progress = False
    return c


def rows(workdir):
    return [json.loads(line) for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def losses(workdir, split="train"):
    return [(r["step"], r["loss"]) for r in rows(workdir) if r["split"] == split]


MUP = dict(parametrization="mup", mup_base_width=16)  # d_model 32: m = 2


def test_mup_at_the_base_width_trains_exactly_as_standard(tmp_path):
    train_and_evaluate(gpt_config(), str(tmp_path / "standard"))
    train_and_evaluate(gpt_config(parametrization="mup", mup_base_width=32), str(tmp_path / "base"))
    assert losses(tmp_path / "base") == losses(tmp_path / "standard")  # bit for bit, every step
    assert losses(tmp_path / "base", "eval") == losses(tmp_path / "standard", "eval")


@pytest.fixture(scope="module")
def mup_run(tmp_path_factory):
    """A μP run off its base width (8 steps, checkpoints at 4 and 8)."""
    workdir = tmp_path_factory.mktemp("mup") / "run"
    train_and_evaluate(gpt_config(**MUP), str(workdir))
    return workdir


def test_off_the_base_width_mup_is_not_the_standard_run(mup_run, tmp_path):
    """The comparisons below are of a run that μP changes (its losses differ from the standard model's)."""
    train_and_evaluate(gpt_config(), str(tmp_path / "standard"))
    assert losses(mup_run) != losses(tmp_path / "standard")


def test_mup_resumes_exactly(mup_run, tmp_path):
    """Resume from the step-4 checkpoint (the step-8 one removed): steps 5-8 log bitwise the same losses."""
    workdir = tmp_path / "resumed"
    shutil.copytree(mup_run, workdir)
    shutil.rmtree(workdir / "checkpoints" / "8")
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(mup_run) if r["step"] <= 4))
    train_and_evaluate(gpt_config(**MUP), str(workdir))
    assert losses(workdir) == losses(mup_run)
    assert losses(workdir, "eval") == losses(mup_run, "eval")


def test_mup_shards_and_accumulates_like_one_device(mup_run, tmp_path):
    """Parameters split over fsdp=2 x tensor=2, the batch over data=2 x fsdp=2 in 2 micro-batches: the same losses
    as the data-parallel run up to float32 reduction order (8 steps of Adam: ~1e-5 relative)."""
    c = gpt_config(**MUP)
    c.mesh.fsdp, c.mesh.tensor = 2, 2
    c.optim.grad_accum = 2
    train_and_evaluate(c, str(tmp_path / "sharded"))
    got, want = losses(tmp_path / "sharded"), losses(mup_run)
    assert [s for s, _ in got] == [s for s, _ in want]
    np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-4)


def test_mup_fine_tunes_from_its_workdir_and_refuses_another_parametrization(mup_run, tmp_path):
    """train.init_from a μP workdir continues from its parameters (the first loss is the source's last level, far
    below a fresh start's), and a standard config that would read μP weights with other multipliers is refused."""
    c = gpt_config(steps=2, **MUP)
    c.train.init_from = str(mup_run)
    c.train.ckpt_every = 2
    train_and_evaluate(c, str(tmp_path / "finetune"))
    first = losses(tmp_path / "finetune")[0][1]
    fresh, trained = losses(mup_run)[0][1], losses(mup_run)[-1][1]
    assert first < trained + 0.5 * (fresh - trained), (first, trained, fresh)

    standard = gpt_config(steps=2)
    standard.train.init_from = str(mup_run)
    with pytest.raises(ConfigError, match="model.parametrization='mup'"):
        init_from.check_init_from(standard)


BERT_SHAPE = dict(d_model=32, num_layers=1, num_heads=2, d_ff=64, max_len=32, init_std=0.1)
BERT_MUP = dict(parametrization="mup", mup_base_width=16, mup_output_mult=2.0)  # m = 2, the readouts' α = 2


def labelled_csv(path: pathlib.Path, n: int = 96):
    """Label 0: words of the letters a-h; label 1: words of s-z (separable from the bytes alone)."""
    rng = np.random.default_rng(0)
    letters = ["abcdefgh", "stuvwxyz"]
    lines = ["text,label"]
    for i in range(n):
        words = ["".join(rng.choice(list(letters[i % 2]), size=rng.integers(2, 6))) for _ in range(4)]
        lines.append(f"{' '.join(words)},{i % 2}")
    path.write_text("\n".join(lines) + "\n")


def test_bert_classifier_fine_tunes_from_a_mup_checkpoint(tmp_path, capsys):
    """A tiny μP BERT pretrained 4 steps, then configs/bert/finetune.py:init=ITS_WORKDIR (4 epochs of 72 rows, 18
    steps): the fine-tune config
    takes the parametrisation, base width and output multiplier from the source (so the encoder's weights are read
    with the multipliers they were trained under, and the classifier gets the same α·base/width), starts from the
    source's encoder, and its training loss falls."""
    from bmjax.models import mup
    from helpers.configs import load_config
    from helpers.metrics import read_rows

    c = load_config("configs/bert/tiny.py")
    c.model.update(dict(**BERT_SHAPE, **BERT_MUP))
    c.data.seq_len, c.data.batch_size = 32, 8
    c.optim.warmup_steps = 1
    c.train.update(dict(steps=4, log_every=1, eval_every=4, eval_steps=1, ckpt_every=4, progress=False))
    pretrain = tmp_path / "pretrain"
    train_and_evaluate(c, str(pretrain))

    csv = tmp_path / "labels.csv"
    labelled_csv(csv)
    f = load_config("configs/bert/finetune.py", f"data={csv},labels=2,init={pretrain}")
    assert {k: f.model[k] for k in BERT_MUP} == BERT_MUP  # carried from the source, not set here
    assert mup.readout_multiplier(f.model) == 2.0 * 16 / 32
    f.data.seq_len, f.data.batch_size, f.data.eval_fraction = 32, 16, 0.25
    f.optim.update(dict(lr=1e-2, warmup_steps=2, schedule="constant"))
    f.train.update(dict(epochs=4, steps_per_call=1, log_every=1, eval_every=18, ckpt_every=18, progress=False))
    f.model.dropout = 0.0
    finetune = tmp_path / "finetune"
    capsys.readouterr()
    train_and_evaluate(f, str(finetune))
    out = capsys.readouterr().out
    assert f"from {pretrain}/checkpoints/4" in out and "fresh: classifier; not used: mlm, nsp" in out
    train = [r["loss"] for r in read_rows(finetune) if r["split"] == "train"]
    assert len(train) == 18 and np.mean(train[-4:]) < np.mean(train[:4]) - 0.3, train  # from ln 2 = 0.69
