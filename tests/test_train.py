"""The trainer end to end, in process: the loss falls, and a finished run resumes at the right step."""
import math
import time

import pytest

from bmjax.train.loop import train_and_evaluate
from helpers.configs import load_config
from helpers.metrics import read_rows


@pytest.fixture
def text_file(tmp_path, repo_data):
    path = tmp_path / "shakespeare.txt"
    path.write_text((repo_data / "tinyshakespeare.txt").read_text()[:200_000])
    return path


def small_char_config(text_file, steps=100):
    c = load_config("configs/gpt/shakespeare_char.py")
    c.data.path = str(text_file)
    c.mesh.cpu_devices = 0  # keep the 8 fake devices jax already runs with (unset: one device per core)
    c.model.num_layers = 2
    c.model.d_model = 64
    c.data.batch_size = 16
    c.data.seq_len = 32
    c.model.max_len = 32
    c.optim.lr = 3e-3
    c.optim.min_lr = 3e-4
    c.optim.warmup_steps = 5
    c.optim.decay_steps = steps
    c.train.steps = steps
    c.train.log_every = 10
    c.train.eval_every = 50
    c.train.eval_steps = 4
    c.train.ckpt_every = 50
    c.train.sample_tokens = 8
    c.train.progress = False
    return c


def logged_lr(step, lr=3e-3, min_lr=3e-4, warmup=5, decay_steps=100):
    """The rate of the update that produced `step` (the update from step - 1), by hand: linear warmup from 0,
    then cosine to min_lr at decay_steps."""
    t = step - 1
    if t < warmup:
        return lr * t / warmup
    progress = (min(t, decay_steps) - warmup) / (decay_steps - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def test_tiny_run_loss_falls(tmp_path, text_file):
    workdir = tmp_path / "run"
    started = time.perf_counter()
    final = train_and_evaluate(small_char_config(text_file), str(workdir))
    wall = time.perf_counter() - started
    rows = read_rows(workdir)
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == list(range(10, 101, 10))
    assert train[-1]["loss"] < train[0]["loss"] - 0.5
    evals = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [50, 100]
    assert evals[-1]["loss"] < 2.7  # uniform over 65 characters is 4.17, unigram frequencies ~3.3
    assert final["loss"] == pytest.approx(evals[-1]["loss"])
    assert [r["lr"] for r in train] == pytest.approx([logged_lr(r["step"]) for r in train], rel=1e-5)
    assert all(math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in train)
    # The first window is the call that compiled: no rate (NaN), rather than one that counts compilation.
    assert math.isnan(train[0]["tokens_per_sec"]) and math.isnan(train[0]["mfu"])
    timed = train[1:]
    # Each later row's tokens/s covers its 10 steps of 16 x 32 tokens; the windows are disjoint parts of the run,
    # so the time they imply adds up to less than the run's wall time (a rate too small, counted per device or
    # as one step's tokens over a window's time, would not).
    assert sum(10 * 16 * 32 / r["tokens_per_sec"] for r in timed) < wall
    assert all(r["tokens_per_sec"] > 10 * 16 * 32 / wall for r in timed)
    ratios = [r["mfu"] / r["tokens_per_sec"] for r in timed]  # MFU = tokens/s x FLOPs per token / peak
    assert ratios == pytest.approx([ratios[0]] * len(ratios), rel=1e-9) and ratios[0] > 0
    assert (workdir / "sample.txt").read_text()
    assert (workdir / "vocab.json").exists()


def test_finished_run_resumes_at_its_last_step(tmp_path, text_file, capsys):
    workdir = tmp_path / "run"
    config = small_char_config(text_file, steps=20)
    config.train.eval_every = 10
    config.train.ckpt_every = 10
    train_and_evaluate(config, str(workdir))
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["10", "20"]

    longer = small_char_config(text_file, steps=40)
    longer.optim.decay_steps = 20  # same schedule as the first run, continued
    longer.train.eval_every = 10
    longer.train.ckpt_every = 10
    train_and_evaluate(longer, str(workdir))
    assert "resuming from" in capsys.readouterr().out
    rows = read_rows(workdir)
    assert [r["step"] for r in rows if r["split"] == "train"] == [10, 20, 30, 40]
    assert [r["step"] for r in rows if r["split"] == "eval"] == [10, 20, 30, 40]


def test_steps_per_call_matches_one_step_per_call(tmp_path, text_file):
    """Fusing steps into one jit call with lax.scan is an optimisation only: the numbers are the same."""
    losses = {}
    for k in (1, 5):
        config = small_char_config(text_file, steps=20)
        config.train.steps_per_call = k
        workdir = tmp_path / f"k{k}"
        train_and_evaluate(config, str(workdir))
        losses[k] = [r["loss"] for r in read_rows(workdir)]
    assert losses[1] == pytest.approx(losses[5], rel=1e-5)
