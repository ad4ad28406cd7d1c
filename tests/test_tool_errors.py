"""Every command a user runs answers bad input with one line, `error: ...`, and exit status 2: no traceback,
no usage dump, nothing compiled or written."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING = "/nonexistent/bmjax-test"

# (command after the interpreter, what the line must name)
CASES = [
    (["-m", "bmjax.cli.train", "--config", "configs/gpt/missing.py", "--workdir", MISSING], "--config"),
    (["-m", "bmjax.cli.train", "--config", "configs/gpt/tiny.py", "--config.model.not_a_key=1", "--workdir", MISSING],
     "not_a_key"),
    (["-m", "bmjax.cli.sample", "--workdir", MISSING], "--workdir"),
    (["-m", "bmjax.cli.convert", "--to_hf", MISSING, "--out", MISSING + "-out"], "--to_hf"),
    (["-m", "bmjax.cli.prepare_data", "--input", MISSING + ".txt", "--out", MISSING], "--input"),
    (["-m", "bmjax.cli.sweep", "--config", "configs/sweeps/missing.py", "--workdir", MISSING], "--config"),
    (["-m", "bmjax.cli.scaling", "fit", "--csv", MISSING + ".csv", "--params-col", "N", "--flops-col", "C",
      "--loss-col", "L", "--law", "chinchilla"], "--csv"),
    (["tools/bench_step.py", "--config", "configs/gpt/missing.py"], "--config"),
    (["tools/bench_step.py", "--config", "configs/gpt/tiny.py", "--config.optim.not_a_key=1"], "not_a_key"),
    (["tools/bench_ckpt.py", "--config", "configs/gpt/missing.py"], "--config"),
    (["-m", "bmjax.cli.train_tokenizer", "--input", MISSING + ".txt", "--out", MISSING + ".json"], "--input"),
    (["-m", "bmjax.cli.compile_check", "--config", "configs/gpt/missing.py"], "--config"),
    (["-m", "bmjax.cli.compile_check", "--config", "configs/gpt/tiny.py", "--config.mesh.data=3"], "mesh"),
    (["tools/tpu_vm.py", "--name", "bm", "--zone", "z"], "command"),
    (["tools/tpu_vm.py", "start", "--name", "bm", "--zone", "z"], "command"),
    (["tools/tpu_vm.py", "create", "--zone", "z"], "--name"),
    (["tools/tpu_vm.py", "create", "--name", "bm", "--zone", "z", "--num_slices", "0"], "num_slices"),
    (["tools/tpu_vm.py", "run", "--name", "bm", "--zone", "z", "--dry_run", "--config.mesh.fsdp=2"], "config.mesh"),
]


@pytest.mark.parametrize("args,culprit", CASES, ids=[" ".join(a[:2]) + f" [{c}]" for a, c in CASES])
def test_bad_input_is_one_line_and_exit_2(args, culprit):
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
