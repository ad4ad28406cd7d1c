"""bmjax-train as a user runs it: the files it writes (its bad input: test_bad_input.py)."""
import json

from helpers import commands
from helpers.metrics import read_rows


def test_cli_writes_config_metrics_checkpoints_and_sample(tmp_path, repo_data):
    workdir = tmp_path / "run"
    result = commands.train("--config", "configs/gpt/shakespeare_char.py:runlocal", "--workdir", str(workdir),
                            f"--config.data.path={repo_data / 'tinyshakespeare.txt'}", "--config.tensorboard=True",
                            "--config.wandb.mode=offline", "--config.data.batch_size=16")
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["num_layers"] == 4 and config["train"]["steps"] == 20
    rows = read_rows(workdir)
    train = [r for r in rows if r["split"] == "train"]
    assert train and all({"step", "loss", "lr", "grad_norm", "tokens_per_sec", "mfu"} <= set(r) for r in train)
    assert any(r["split"] == "eval" and "loss" in r for r in rows)
    assert (workdir / "checkpoints" / "20").is_dir()
    assert (workdir / "sample.txt").read_text()
    assert "--- sample ---" in result.stdout
    assert list((workdir / "tensorboard").iterdir())
    assert list((workdir / "wandb").glob("offline-run-*"))
