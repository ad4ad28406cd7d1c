"""Named eval sets (data.eval_sets): each set's held-out documents scored alone, within document boundaries, with
bits per byte counted from the text; their figures reach the eval rows, summary.json, a sweep's results.csv and
`bmjax-scaling fit --loss_col eval/NAME/loss`."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bmjax import data as data_lib
from bmjax.data import eval_sets
from bmjax.errors import ConfigError
from bmjax.models import build_model
from bmjax.train import tasks
from helpers.configs import load_config, sweep_run_configs

SEQ_LEN = 64
EOS = 258  # the byte tokenizer's end of document


def paragraph_file(path, count: int, seed: int) -> list[str]:
    """A text file of `count` paragraphs of 10-50 bytes, each ending with a blank line; returns them."""
    rng = np.random.default_rng(seed)
    words = ["the", "king", "doth", "speak", "of", "thee", "and", "all", "my", "lord", "é"]
    paragraphs = []
    for _ in range(count):
        text = ""
        while len(text.encode()) < rng.integers(8, 46):
            text += str(rng.choice(words)) + " "
        paragraphs.append(text.strip() + "\n\n")
    path.write_text("".join(paragraphs))
    return paragraphs


def tiny_config(**data):
    config = data_lib.with_model_vocab_size(load_config("configs/gpt/tiny.py:runlocal"))  # 320, the byte ids'
    config.model.update(d_model=32, num_layers=1, num_heads=2, max_len=SEQ_LEN)
    config.data.update(seq_len=SEQ_LEN, batch_size=8, **data)
    config.train.eval_steps = 0
    return config


def held_out_documents(paragraphs: list[str], eval_fraction: float) -> list[str]:
    """The documents of the file's last eval_fraction of characters: its paragraphs from the cut on."""
    text = "".join(paragraphs)
    tail = text[int(len(text) * (1 - eval_fraction)):]
    return [p + "\n\n" for p in tail.split("\n\n") if p]


def test_a_packed_set_scores_each_document_alone_and_counts_its_bytes(tmp_path):
    paragraphs = paragraph_file(tmp_path / "verse.txt", 60, seed=0)
    config = tiny_config(source="text", path=str(tmp_path / "verse.txt"), packing="segments",
                         eval_sets=f"verse=text:{tmp_path / 'verse.txt'}",
                         eval_fraction=0.3)
    data = data_lib.make_data(config, None)
    model = build_model(config.model, rngs=nnx.Rngs(0))
    # Sharpen the random model so its predictions depend on their context (a near-uniform one barely would).
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    model = nnx.merge(graphdef, jax.tree.map(lambda p: p * 8.0, params), rest)

    [(name, batches)] = data.eval_sets()
    assert name == "verse"
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    eval_step = jax.jit(lambda params, batch: tasks.lm_eval(nnx.merge(graphdef, params, rest), batch))
    sums = None
    for batch in batches:
        metrics = eval_step(params, batch)
        sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)

    # Each document alone: its bytes, then EOS; its first byte is nobody's target. Padded after its end to one
    # length (the model is causal: what follows a position never changes its logits).
    docs = held_out_documents(paragraphs, 0.3)
    ids = [list(doc.encode()) + [EOS] for doc in docs]
    assert max(map(len, ids)) <= SEQ_LEN + 1
    padded = np.zeros((len(ids), SEQ_LEN + 1), np.int32)
    mask = np.zeros((len(ids), SEQ_LEN), np.float32)
    for row, doc_ids in enumerate(ids):
        padded[row, :len(doc_ids)] = doc_ids
        mask[row, :len(doc_ids) - 1] = 1.0
    logits = jax.jit(lambda params, x: nnx.merge(graphdef, params, rest)(x))(params, padded[:, :-1])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), padded[:, 1:])
    nats, targets = float(jnp.sum(ce * mask)), int(mask.sum())
    scored_bytes = sum(len(doc.encode()) - 1 for doc in docs)
    # A set scored across documents also scores each document's first token (from the one before): more
    # targets, and every document's losses with another's context.
    assert float(sums["loss"][1]) == targets
    assert abs(float(sums["loss"][0]) - nats) <= 1e-4 * nats  # float32 sums of a few thousand terms
    assert float(sums["bits_per_byte"][1]) == scored_bytes
    assert abs(float(sums["bits_per_byte"][0]) / float(sums["bits_per_byte"][1])
               - nats / np.log(2) / scored_bytes) <= 1e-4 * nats / scored_bytes


def test_a_set_is_the_held_out_part_of_its_source_for_the_random_window_pipeline_too(tmp_path):
    paragraphs = paragraph_file(tmp_path / "verse.txt", 40, seed=1)
    config = tiny_config(source="text", path=str(tmp_path / "verse.txt"), tokenizer="byte",
                         eval_sets=f"again=text:{tmp_path / 'verse.txt'}")
    data = data_lib.make_data(config, None)  # lm.py's windows; the set is packed (concat) on its own
    [(name, batches)] = data.eval_sets()
    batches = list(batches)
    scored = sum(float(np.sum(b["weights"])) for b in batches)
    held_out = "".join(held_out_documents(paragraphs, 0.1))
    docs = held_out_documents(paragraphs, 0.1)
    assert scored == len(held_out.encode()) + len(docs) - 1  # every byte and EOS but the first token, once
    assert sum(float(np.sum(b["target_bytes"] * b["weights"])) for b in batches) == len(held_out.encode()) - 1


