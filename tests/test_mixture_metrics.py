"""A mixture's train rows say how many tokens each source delivered (loop.source_token_counts)."""
import json

from test_cli import run_cli


def test_train_rows_count_the_tokens_of_each_source_of_a_mixture(tmp_path, repo_data):
    text = (repo_data / "tinyshakespeare.txt").read_text()
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    # A text file is one document; short ones make the mixture switch sources within a few steps.
    first.write_text(text[:300])
    second.write_text(text[300:600])
    workdir = tmp_path / "run"
    result = run_cli("--config", "configs/gpt/tiny.py", "--workdir", str(workdir),
                     f"--config.data.mixture=text:{first}=2;text:{second}=1", "--config.data.packing=concat",
                     "--config.data.seq_len=32", "--config.model.max_len=32", "--config.data.batch_size=8",
                     "--config.model.d_model=32", "--config.model.num_layers=1", "--config.model.num_heads=2",
                     "--config.train.steps=6", "--config.train.log_every=3", "--config.train.eval_every=6",
                     "--config.train.eval_steps=1", "--config.train.sample_tokens=0",
                     "--config.train.progress=False")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == [3, 6]
    for row in train:
        counts = {k: v for k, v in row.items() if k.startswith("tokens/")}
        assert set(counts) == {"tokens/text:first.txt", "tokens/text:second.txt"}, counts
        # concat packing scores every target: the sources' counts add up to the run's tokens
        assert sum(counts.values()) == row["tokens"] == row["step"] * 8 * 32
        assert counts["tokens/text:first.txt"] > counts["tokens/text:second.txt"] > 0
