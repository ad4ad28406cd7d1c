"""Every command a user runs answers bad input with one line, `error: ...`, and exit status 2: no traceback, no
usage dump, nothing compiled or written. One table for every command; the library's own checks (validate.py,
the data pipelines) have their tables beside them."""
import pytest

from helpers import commands

MISSING = "/nonexistent/bmjax-test"
TINY = ("--config", "configs/gpt/tiny.py:runlocal")
CHAR = ("--config", "configs/gpt/shakespeare_char.py:runlocal", "--config.data.batch_size=16")
TRAIN = ("-m", "bmjax.cli.train")
# A stable wsd run of 100 steps for branches; PARENT is a workdir with its config.json and checkpoint folders 10
# and 20 (the checks refuse before any checkpoint is read).
BRANCH = (*TINY, "--config.optim.schedule=wsd", "--config.optim.warmup_steps=2")

# (id, command after the interpreter, what the line must name, text it must also hold). RUN is a fresh workdir
# that must stay unwritten, EMPTY an empty text file, TYPO a config file with a misspelt key, PARENT a run to branch
# from.
CASES = [
    ("train: missing config file", [*TRAIN, "--config", "configs/gpt/missing.py", "--workdir", MISSING],
     "--config", "does not exist"),
    ("train: unknown override key", [*TRAIN, "--config", "configs/gpt/tiny.py", "--config.model.not_a_key=1",
                                     "--workdir", MISSING], "not_a_key", ""),
    ("train: unknown key, runlocal", [*TRAIN, *TINY, "--config.model.not_a_key=1", "--workdir", "RUN"],
     "not_a_key", ""),
    ("train: no such data file", [*TRAIN, *CHAR, "--config.data.path=/no/such/file.txt", "--workdir", "RUN"],
     "data.path", ""),
    ("train: empty data file", [*TRAIN, *CHAR, "--config.data.path=EMPTY", "--workdir", "RUN"], "data.path", ""),
    ("train: heads", [*TRAIN, *TINY, "--config.model.num_heads=3", "--workdir", "RUN"], "model.num_heads", ""),
    ("train: seq_len", [*TRAIN, *TINY, "--config.data.seq_len=512", "--workdir", "RUN"], "data.seq_len", ""),
    ("train: eval set source missing", [*TRAIN, *TINY, "--config.data.eval_sets=prose=text:/no/such/file.txt",
                                        "--workdir", "RUN"], "data.eval_sets", "no such file"),
    ("train: vocab", [*TRAIN, *TINY, "--config.model.vocab_size=100", "--workdir", "RUN"], "model.vocab_size", ""),
    ("train: unknown enum", [*TRAIN, "--config", "configs/gpt/tiny.py", "--config.train.on_nonfinite=ignore",
                             "--workdir", "RUN"], "train.on_nonfinite", "allowed: halt, skip"),
    ("train: cooldown fraction", [*TRAIN, *TINY, "--config.optim.schedule=wsd", "--config.optim.cooldown_fraction=1.5",
                                  "--workdir", "RUN"], "optim.cooldown_fraction", "(0, 1]"),
    ("train: ckpt_steps past the run", [*TRAIN, *TINY, "--config.train.ckpt_steps=(500,)", "--workdir", "RUN"],
     "train.ckpt_steps", "train.steps=20"),
    ("branch: not WORKDIR@STEP", [*TRAIN, *BRANCH, "--config.train.branch_from=PARENT", "--workdir", "RUN"],
     "train.branch_from", "WORKDIR@STEP"),
    ("branch: no such parent", [*TRAIN, *BRANCH, f"--config.train.branch_from={MISSING}@10", "--workdir", "RUN"],
     "train.branch_from", "not a bmjax-train workdir"),
    ("branch: a step the parent lacks", [*TRAIN, *BRANCH, "--config.train.branch_from=PARENT@15", "--workdir", "RUN"],
     "train.branch_from", "no checkpoint at step 15; its checkpoints: 10, 20"),
    ("branch: changes the model", [*TRAIN, *BRANCH, "--config.train.branch_from=PARENT@10",
                                   "--config.model.num_layers=3", "--workdir", "RUN"],
     "train.branch_from", "model.num_layers 2 -> 3"),
    ("branch: schedules disagree", [*TRAIN, *BRANCH, "--config.train.branch_from=PARENT@10",
                                    "--config.train.steps=12", "--config.optim.cooldown_fraction=0.5", "--workdir",
                                    "RUN"], "train.branch_from", "first at step 6"),
    ("train: unknown parametrization", [*TRAIN, *TINY, "--config.model.parametrization=mu", "--workdir", "RUN"],
     "model.parametrization", "allowed: standard, mup"),
    ("train: mup_base_width <= 0", [*TRAIN, *TINY, "--config.model.parametrization=mup",
                                    "--config.model.mup_base_width=-64", "--workdir", "RUN"],
     "model.mup_base_width", "got -64"),
    ("train: mup_output_mult <= 0", [*TRAIN, *TINY, "--config.model.parametrization=mup",
                                     "--config.model.mup_base_width=64", "--config.model.mup_output_mult=-2.0",
                                     "--workdir", "RUN"], "model.mup_output_mult", "got -2.0"),
    ("train: misspelt key in a config file", [*TRAIN, "--config", "TYPO", "--workdir", "RUN"], "ckpt_evry",
     "did you mean 'ckpt_every'?"),
    ("train: unwritable workdir", [*TRAIN, "--config", "configs/gpt/tiny.py", "--workdir=/sys/bmjax-run"],
     "workdir", "not writable"),
    ("train: missing config file, named", [*TRAIN, "--config", "configs/gpt/no_such_config.py", "--workdir", "RUN"],
     "--config", "does not exist"),
    ("train: fine-tune init without config.json", [*TRAIN, "--config", "configs/bert/finetune.py:data=train.csv,"
                                                   "labels=2,init=data", "--workdir", "RUN"], "train.init_from",
     "no config.json"),
    ("sample", ["-m", "bmjax.cli.sample", "--workdir", MISSING], "--workdir", ""),
    ("convert", ["-m", "bmjax.cli.convert", "--to_hf", MISSING, "--out", MISSING + "-out"], "--to_hf", ""),
    ("prepare-data", ["-m", "bmjax.cli.prepare_data", "--input", MISSING + ".txt", "--out", MISSING], "--input", ""),
    ("sweep", ["-m", "bmjax.cli.sweep", "--config", "configs/sweeps/missing.py", "--workdir", MISSING], "--config",
     ""),
    ("scaling", ["-m", "bmjax.cli.scaling", "fit", "--csv", MISSING + ".csv", "--params-col", "N", "--flops-col", "C",
                 "--loss-col", "L", "--law", "chinchilla"], "--csv", ""),
    ("scaling plan: budget", ["-m", "bmjax.cli.scaling", "plan", "--csv", MISSING + ".csv", "--params-col", "N",
                              "--flops-col", "C", "--loss-col", "L", "--law", "chinchilla", "--flops", "0"],
     "--flops", "positive FLOP budget"),
    ("train-tokenizer", ["-m", "bmjax.cli.train_tokenizer", "--input", MISSING + ".txt", "--out", MISSING + ".json"],
     "--input", ""),
    ("compile-check: config", ["-m", "bmjax.cli.compile_check", "--config", "configs/gpt/missing.py"], "--config", ""),
    ("compile-check: mesh", ["-m", "bmjax.cli.compile_check", "--config", "configs/gpt/tiny.py",
                             "--config.mesh.data=3"], "mesh", ""),
    ("bench_step: config", ["tools/bench_step.py", "--config", "configs/gpt/missing.py"], "--config", ""),
    ("bench_step: key", ["tools/bench_step.py", "--config", "configs/gpt/tiny.py", "--config.optim.not_a_key=1"],
     "not_a_key", ""),
    ("bench_step: no window", ["tools/bench_step.py", "--config", "configs/gpt/tiny.py", "--steps", "4", "--window",
                               "10"], "--steps", "--window"),
    ("bench_ckpt", ["tools/bench_ckpt.py", "--config", "configs/gpt/missing.py"], "--config", ""),
    ("tpu_vm: no command", ["tools/tpu_vm.py", "--name", "bm", "--zone", "z"], "command", ""),
    ("tpu_vm: unknown command", ["tools/tpu_vm.py", "start", "--name", "bm", "--zone", "z"], "command", ""),
    ("tpu_vm: name", ["tools/tpu_vm.py", "create", "--zone", "z"], "--name", ""),
    ("tpu_vm: slices", ["tools/tpu_vm.py", "create", "--name", "bm", "--zone", "z", "--num_slices", "0"],
     "num_slices", ""),
    ("tpu_vm: override", ["tools/tpu_vm.py", "run", "--name", "bm", "--zone", "z", "--dry_run",
                          "--config.mesh.fsdp=2"], "config.mesh", ""),
]


