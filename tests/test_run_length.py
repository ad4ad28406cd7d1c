"""How long a run is and how it ends: `train.steps` that is not a multiple of `train.steps_per_call` runs a
shorter last call and ends exactly at train.steps with its eval and checkpoint; the end-of-run sample is written
after the final checkpoint is committed and samples from the parameters as they are sharded."""
import json

import pytest

from bmjax.defaults import base_config
from bmjax.train.loop import train_and_evaluate


def tiny_config(steps: int, steps_per_call: int = 1):
    c = base_config()
    c.model.vocab_size = 320
    c.model.d_model = 32
    c.model.num_layers = 1
    c.model.num_heads = 2
    c.model.max_len = 32
    c.data.source = "builtin"
    c.data.seq_len = 32
    c.data.batch_size = 8
    c.optim.warmup_steps = 2
    c.train.steps = steps
    c.train.steps_per_call = steps_per_call
    c.train.log_every = steps_per_call
    c.train.eval_every = steps_per_call
    c.train.ckpt_every = steps_per_call
    c.train.eval_steps = 1
    c.train.sample_tokens = 0
    c.train.progress = False
    return c


def rows(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def checkpoint_steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_steps_not_a_multiple_of_steps_per_call_end_exactly_at_train_steps(tmp_path):
    fused, single = tmp_path / "fused", tmp_path / "single"
    train_and_evaluate(tiny_config(steps=7, steps_per_call=3), str(fused))
    logged = rows(fused)
    assert [r["step"] for r in logged if r["split"] == "train"] == [3, 6, 7]
    assert [r["step"] for r in logged if r["split"] == "eval"] == [3, 6, 7]  # the final eval at step 7
    assert checkpoint_steps(fused)[-1] == 7
    # The shorter last call is the same maths: step 7's loss is the one-step-per-call run's.
    config = tiny_config(steps=7)
    config.train.log_every = config.train.eval_every = config.train.ckpt_every = 7
    train_and_evaluate(config, str(single))
    want = {r["split"]: r["loss"] for r in rows(single) if r["step"] == 7}
    got = {r["split"]: r["loss"] for r in logged if r["step"] == 7}
    assert got == pytest.approx(want, rel=1e-5) and set(got) == {"train", "eval"}
