"""A mixture's train rows say how many tokens each source delivered (loop.source_token_counts)."""
import json

from helpers import commands
from helpers.metrics import read_rows


def train_mixture(tmp_path, text, cuts, weights, packing, seq_len, eval_steps):
    """A 6-step tiny GPT on a mixture of two text files, text[:cuts[0]] and text[cuts[0]:cuts[1]], weighted
    `weights`; returns (its metrics rows, its workdir)."""
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text(text[:cuts[0]])
    second.write_text(text[cuts[0]:cuts[1]])
    workdir = tmp_path / "run"
    result = commands.train("--config", "configs/gpt/tiny.py", "--workdir", str(workdir),
                            f"--config.data.mixture=text:{first}={weights[0]};text:{second}={weights[1]}",
                            f"--config.data.packing={packing}", f"--config.data.seq_len={seq_len}",
                            f"--config.model.max_len={seq_len}", "--config.data.batch_size=8",
                            "--config.model.d_model=32", "--config.model.num_layers=1", "--config.model.num_heads=2",
                            "--config.train.steps=6", "--config.train.log_every=3", "--config.train.eval_every=6",
                            f"--config.train.eval_steps={eval_steps}", "--config.train.sample_tokens=0",
                            "--config.train.progress=False")
    assert result.returncode == 0, result.stderr[-3000:]
    return read_rows(workdir), workdir


def test_train_rows_count_the_tokens_of_each_source_of_a_mixture(tmp_path, repo_data):
    text = (repo_data / "tinyshakespeare.txt").read_text()
    # A text file is one document; short ones make the mixture switch sources within a few steps.
    rows, _ = train_mixture(tmp_path, text, (300, 600), (2, 1), "concat", 32, eval_steps=1)
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == [3, 6]
    for row in train:
        counts = {k: v for k, v in row.items() if k.startswith("tokens/")}
        assert set(counts) == {"tokens/text:first.txt", "tokens/text:second.txt"}, counts
        # concat packing scores every target: the sources' counts add up to the run's tokens
        assert sum(counts.values()) == row["tokens"] == row["step"] * 8 * 32
        assert counts["tokens/text:first.txt"] > counts["tokens/text:second.txt"] > 0


def test_segments_run_counts_real_tokens_and_reports_each_sources_eval(tmp_path, repo_data):
    text = (repo_data / "tinyshakespeare.txt").read_text()
    rows, workdir = train_mixture(tmp_path, text, (20_000, 30_000), (3, 1), "segments", 64, eval_steps=0)
    train = [r for r in rows if r["split"] == "train"]
    for row in train:
        counts = {k: v for k, v in row.items() if k.startswith("tokens/")}
        # segments pad rows: the run's tokens are the real ones, fewer than every position
        assert sum(counts.values()) == row["tokens"] < row["step"] * 8 * 64
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["D"] == train[-1]["tokens"]
    [evaluation] = [r for r in rows if r["split"] == "eval"]
    losses = [evaluation[f"text:{name}/loss"] for name in ("first.txt", "second.txt")]
    assert min(losses) < evaluation["loss"] < max(losses)  # the pooled held-out set's, between the sources'
    for name in ("first.txt", "second.txt"):
        assert evaluation[f"text:{name}/bits_per_byte"] > 0
    assert summary["bits_per_byte"] == evaluation["bits_per_byte"]