@pytest.mark.parametrize("spec, message", [
    ("verse", "is not NAME=SOURCE_SPEC"),
    ("a b=builtin", "must be letters"),
    ("x=builtin;x=builtin", "names a set twice"),
    ("x=web:foo", "unknown source 'web'"),
    ("x=text:/no/such/file.txt", "no such file"),
    ("x=text:", "needs a name"),
    ("builtin=builtin", "the name of a training source"),
])
def test_a_bad_spec_names_data_eval_sets(spec, message):
    config = tiny_config(eval_sets=spec)
    with pytest.raises(ConfigError) as raised:
        data_lib.check_data_config(config)
    assert raised.value.key == "data.eval_sets" and message in raised.value.message


def test_eval_sets_are_for_the_lm_task():
    config = load_config("configs/bert/tiny.py")
    config.data.eval_sets = "stdlib=builtin"
    with pytest.raises(ConfigError) as raised:
        data_lib.check_data_config(config)
    assert raised.value.key == "data.eval_sets" and "task lm" in raised.value.message


def test_results_csv_carries_each_sets_figures_and_fit_reads_one_by_its_column(tmp_path, capsys):
    """Synthetic runs of the shipped IsoFLOP sweep whose `eval/shakespeare/loss` follows one Chinchilla law and
    whose final_eval_loss another: fitting the set's column recovers the set's law."""
    from bmjax.cli.scaling import main
    from bmjax.models import flops, model_config
    from bmjax.scaling import sweep as sweep_lib
    from bmjax.scaling.chinchilla import ChinchillaLaw
    from cli_runs import REPO

    path = str(REPO / "configs/sweeps/chinchilla_isoflop.py")
    sweep = sweep_lib.load_sweep(path)
    main_law = ChinchillaLaw(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)  # a = beta / (alpha + beta) 0.514
    set_law = ChinchillaLaw(E=2.5, A=300.0, B=4000.0, alpha=0.30, beta=0.42)  # 0.583

    def write_runs(directory, loss_law):
        """The sweep's runs with final_eval_loss from `loss_law` and eval/shakespeare/loss from set_law."""
        for run, config in sweep_run_configs(path):
            n = flops.param_counts(model_config(config.model))
            d = run.steps * config.data.batch_size * config.data.seq_len
            summary = {"N": n["non_embedding"], "N_total": n["total"], "D": d,
                       "C": d * sweep_lib.counted_flops_per_token(config),
                       "final_eval_loss": float(loss_law(n["total"], d)), "best_eval_loss": None,
                       "bits_per_byte": None, "wall_time": 1.0, "status": "finished",
                       "eval/shakespeare/loss": float(set_law(n["total"], d)), "eval/shakespeare/bits_per_byte": 1.0}
            (directory / run.name).mkdir(parents=True)
            (directory / run.name / "summary.json").write_text(json.dumps(summary))
        sweep_lib.write_results(sweep, directory)

    write_runs(tmp_path / "runs", main_law)
    write_runs(tmp_path / "set_as_loss", set_law)
    header = (tmp_path / "runs" / "results.csv").read_text().splitlines()[0].split(",")
    assert {"eval/shakespeare/loss", "eval/shakespeare/bits_per_byte"} <= set(header)

    def fitted(directory, *args):
        code = main(["fit", "--runs", str(directory), "--law", "chinchilla", "--approach", "2", "--json", *args])
        out, err = capsys.readouterr()
        assert code == 0, err
        return json.loads(out)["a"]

    # Approach 2 (IsoFLOP minima) on the set's column is the fit of the set's law, and not of the run's loss.
    on_set = fitted(tmp_path / "runs", "--loss_col", "eval/shakespeare/loss")
    assert on_set == fitted(tmp_path / "set_as_loss")
    assert on_set - fitted(tmp_path / "runs") > 0.05


def test_a_run_logs_each_set_at_every_eval_and_summarises_the_last(tmp_path, repo_data):
    """The repository's two domains out of the box: the builtin corpus's held-out files and Shakespeare."""
    from helpers import commands

    workdir = tmp_path / "run"
    result = commands.run("-m", "bmjax.cli.train", "--config", "configs/gpt/tiny.py:runlocal", "--workdir",
                          str(workdir), f"--config.data.eval_sets=stdlib=builtin;shakespeare=text:{repo_data}/"
                          "tinyshakespeare.txt", "--config.model.d_model=32", "--config.model.num_layers=1",
                          "--config.model.num_heads=2", "--config.train.steps=10", "--config.train.eval_every=5",
                          "--config.train.eval_steps=1", "--config.train.sample_tokens=0",
                          "--config.train.progress=False")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [5, 10]
    for row in evals:
        for name in ("stdlib", "shakespeare"):
            assert row[f"{name}/loss"] > 0 and row[f"{name}/bits_per_byte"] > 0
        assert row["stdlib/loss"] != row["shakespeare/loss"]
    assert evals[1]["shakespeare/loss"] < evals[0]["shakespeare/loss"]  # scored again, by the trained model
    summary = json.loads((workdir / "summary.json").read_text())
    for key in ("stdlib/loss", "stdlib/bits_per_byte", "shakespeare/loss", "shakespeare/bits_per_byte"):
        assert summary[f"eval/{key}"] == evals[-1][key]


def test_a_runs_sets_are_recorded_with_absolute_paths_and_a_resume_may_change_them(tmp_path, monkeypatch):
    from bmjax.train import run_config

    monkeypatch.chdir(tmp_path)
    config = run_config.resolve_paths(tiny_config(eval_sets="verse=text:verse.txt;stdlib=builtin"))
    assert config.data.eval_sets == f"verse=text:{tmp_path / 'verse.txt'};stdlib=builtin"
    run_config.record(tmp_path, config, None)
    config.data.eval_sets = "stdlib=builtin"  # scored, never trained on: not a change of the run's maths
    run_config.check_resume(tmp_path, config)
    config.data.seq_len = 32
    with pytest.raises(ConfigError):
        run_config.check_resume(tmp_path, config)
