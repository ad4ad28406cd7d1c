"""A resume with a changed config: keys that change the maths stop the run in one line (exit 2) before anything
is restored or written, unless --allow_config_change names them; every config that trained the workdir is
kept (config.json, then config.stepNNNNNN.json per resume)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from bmjax import workdir as workdir_lib
from bmjax.defaults import base_config
from bmjax.errors import ConfigError
from bmjax.train import run_config
from bmjax.train.loop import train_and_evaluate
from cli_runs import REPO
from test_resume import snapshot
from test_run_length import tiny_config


def saved(**changes) -> dict:
    config = base_config()
    for key, value in changes.items():
        *sections, name = key.split(".")
        node = config
        for section in sections:
            node = node[section]
        node[name] = value
    return run_config.as_saved(config)


def test_extending_a_run_bends_the_schedule_only_when_decay_steps_follows_train_steps():
    # Unset decay_steps follows train.steps: 1000 -> 2000 moves the end of the cosine.
    assert run_config.changes(saved(), saved(**{"train.steps": 2000})) == {"optim.decay_steps": (1000, 2000)}
    explicit = {"optim.decay_steps": 1000}
    assert run_config.changes(saved(**explicit), saved(**explicit, **{"train.steps": 2000})) == {}
    # A constant schedule has no decay to bend.
    constant = {"optim.schedule": "constant"}
    assert run_config.changes(saved(**constant), saved(**constant, **{"train.steps": 2000})) == {}
    # Setting decay_steps to the value it had is no change.
    assert run_config.changes(saved(), saved(**explicit)) == {}


def test_maths_keys_are_reported_and_cadence_mesh_and_logging_are_not():
    harmless = {"train.log_every": 10, "train.eval_every": 20, "train.ckpt_every": 20, "train.keep_ckpts": 9,
                "train.progress": False, "mesh.fsdp": 4, "mesh.data": 2, "wandb.mode": "offline",
                "tensorboard": True, "train.steps_per_call": 5, "model.remat": "full"}
    assert run_config.changes(saved(), saved(**harmless)) == {}
    maths = {"optim.lr": 1e-3, "data.seq_len": 128, "data.batch_size": 64, "data.path": "other.txt",
             "train.seed": 1, "train.eval_steps": 5, "model.dropout": 0.1}
    assert set(run_config.changes(saved(), saved(**maths))) == set(maths)


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("two_steps") / "run"
    train_and_evaluate(tiny_config(steps=2, steps_per_call=2), str(workdir))
    return workdir


def test_a_changed_learning_rate_stops_the_resume_and_changes_no_file(tmp_path, two_step_run):
    workdir = tmp_path / "run"
    shutil.copytree(two_step_run, workdir)
    before = snapshot(workdir)
    changed = tiny_config(steps=2, steps_per_call=2)
    changed.optim.lr = 1e-2
    changed.data.seq_len = 16
    with pytest.raises(ConfigError) as info:
        train_and_evaluate(changed, str(workdir))
    message = str(info.value)
    assert info.value.key == "config" and "\n" not in message
    assert "data.seq_len 32 -> 16, optim.lr 0.0003 -> 0.01" in message
    assert "--allow_config_change=data.seq_len,optim.lr" in message
    assert snapshot(workdir) == before  # nothing restored, rewritten or added


def test_allowed_changes_resume_and_every_config_is_kept(tmp_path, two_step_run):
    workdir = tmp_path / "run"
    shutil.copytree(two_step_run, workdir)
    longer = tiny_config(steps=4, steps_per_call=2)
    longer.optim.lr = 1e-2
    with pytest.raises(ConfigError, match=r"\(optim.decay_steps 2 -> 4\)"):  # unset decay follows steps
        train_and_evaluate(longer, str(workdir), allow_config_change=("optim.lr",))
    train_and_evaluate(longer, str(workdir), allow_config_change=("optim.lr", "optim.decay_steps"))
    assert json.loads((workdir / "config.json").read_text())["optim"]["lr"] == 3e-4  # the first run's, kept
    resumed = json.loads((workdir / "config.step000002.json").read_text())
    assert resumed["optim"]["lr"] == 1e-2 and resumed["train"]["steps"] == 4
    # The newest saved config is the one a further resume is compared with.
    assert workdir_lib.newest_config(workdir).name == "config.step000002.json"
    train_and_evaluate(longer, str(workdir))  # the same config again: nothing to allow


def test_cli_refuses_a_changed_config_in_one_line_and_checks_allowed_keys(tmp_path, two_step_run):
    workdir = tmp_path / "run"
    shutil.copytree(two_step_run, workdir)
    before = snapshot(workdir)
    config_file = tmp_path / "two_steps.py"  # the config that trained two_step_run, as a config file
    config_file.write_text(f"import sys\nsys.path.insert(0, {str(REPO / 'tests')!r})\n"
                           "from test_run_length import tiny_config\n\n\n"
                           "def get_config():\n    return tiny_config(steps=2, steps_per_call=2)\n")

    def run(*extra):
        return subprocess.run([sys.executable, "-m", "bmjax.cli.train", "--config", str(config_file), "--workdir",
                               str(workdir), *extra], cwd=REPO, env=dict(os.environ), capture_output=True,
                              text=True, timeout=300)

    result = run("--config.optim.weight_decay=0.5")
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        f"error: config: resuming {workdir} with a config that changes the maths (optim.weight_decay 0.1 -> 0.5) "
        "against config.json; use the saved config, a new --workdir, or --allow_config_change=optim.weight_decay"]
    result = run("--allow_config_change=optim.weight_dcay")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --allow_config_change: unknown config key 'optim.weight_dcay'"]
    assert snapshot(workdir) == before
