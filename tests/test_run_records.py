"""Run records for scaling laws: cumulative tokens and FLOPs on every metrics row, summary.json and the W&B run
summary (read back from W&B's offline files), the status of finished, preempted and failed runs, and an eval
that scores the whole held-out text once, reported in bits per byte."""
import json
import math

import numpy as np
import pytest

from bmjax import metrics as metrics_lib
from bmjax.data import lm
from bmjax.models import flops, model_config
from bmjax.train import faults
from bmjax.train import loop as loop_lib
from bmjax.train.loop import train_and_evaluate
from helpers.metrics import read_rows

STEPS, BATCH, SEQ = 8, 8, 16


@pytest.fixture(scope="module")
def text_file(tmp_path_factory, repo_data):
    path = tmp_path_factory.mktemp("text") / "shakespeare_20k.txt"
    path.write_text((repo_data / "tinyshakespeare.txt").read_text()[:20_000])
    return path


def tiny_config(text_file, **changes):
    from bmjax.defaults import base_config

    c = base_config()
    c.model.vocab_size, c.model.d_model, c.model.num_layers, c.model.num_heads, c.model.max_len = 320, 32, 1, 2, SEQ
    c.data.source, c.data.path, c.data.tokenizer = "text", str(text_file), "byte"
    c.data.seq_len, c.data.batch_size = SEQ, BATCH
    c.optim.warmup_steps = 2
    c.train.steps, c.train.log_every, c.train.eval_every, c.train.eval_steps = STEPS, 1, 4, 0
    c.train.ckpt_every, c.train.sample_tokens, c.train.progress = 4, 0, False
    c.wandb.mode = "offline"
    for key, value in changes.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


def test_full_pass_scores_every_eval_token_once_in_order_and_splits_rows_over_processes():
    tokens = np.arange(1, 104, dtype=np.uint16)  # 103 tokens: 102 targets = 10 windows of 10 + a partial one
    batches = lm.full_pass_batches(tokens, seq_len=10, batch_size=4, process_index=0, process_count=1)
    assert len(batches) == 3  # 11 windows in batches of 4, the last batch padded by one row
    weights = np.concatenate([b["weights"].reshape(-1) for b in batches])
    targets = np.concatenate([b["targets"].reshape(-1) for b in batches])
    inputs = np.concatenate([b["inputs"].reshape(-1) for b in batches])
    assert weights.sum() == len(tokens) - 1
    np.testing.assert_array_equal(targets[weights == 1], tokens[1:])  # every target once, in stream order
    np.testing.assert_array_equal(inputs[weights == 1], tokens[:-1])  # each scored after the token before it
    assert not weights[102:].any()  # the partial window's padding and the padding row are masked
    halves = [lm.full_pass_batches(tokens, 10, 4, p, 2) for p in range(2)]
    for b, whole in enumerate(batches):
        for key in whole:
            np.testing.assert_array_equal(np.concatenate([halves[0][b][key], halves[1][b][key]]), whole[key])


@pytest.mark.parametrize("eval_steps", [0, 3])
def test_eval_target_bytes_are_the_utf8_bytes_of_the_scored_text(tmp_path, eval_steps):
    """Bits per byte's bytes: each scored target's UTF-8 bytes, against the eval text's own bytes (a full pass
    scores every character but the first; random windows score the characters after their first)."""
    from bmjax.defaults import base_config

    text = "naïve café, 東京 — " * 200
    path = tmp_path / "text.txt"
    path.write_text(text)
    c = base_config()
    c.data.source, c.data.path, c.data.tokenizer, c.data.seq_len, c.data.batch_size = "text", str(path), "char", 8, 2
    c.model.vocab_size, c.model.max_len, c.train.eval_steps = 64, 8, eval_steps
    data = lm.make_lm_data(c, str(tmp_path))
    eval_text = text[int(len(text) * 0.9):]
    assert data.eval_tokens == len(eval_text)  # one character per token, no EOS
    scored_bytes = 0.0
    expected = 0
    for batch in data.eval_batches():
        weights = batch.get("weights", np.ones(batch["targets"].shape))
        scored_bytes += float(np.sum(batch["target_bytes"] * weights))
        for row, row_weights in zip(batch["targets"], weights):  # the characters the row scores, from the text
            expected += len("".join(data.tokenizer.decode(row[row_weights > 0])).encode("utf-8"))
    if eval_steps == 0:
        assert expected == len(eval_text.encode("utf-8")) - len(eval_text[0].encode("utf-8"))
    assert scored_bytes == expected
    assert scored_bytes / (len(eval_text) - 1 if eval_steps == 0 else 3 * 2 * 8) > 1.3


