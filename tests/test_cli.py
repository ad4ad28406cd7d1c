"""The CLI as a user runs it: the files it writes, and one clear line for every bad input."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=300):
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    return subprocess.run([sys.executable, "-m", "bmjax.cli.train", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_writes_config_metrics_checkpoints_and_sample(tmp_path, repo_data):
    workdir = tmp_path / "run"
    result = run_cli("--config", "configs/gpt/shakespeare_char.py:runlocal", "--workdir", str(workdir),
                     f"--config.data.path={repo_data / 'tinyshakespeare.txt'}", "--config.tensorboard=True",
                     "--config.wandb.mode=offline", "--config.data.batch_size=16")
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["num_layers"] == 4 and config["train"]["steps"] == 20
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert train and all({"step", "loss", "lr", "grad_norm", "tokens_per_sec", "mfu"} <= set(r) for r in train)
    assert any(r["split"] == "eval" and "loss" in r for r in rows)
    assert (workdir / "checkpoints" / "20").is_dir()
    assert (workdir / "sample.txt").read_text()
    assert "--- sample ---" in result.stdout
    assert list((workdir / "tensorboard").iterdir())
    assert list((workdir / "wandb").glob("offline-run-*"))


BAD_INPUTS = [
    (["--config", "configs/gpt/missing.py"], "--config"),
    (["--config", "configs/gpt/tiny.py:runlocal", "--config.model.not_a_key=1"], "not_a_key"),
    (["--config", "configs/gpt/shakespeare_char.py:runlocal", "--config.data.path=/no/such/file.txt", "--config.data.batch_size=16"], "data.path"),
    (["--config", "configs/gpt/shakespeare_char.py:runlocal", "--config.data.path=EMPTY", "--config.data.batch_size=16"], "data.path"),
    (["--config", "configs/gpt/tiny.py:runlocal", "--config.model.num_heads=3"], "model.num_heads"),
    (["--config", "configs/gpt/tiny.py:runlocal", "--config.data.seq_len=512"], "data.seq_len"),
    (["--config", "configs/gpt/tiny.py:runlocal", "--config.model.vocab_size=100"], "model.vocab_size"),
]


@pytest.mark.parametrize("args,culprit", BAD_INPUTS, ids=[c for _, c in BAD_INPUTS])
def test_bad_input_is_one_line_naming_the_culprit(tmp_path, args, culprit):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    args = [a.replace("EMPTY", str(empty)) for a in args]
    result = run_cli(*args, "--workdir", str(tmp_path / "run"), timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: ") and culprit in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
