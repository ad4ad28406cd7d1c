"""A resume with a changed config: keys that change the maths stop the run in one line (exit 2) before anything
is restored or written, unless --allow_config_change names them; every config that trained the workdir is
kept (config.json, then config.stepNNNNNN.json per resume)."""
import json
import os
import shutil

import pytest

from bmjax import workdir as workdir_lib
from bmjax.defaults import base_config
from bmjax.errors import ConfigError
from bmjax.train import run_config
from bmjax.train.loop import train_and_evaluate
from helpers.commands import error_line, run
from helpers.configs import set_keys, tiny_gpt_config
from helpers.paths import REPO_ROOT as REPO
from helpers.workdirs import snapshot


def saved(**changes) -> dict:
    return run_config.as_saved(set_keys(base_config(), changes))


def test_extending_a_run_bends_the_schedule_only_when_decay_steps_follows_train_steps():
    # Unset decay_steps follows train.steps: 1000 -> 2000 moves the end of the cosine, reported under the key the
    # user changed.
    assert run_config.changes(saved(), saved(**{"train.steps": 2000})) == {"train.steps": (1000, 2000)}
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
    train_and_evaluate(tiny_gpt_config(steps=2, steps_per_call=2), str(workdir))
    return workdir


def test_a_changed_learning_rate_stops_the_resume_and_changes_no_file(tmp_path, two_step_run):
    workdir = tmp_path / "run"
    shutil.copytree(two_step_run, workdir)
    before = snapshot(workdir)
    changed = tiny_gpt_config(steps=2, steps_per_call=2)
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
    longer = tiny_gpt_config(steps=4, steps_per_call=2)
    longer.optim.lr = 1e-2
    # Unset decay follows steps: the key named, and the one allowed, is the one the user changed.
    with pytest.raises(ConfigError, match=r"\(train.steps 2 -> 4 \(optim.decay_steps follows it"):
        train_and_evaluate(longer, str(workdir), allow_config_change=("optim.lr",))
    train_and_evaluate(longer, str(workdir), allow_config_change=("optim.lr", "train.steps"))
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
                           "from helpers.configs import tiny_gpt_config\n\n\n"
                           "def get_config():\n    return tiny_gpt_config(steps=2, steps_per_call=2)\n")

    def train(*extra):
        return run("-m", "bmjax.cli.train", "--config", str(config_file), "--workdir", str(workdir), *extra)

    assert error_line(train("--config.optim.weight_decay=0.5")) == (
        f"error: config: resuming {workdir} with a config that changes the maths (optim.weight_decay 0.1 -> 0.5) "
        "against config.json; use the saved config, a new --workdir, or --allow_config_change=optim.weight_decay")
    assert error_line(train("--allow_config_change=optim.weight_dcay")) == (
        "error: --allow_config_change: unknown config key 'optim.weight_dcay'")
    assert snapshot(workdir) == before


def test_path_keys_resolve_against_the_starting_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = base_config()
    config.data.source, config.data.path, config.data.eval_path = "text", "data/train.txt", "~/eval.txt"
    config.data.mixture = "arrayrecord:shards/*.arrayrecord=3;text:more.txt=1;tfds:wiki=1;builtin=1"
    config.train.init_from = "runs/pretrain"
    resolved = run_config.resolve_paths(config)
    assert resolved.data.path == str(tmp_path / "data/train.txt")
    assert resolved.data.eval_path == os.path.expanduser("~/eval.txt")
    assert resolved.train.init_from == str(tmp_path / "runs/pretrain")
    assert resolved.data.mixture == (f"arrayrecord:{tmp_path}/shards/*.arrayrecord=3;text:{tmp_path}/more.txt=1;"
                                     "tfds:wiki=1;builtin=1")
    assert (resolved.data.tokenizer, config.data.path) == ("byte", "data/train.txt")  # a name; the input untouched
    config.data.source, config.data.path = "tfds", "glue/sst2"  # a TFDS dataset's name is not a path
    assert run_config.resolve_paths(config).data.path == "glue/sst2"
    # A run saved before paths were resolved compares equal from the directory it was started in.
    assert run_config.changes(run_config.as_saved(config), run_config.as_saved(run_config.resolve_paths(config))) \
        == {}