def test_a_preempted_then_resumed_run_records_tokens_flops_and_its_summary_in_jsonl_and_wandb(
        tmp_path, text_file, monkeypatch):
    config = tiny_config(text_file)
    workdir = tmp_path / "run"
    monkeypatch.setattr(faults.PreemptionWatch, "reached", lambda self, step: step == 5)
    with pytest.raises(faults.Preempted):
        train_and_evaluate(config, str(workdir))
    first = json.loads((workdir / "summary.json").read_text())
    assert (first["status"], first["steps"], first["D"]) == ("preempted", 5, 5 * BATCH * SEQ)
    assert metrics_lib.read_wandb_offline(workdir)[1]["status"] == "preempted"

    monkeypatch.undo()
    train_and_evaluate(config, str(workdir))
    per_token = flops.train_flops_per_token(model_config(config.model), SEQ)
    counts = flops.param_counts(model_config(config.model))
    rows = read_rows(workdir)
    train = [r for r in rows if r["split"] == "train"]
    evals = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1)) and [r["step"] for r in evals] == [4, 8]
    for r in rows:
        assert r["tokens"] == r["step"] * BATCH * SEQ
        assert r["flops"] == pytest.approx(r["tokens"] * per_token)
    # Byte tokens: the eval text (ASCII) is one document of one byte per token and an EOS (no bytes); the full
    # pass scores every token but the first: eval_bytes targets, holding eval_bytes - 1 bytes.
    text = text_file.read_text()
    eval_bytes = len(text[int(len(text) * 0.9):].encode("utf-8"))
    for r in evals:
        assert r["bits_per_byte"] == pytest.approx(r["loss"] / math.log(2) * eval_bytes / (eval_bytes - 1),
                                                   rel=1e-6)

    summary = json.loads((workdir / "summary.json").read_text())
    d = STEPS * BATCH * SEQ
    assert summary == {
        "N": counts["non_embedding"], "N_total": counts["total"], "D": d, "C": pytest.approx(d * per_token),
        "C_6ND": pytest.approx(6 * counts["non_embedding"] * d), "final_eval_loss": evals[-1]["loss"],
        # the eval at step 4 came from the attempt before the preemption
        "best_eval_loss": min(r["loss"] for r in evals), "bits_per_byte": evals[-1]["bits_per_byte"],
        "steps": STEPS, "wall_time": summary["wall_time"], "status": "finished", "branch_from": None}
    assert first["wall_time"] < summary["wall_time"] < 600  # both attempts counted

    history, wandb_summary = metrics_lib.read_wandb_offline(workdir)  # both attempts' offline runs
    logged = {(row["_step"], key): value for row in history for key, value in row.items() if "/" in key}
    for r in rows:
        for key in ("loss", "tokens", "flops"):
            assert logged[(r["step"], f"{r['split']}/{key}")] == pytest.approx(r[key])
    for key, value in summary.items():
        if key != "wall_time":
            assert wandb_summary[key] == value, key


def test_a_run_that_stops_on_an_error_is_recorded_failed_and_the_error_propagates(tmp_path, text_file,
                                                                                 monkeypatch):
    # A NaN at step 3 (as train.on_nonfinite=halt sees it): the loop closes its writers before raising, so the
    # record opens W&B again to set the status.
    monkeypatch.setattr(loop_lib.faults, "first_nonfinite",
                        lambda entries: (3, float("nan"), 1.0) if entries[-1][0] >= 3 else None)
    workdir = tmp_path / "run"
    with pytest.raises(faults.NonFiniteError):
        train_and_evaluate(tiny_config(text_file), str(workdir))
    summary = json.loads((workdir / "summary.json").read_text())
    assert (summary["status"], summary["steps"]) == ("failed", 2)  # the last step that finished
    assert metrics_lib.read_wandb_offline(workdir)[1]["status"] == "failed"
