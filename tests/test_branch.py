"""train.branch_from: a cooldown branched at step 8 from a stable warmup-stable-decay parent is, bit for bit, the
run trained straight with the branch's schedule: every logged train loss, the evals and the final parameters and
optimizer state. The parent runs longer than the straight run (20 steps against 12), so the equality also shows
the data order does not depend on train.steps. train.ckpt_steps keeps the branch point whatever keep_ckpts says;
the branch records its parent; re-running it resumes from its own checkpoints; a branch that is not the straight
run (another model, a schedule that disagrees before the branch point, a step the parent lacks) is refused."""
import json
import shutil

import numpy as np
import pytest

from bmjax import checkpoint as ckpt_lib
from bmjax import workdir as workdir_lib
from bmjax.errors import ConfigError
from bmjax.train import branch as branch_lib
from bmjax.train.loop import train_and_evaluate
from helpers.configs import tiny_gpt_config
from helpers.metrics import read_rows

BRANCH_STEP, STEPS = 8, 12


def wsd_config(steps: int, cooldown_fraction: float):
    c = tiny_gpt_config(steps)
    c.optim.schedule = "wsd"
    c.optim.cooldown_fraction = cooldown_fraction
    c.train.log_every, c.train.eval_every, c.train.ckpt_every = 1, 4, 4
    return c


def straight_config():
    return wsd_config(STEPS, 0.25)  # cooldown from step 9: after the branch point


def rows(workdir, split):
    return [(r["step"], r["loss"]) for r in read_rows(workdir) if r["split"] == split]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("branch")
    parent = wsd_config(20, 0.2)  # stable up to step 16
    parent.train.keep_ckpts, parent.train.ckpt_steps = 1, (BRANCH_STEP,)
    train_and_evaluate(parent, root / "parent")
    train_and_evaluate(straight_config(), root / "straight")
    branch = straight_config()
    branch.train.branch_from = f"{root / 'parent'}@{BRANCH_STEP}"
    branch.train.keep_ckpts = 3
    branch.train.ckpt_every = 2  # its own checkpoints at 10 and 12
    train_and_evaluate(branch, root / "branch")
    return root, branch


def final_arrays(workdir):
    return ckpt_lib.read_arrays(workdir / "checkpoints" / str(STEPS))


def test_the_branch_is_the_straight_run_bit_for_bit(runs):
    root, _ = runs
    straight, branched = root / "straight", root / "branch"
    assert rows(branched, "train") == rows(straight, "train")  # steps 1-8 the parent's, 9-12 the branch's
    assert [s for s, _ in rows(branched, "train")] == list(range(1, STEPS + 1))
    assert rows(branched, "eval") == rows(straight, "eval") and rows(straight, "eval")[-1][0] == STEPS
    want, got = final_arrays(straight), final_arrays(branched)
    assert sorted(got) == sorted(want) and any(name.startswith("opt_state") for name in want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    summary = json.loads((branched / "summary.json").read_text())
    assert summary["final_eval_loss"] == json.loads((straight / "summary.json").read_text())["final_eval_loss"]


def test_the_branch_records_its_parent(runs):
    root, _ = runs
    summary = json.loads((root / "branch" / "summary.json").read_text())
    assert summary["branch_from"] == {"workdir": str((root / "parent").resolve()), "step": BRANCH_STEP}
    assert summary["steps"] == STEPS and summary["status"] == "finished"
    assert json.loads((root / "straight" / "summary.json").read_text())["branch_from"] is None
    config = json.loads((root / "branch" / "config.json").read_text())
    assert config["train"]["branch_from"] == f"{(root / 'parent').resolve()}@{BRANCH_STEP}"


def test_ckpt_steps_keep_the_branch_point_past_keep_ckpts(runs):
    root, _ = runs
    # keep_ckpts=1 alone would have kept only 20 of 4, 8, ..., 20
    assert workdir_lib.checkpoint_steps(root / "parent") == [BRANCH_STEP, 20]


def test_rerunning_a_branch_resumes_from_its_own_checkpoints(runs, tmp_path, capsys):
    root, branch = runs
    workdir = tmp_path / "branch"
    shutil.copytree(root / "branch", workdir)
    shutil.rmtree(workdir / "checkpoints" / str(STEPS))  # as if killed after its checkpoint at step 10
    config = branch.copy_and_resolve_references()
    config.train.branch_from = f"{tmp_path / 'gone'}@{BRANCH_STEP}"  # no parent there: only its own checkpoint
    (workdir / "config.json").write_text(json.dumps(config.to_dict()))
    capsys.readouterr()
    train_and_evaluate(config, workdir)
    assert f"resuming from {(workdir / 'checkpoints' / '10').resolve()}" in capsys.readouterr().out
    assert rows(workdir, "train") == rows(root / "straight", "train")
    np.testing.assert_array_equal(final_arrays(workdir)["params/wte/embedding/value"],
                                  final_arrays(root / "straight")["params/wte/embedding/value"])


def refused(config) -> str:
    with pytest.raises(ConfigError) as e:
        branch_lib.check(config)
    assert e.value.key == "train.branch_from"
    return e.value.message


def test_a_branch_that_changes_the_model_is_refused_naming_the_key(runs):
    root, _ = runs
    config = straight_config()
    config.train.branch_from = f"{root / 'parent'}@{BRANCH_STEP}"
    config.model.d_model, config.optim.lr = 64, 1e-3
    message = refused(config)
    assert "model.d_model 32 -> 64" in message and "optim.lr" in message and "train.steps" not in message


def test_a_schedule_that_disagrees_before_the_branch_point_is_refused(runs):
    root, _ = runs
    config = wsd_config(STEPS, 0.5)  # cooldown from step 6: the parent trained steps 6 and 7 at the peak
    config.train.branch_from = f"{root / 'parent'}@{BRANCH_STEP}"
    assert "first at step 6" in refused(config)


def test_a_step_the_parent_lacks_names_the_steps_it_has(runs):
    root, _ = runs
    config = straight_config()
    config.train.branch_from = f"{root / 'parent'}@4"
    assert "no checkpoint at step 4; its checkpoints: 8, 20" in refused(config)
