"""Golden loss traces: the tiny GPT and BERT configs still train as they did (README.md's "Golden loss traces").

Bit for bit on the stack the goldens were recorded on (jax/jaxlib/flax/optax versions and the CPU's float32
ISA class); within runs.RTOL elsewhere, a tolerance that float32 rounding stays far inside and a real change
(here: lr x 1.01) falls outside. tools/loss_compare.py is the comparison, tested here on hand-made runs.
"""
import json

import pytest
from golden.runs import RTOL, RUNS, as_losses, loss_compare, read_golden, stack, trace, train
from helpers.commands import run

COMPARE = loss_compare()


@pytest.fixture(scope="module")
def golden_runs(tmp_path_factory) -> dict:
    """Each golden run trained once, as the goldens were: {name: workdir}."""
    workdirs = {}
    for name in RUNS:
        workdir = tmp_path_factory.mktemp(name)
        done = train(name, workdir)
        assert done.returncode == 0, done.stderr[-3000:]
        workdirs[name] = workdir
    return workdirs


@pytest.mark.parametrize("name", list(RUNS))
def test_golden_losses_are_reproduced(golden_runs, name):
    golden = read_golden(name)
    assert (golden["config"], tuple(golden["overrides"])) == RUNS[name], "the golden was recorded for another run"
    got = trace(golden_runs[name])
    if golden["stack"] == stack():
        assert got == {"train_loss": golden["train_loss"], "eval_loss": golden["eval_loss"]}, (
            "losses moved on the stack the goldens were recorded on: "
            + COMPARE.report(COMPARE.compare(as_losses(golden), COMPARE.read_losses(golden_runs[name]))))
    else:
        result = COMPARE.compare(as_losses(golden), COMPARE.read_losses(golden_runs[name]))
        assert result["steps"] == len(golden["train_loss"]) + 1
        assert result["max_rel_diff"] <= RTOL, COMPARE.report(result)


def test_a_real_change_falls_outside_the_tolerance(tmp_path):
    done = train("gpt_tiny", tmp_path, "--config.optim.lr=0.00202")  # the config's 2e-3, 1% higher
    assert done.returncode == 0, done.stderr[-3000:]
    result = COMPARE.compare(as_losses(read_golden("gpt_tiny")), COMPARE.read_losses(tmp_path))
    assert result["max_rel_diff"] > RTOL, COMPARE.report(result)


def _workdir(path, train_losses, eval_loss):
    path.mkdir()
    rows = [{"step": step, "split": "train", "loss": loss, "lr": 0.1} for step, loss in enumerate(train_losses, 1)]
    rows.append({"step": len(train_losses), "split": "eval", "loss": eval_loss, "bits_per_byte": 1.0})
    (path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_loss_compare_reports_the_largest_difference_and_the_first_step_that_differs(tmp_path):
    a = _workdir(tmp_path / "a", [4.0, 2.0, 1.0, 1.0], 1.5)
    b = _workdir(tmp_path / "b", [4.0, 2.0, 1.01, 1.1], 1.5)  # step 3: 1% off, step 4: 10% off
    result = COMPARE.compare(COMPARE.read_losses(a), COMPARE.read_losses(b))
    assert result["steps"] == 5
    assert result["max_rel_diff"] == pytest.approx(0.1, rel=1e-12)
    assert result["at"] == ("train", 4) and result["first_diff"] == ("train", 3)

    within = run("tools/loss_compare.py", a, b, "--rtol", "0.2")
    assert within.returncode == 0, within.stderr
    assert "max relative difference 1.000e-01 (train step 4); first differing: train step 3" in within.stdout
    beyond = run("tools/loss_compare.py", a, b, "--rtol", "0.05")
    assert beyond.returncode == 1 and "beyond --rtol 0.05" in beyond.stderr
    same = run("tools/loss_compare.py", a, a)
    assert same.returncode == 0 and "first differing: none (bit for bit equal)" in same.stdout


def test_loss_compare_of_a_directory_without_metrics_is_one_line(tmp_path):
    a = _workdir(tmp_path / "a", [1.0], 1.0)
    done = run("tools/loss_compare.py", a, str(tmp_path / "missing"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: no metrics.jsonl "
                                                "(not a bmjax workdir, or the run never logged)"]