def _parent(tmp_path) -> str:
    from helpers.configs import load_config

    from bmjax import data as data_lib
    from bmjax.train import run_config

    config = load_config(TINY[1])
    config.optim.schedule, config.optim.warmup_steps, config.train.steps = "wsd", 2, 100
    parent = tmp_path / "parent"
    for step in (10, 20):
        (parent / "checkpoints" / str(step)).mkdir(parents=True)
    # As a parent run records it: model.vocab_size resolved from the tokenizer (320).
    run_config.record(parent, data_lib.with_model_vocab_size(run_config.resolve_paths(config)), None)
    return str(parent)


def _typo_config(tmp_path) -> str:
    path = tmp_path / "typo.py"
    path.write_text("from bmjax.defaults import base_config\n\n\ndef get_config(arg=''):\n"
                    "    c = base_config()\n    c.train.ckpt_evry = 5\n    return c\n")
    return str(path)


@pytest.mark.parametrize("args,culprit,text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, culprit, text):
    (tmp_path / "empty.txt").write_text("")
    files = {"RUN": str(tmp_path / "run"), "TYPO": _typo_config(tmp_path)}
    parent = _parent(tmp_path)
    args = [files.get(a, a.replace("EMPTY", str(tmp_path / "empty.txt")).replace("PARENT", parent)) for a in args]
    result = commands.run(*args, devices=8, timeout=180)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0] and text in lines[0], \
        result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    if args[:2] == list(TRAIN):
        assert result.stdout == ""
    assert not (tmp_path / "run").exists()  # nothing was written before the error