def _damage_arrays(workdir):
    for path in (workdir / "checkpoints").rglob("d/*"):
        if path.is_file():
            path.write_bytes(b"not an array")


def test_relative_init_from_starts_and_an_unreadable_one_is_one_line_leaving_no_files(tmp_path, monkeypatch,
                                                                                     two_step_run):
    from bmjax.checkpoint import RestoreError

    monkeypatch.chdir(tmp_path)
    shutil.copytree(two_step_run, tmp_path / "pretrained")
    config = tiny_gpt_config(steps=2, steps_per_call=2)
    config.train.init_from = "pretrained"  # relative: orbax alone would refuse it
    train_and_evaluate(config, "finetuned")
    assert json.loads((tmp_path / "finetuned/config.json").read_text())["train"]["init_from"] == \
        str(tmp_path / "pretrained")

    _damage_arrays(tmp_path / "pretrained")
    with pytest.raises(RestoreError) as refused:
        train_and_evaluate(config, "refused")
    assert str(refused.value).startswith(f"train.init_from: could not read the parameters of checkpoint "
                                         f"{tmp_path}/pretrained/checkpoints/2 (")
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "refused").exists()  # a new workdir is not left behind, half made
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept/notes.txt").write_text("mine")
    with pytest.raises(RestoreError):
        train_and_evaluate(config, "kept")
    assert snapshot(tmp_path / "kept") == {"notes.txt": b"mine"} and os.listdir(tmp_path / "kept") == ["notes.txt"]


def test_rerunning_a_finished_run_says_so_and_changes_nothing(tmp_path, two_step_run, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(two_step_run, workdir)
    before = snapshot(workdir)
    train_and_evaluate(tiny_gpt_config(steps=2, steps_per_call=2), str(workdir))
    out = capsys.readouterr().out
    assert f"{workdir} is finished (step 2 of 2); nothing to do. results: {workdir}/summary.json, " \
           f"{workdir}/metrics.jsonl" in out
    assert "resuming" not in out and snapshot(workdir) == before


def test_the_end_of_a_run_says_where_its_results_are(tmp_path, capsys):
    workdir = tmp_path / "run"
    train_and_evaluate(tiny_gpt_config(steps=2, steps_per_call=2), str(workdir))  # its warmup is 2 steps too
    out, err = capsys.readouterr()
    assert f"results: {workdir}/summary.json, {workdir}/metrics.jsonl\n" in out
    assert "warning: optim.warmup_steps=2 >= the run's 2 steps (train.steps)" in err


def test_config_files_share_one_parse_arg_that_refuses_an_unknown_argument(repo_root):
    import importlib.util

    files = sorted((repo_root / "configs").glob("*/*.py"))
    assert len(files) == 11, files  # gpt/ (3), bert/ (3), sweeps/ (5)
    # Arguments a file needs before it can meet the misspelt one; mup_sweep hands the rest to the file it wraps.
    needs = {"finetune": "data=train.csv,labels=2,", "mup_sweep": "sweep=small_scaling,base_width=32,lr=6e-3,"}
    for path in files:
        spec = importlib.util.spec_from_file_location(f"config_{path.parent.name}_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        arg = needs.get(path.stem, "") + "runlcal"
        with pytest.raises(ValueError, match=r"^unknown config argument 'runlcal'; this config file takes: .*"
                                             r"runlocal"):
            module.get_config(arg)


def test_an_unknown_config_argument_is_one_line_from_the_command(tmp_path):
    result = run("-m", "bmjax.cli.train", "--config", "configs/gpt/tiny.py:runlcal", "--workdir",
                 str(tmp_path / "run"), timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: flag --config=configs/gpt/tiny.py:runlcal: ")
    assert result.stderr.endswith("ValueError: unknown config argument 'runlcal'; this config file takes: runlocal\n")
    assert not (tmp_path / "run").exists()


def test_the_eval_line_shows_the_tasks_metrics():
    from bmjax.train.loop import _eval_line

    assert _eval_line({"loss": 0.69314, "accuracy": 0.5, "f1": 1 / 3, "count": 6}) == \
        "loss 0.6931 accuracy 0.5000 f1 0.3333"
    assert _eval_line({"loss": 1.0, "bits_per_byte": 1.4427}) == "loss 1.0000 bits_per_byte 1.4427"
