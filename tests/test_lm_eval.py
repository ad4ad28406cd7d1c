"""bmjax-eval: lm-evaluation-harness tasks on a bmjax GPT checkpoint. The adapter's log-likelihoods equal a direct
computation with the model, its greedy generations bmjax-sample's, and the harness's scores reach lm_eval.json
and summary.json. The tasks are local YAML + JSONL (tests/lm_eval_tasks): nothing downloads."""
import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import commands

TASKS = "bmjax/evals/tasks"  # bmjax-eval's example tasks, on data shipped with it
MAX_LEN = 32
EOS = 258  # the byte tokenizer's end of text: the prefix of an empty context and of rolling windows


def train_args(repo_data):  # the tiny run every test here evaluates
    return ("--config", "configs/gpt/tiny.py:runlocal", "--config.data.source=text",
            f"--config.data.path={repo_data}/tinyshakespeare.txt", "--config.model.d_model=32",
            "--config.model.num_layers=1", "--config.model.num_heads=2", f"--config.model.max_len={MAX_LEN}",
            f"--config.data.seq_len={MAX_LEN}", "--config.train.steps=20", "--config.train.eval_every=20",
            "--config.train.sample_tokens=0", "--config.train.progress=False")


@dataclasses.dataclass
class Request:  # what the adapter reads of lm_eval's Instance
    args: tuple


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, repo_data):
    path = tmp_path_factory.mktemp("lm_eval") / "run"
    result = commands.run("-m", "bmjax.cli.train", "--workdir", str(path), *train_args(repo_data))
    assert result.returncode == 0, result.stderr[-3000:]
    return path


@pytest.fixture(scope="module")
def adapter(workdir):
    from bmjax.cli.sample import load_run
    from bmjax.evals.lm_harness import BmjaxLM

    _, tokenizer, model = load_run(workdir)
    return BmjaxLM(model, tokenizer, batch_size=4)


def direct_logits(model, ids: list[int]) -> np.ndarray:
    """The model's logits [len(ids), vocab] for `ids` alone from position 0, no segment ids. Run right-padded
    to MAX_LEN (one compiled shape): the model is causal, so what follows a position never changes its logits."""
    from flax import nnx

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    run = _JITTED.setdefault(id(model), jax.jit(lambda p, x: nnx.merge(graphdef, p, rest)(x)))
    padded = np.zeros((1, MAX_LEN), np.int32)
    padded[0, :len(ids)] = ids
    return np.asarray(run(params, padded)[0, :len(ids)], np.float32)


_JITTED = {}


def direct_logprobs(model, ids: list[int]) -> np.ndarray:
    """log p(ids[i] | ids[:i]) for i >= 1, the model run on the whole sequence alone (no left padding)."""
    logprobs = jax.nn.log_softmax(direct_logits(model, ids[:-1]), axis=-1)
    return np.asarray(jnp.take_along_axis(logprobs, jnp.asarray(ids[1:])[:, None], axis=-1)[:, 0])


def test_loglikelihood_is_the_continuations_own_tokens_given_the_context(adapter):
    pairs = [("ROMEO: ", "What light"), ("", "First Citizen"), ("a", "b"), ("x" * 40, "yz"),
             ("KING HENRY:\nNow", " is the winter")]
    got = adapter.loglikelihood([Request(p) for p in pairs])  # batches of 4: rows of different lengths, padded
    for (context, continuation), (logprob, greedy) in zip(pairs, got):
        # As the harness's Hugging Face model: a context's trailing space is scored as the continuation's.
        context, continuation = context.rstrip(), context[len(context.rstrip()):] + continuation
        ids = [EOS] if not context else list(context.encode())
        count = len(continuation.encode())
        ids = (ids + list(continuation.encode()))[-(MAX_LEN + 1):]
        expected = direct_logprobs(adapter.model, ids)[-count:]  # the continuation's targets, no more, no fewer
        assert abs(logprob - float(expected.sum())) <= 1e-5 * count * 6  # float32 log-softmax, ~6 nats a token
        logits = direct_logits(adapter.model, ids[:-1])
        assert greedy == bool(np.all(np.argmax(logits, -1)[-count:] == np.array(ids[1:])[-count:]))


def test_rolling_loglikelihood_scores_every_token_once_in_windows_of_the_context(adapter):
    short, long = "Now is the winter", "O Romeo, Romeo! wherefore art thou Romeo? Deny thy father and refuse thy."
    short_lp, long_lp = adapter.loglikelihood_rolling([Request((short,)), Request((long,))])
    assert abs(short_lp - float(direct_logprobs(adapter.model, [EOS] + list(short.encode())).sum())) <= 1e-4
    # The harness's windows of MAX_LEN: the first predicts tokens 0..31 from EOS + 0..30, each next one the next 32
    # tokens (the last: what is left) from the 32 tokens before them.
    tokens = list(long.encode())
    expected = float(direct_logprobs(adapter.model, [EOS] + tokens[:MAX_LEN]).sum())
    for start in range(MAX_LEN, len(tokens), MAX_LEN):
        end = min(start + MAX_LEN, len(tokens))
        window = tokens[end - MAX_LEN - 1:end]
        expected += float(direct_logprobs(adapter.model, window)[-(end - start):].sum())
    assert len(tokens) > 2 * MAX_LEN and abs(long_lp - expected) <= 1e-5 * len(tokens) * 6


def test_greedy_generation_is_bmjax_samples(adapter, workdir):
    prompts = ["ROMEO:", "First Citizen:\nWe are"]
    got = adapter.generate_until([Request((p, {"until": [], "max_gen_toks": 12})) for p in prompts])
    for prompt, text in zip(prompts, got):
        result = commands.run("-m", "bmjax.cli.sample", "--workdir", str(workdir), "--prompt", prompt,
                              "--temperature", "0", "--max_new_tokens", "12")
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout == prompt + text + "\n"
    stop = got[0][2:4]
    [cut] = adapter.generate_until([Request((prompts[0], {"until": ["never there", stop], "max_gen_toks": 12}))])
    assert cut == got[0][:got[0].index(stop)]  # stops before the first stop string


@pytest.fixture(scope="module")
def sharded(workdir):
    """The adapter with the parameters laid out over data x fsdp x tensor = 2 x 2 x 2 fake devices as they trained,
    batches over data x fsdp (batch_size 3 rounded up to 4)."""
    import ml_collections

    from bmjax.cli.sample import load_run
    from bmjax.evals.lm_harness import BmjaxLM
    from bmjax.parallel import mesh as mesh_lib
    from bmjax.parallel import rules as rules_lib

    mesh_cfg = ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=2, sequence=1))
    _, tokenizer, model = load_run(workdir)
    return BmjaxLM(model, tokenizer, batch_size=3, mesh=mesh_lib.make_mesh(mesh_cfg),
                   rules=rules_lib.rules_from_config(mesh_cfg))


def test_on_the_training_mesh_the_adapter_scores_as_on_one_device(adapter, sharded):
    """Scoring rows over data x fsdp: the same log-likelihoods and greedy flags as one device."""
    assert sharded.batch_size == 4
    shardings = [leaf.sharding for leaf in jax.tree.leaves(sharded._params)]
    assert all(len(s.device_set) == 8 for s in shardings) and any(set(s.spec) - {None} for s in shardings)
    text = open("data/tinyshakespeare.txt").read()[:3000]
    pairs = [Request((text[i:i + 40 + i % 23], text[i + 40 + i % 23:i + 48 + i % 31])) for i in range(0, 900, 90)]
    rolling = [Request((text[:700],)), Request((text[700:760],))]
    one, many = adapter.loglikelihood(pairs), sharded.loglikelihood(pairs)
    np.testing.assert_allclose([ll for ll, _ in many], [ll for ll, _ in one], rtol=1e-5, atol=1e-5)
    assert [g for _, g in many] == [g for _, g in one]
    np.testing.assert_allclose(sharded.loglikelihood_rolling(rolling), adapter.loglikelihood_rolling(rolling),
                               rtol=1e-5)


def test_on_the_training_mesh_the_adapter_generates_as_on_one_device(adapter, sharded):
    """generate_until with its batch over data x fsdp (the 5 prompts of bmjax_generate: a batch of 4 and one of 1
    repeated up to 4, the repeats dropped): the same greedy tokens as one device, cut at the same stop strings."""
    from bmjax.models.generate import Sampling, generate, generate_each, left_pad

    new = 10
    prompts = [json.loads(line)["prompt"] for line in open(f"{TASKS}/generate.jsonl")]
    whole = adapter.generate_until([Request((p, {"until": [], "max_gen_toks": new})) for p in prompts])
    assert len(prompts) == 5 and min(len(text) for text in whole) >= 5, whole
    stops = {"until": [whole[0][3:5], whole[3][1:3]], "max_gen_toks": new}
    one = adapter.generate_until([Request((p, stops)) for p in prompts])
    assert sharded.generate_until([Request((p, stops)) for p in prompts]) == one
    assert one[0] == whole[0][:whole[0].index(stops["until"][0])] and one != whole  # the stop strings cut
    assert sharded.generated_tokens > 0 and sharded.generation_seconds > 0
    # Token for token, as the adapter runs it (each prompt's last MAX_LEN - new tokens), and the batch sharded
    ids = [list(p.encode())[-(MAX_LEN - new):] for p in prompts]
    args = dict(max_new_tokens=new, key=jax.random.key(0), sampling=Sampling(temperature=0.0), stop_token=EOS)
    one_ids = generate_each(adapter.model, ids, batch_size=4, **args)
    many_ids = generate_each(sharded.model, ids, batch_size=3, mesh=sharded._mesh, rules=sharded._rules, **args)
    assert [t.tolist() for t in many_ids] == [t.tolist() for t in one_ids]
    prompt, lengths = left_pad(ids[:4])
    tokens, _ = generate(sharded.model, prompt, prompt_lengths=lengths, mesh=sharded._mesh, rules=sharded._rules,
                         **args)
    assert tokens.sharding.shard_shape(tokens.shape)[0] == 1  # 4 rows over data x fsdp = 4 ways
    with pytest.raises(ValueError, match="does not split 4 ways"):
        generate(sharded.model, prompt[:3], prompt_lengths=lengths[:3], mesh=sharded._mesh, rules=sharded._rules,
                 **args)


def test_bmjax_eval_writes_the_harness_results_and_its_scores_to_the_summary(adapter, workdir):
    result = commands.run("-m", "bmjax.cli.eval", "--workdir", str(workdir), "--tasks",
                          "bmjax_choice,bmjax_rolling,bmjax_generate", "--batch_size", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    harness = json.loads((workdir / "lm_eval.json").read_text())
    scores = json.loads((workdir / "summary.json").read_text())["lm_eval"]
    assert set(scores) == {"bmjax_choice", "bmjax_rolling", "bmjax_generate"}
    assert scores["bmjax_choice"]["acc"] == harness["results"]["bmjax_choice"]["acc,none"]
    # The rolling task's bits per byte: the adapter's nats over the documents' UTF-8 bytes
    docs = [json.loads(line)["text"] for line in open(f"{TASKS}/rolling.jsonl")]
    nats = -sum(adapter.loglikelihood_rolling([Request((d,)) for d in docs]))
    bits_per_byte = nats / math.log(2) / sum(len(d.encode()) for d in docs)
    assert abs(scores["bmjax_rolling"]["bits_per_byte"] - bits_per_byte) <= 1e-5 * bits_per_byte
    # The choice task's accuracy: how often the labelled choice has the highest log-likelihood
    docs = [json.loads(line) for line in open(f"{TASKS}/choice.jsonl")]
    hits = 0
    for doc in docs:
        lls = [ll for ll, _ in adapter.loglikelihood([Request((doc["context"], c)) for c in doc["choices"]])]
        hits += int(np.argmax(lls) == doc["label"])
    assert scores["bmjax_choice"]["acc"] == hits / len(docs)
    assert "tokens/s" in result.stdout and " generated at " in result.stdout  # bmjax_generate's new tokens


def test_an_extended_run_keeps_the_scores_with_their_step(workdir, tmp_path, repo_data):
    """bmjax-eval's scores survive a resume that trains further: summary.json keeps them with the step they were
    computed at (20), below the run's steps (24)."""
    import shutil

    if "lm_eval" not in json.loads((workdir / "summary.json").read_text()):  # this test run alone
        assert commands.run("-m", "bmjax.cli.eval", "--workdir", str(workdir), "--tasks", "bmjax_choice",
                            "--limit", "2").returncode == 0
    before = json.loads((workdir / "summary.json").read_text())
    assert before["lm_eval_step"] == before["steps"] == 20
    extended = tmp_path / "run"
    shutil.copytree(workdir, extended)
    result = commands.run("-m", "bmjax.cli.train", "--workdir", str(extended), *train_args(repo_data),
                          "--config.train.steps=24", "--allow_config_change=train.steps")
    assert result.returncode == 0, result.stderr[-3000:]
    after = json.loads((extended / "summary.json").read_text())
    assert after["steps"] == 24 and after["status"] == "finished"
    assert after["lm_eval"] == before["lm_eval"] and after["lm_eval_step"] == 20


def test_an_unknown_task_is_one_line_and_exit_2(workdir):
    result = commands.run("-m", "bmjax.cli.eval", "--workdir", str(workdir), "--tasks", "bmjax_choice,no_such_task")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("error: --tasks") and "no_such_task" in result.stderr


def test_a_local_sweep_evaluates_each_run_once_it_finishes(tmp_path, repo_data):
    sweep = tmp_path / "one_run.py"
    sweep.write_text(f'''
from bmjax.defaults import base_config
from bmjax.scaling.sweep import axis


def get_config(arg=""):
    c = base_config()
    c.model.vocab_size, c.model.d_model, c.model.num_layers, c.model.num_heads, c.model.max_len = 320, 32, 1, 2, 32
    c.data.source, c.data.path, c.data.tokenizer = "text", {str(repo_data / "tinyshakespeare.txt")!r}, "byte"
    c.data.seq_len, c.data.batch_size = 32, 8
    c.train.steps, c.train.eval_every, c.train.sample_tokens, c.train.progress = 4, 4, 0, False
    return c


def get_sweep():
    return axis("optim.lr", [1e-3])
''')
    result = commands.run("-m", "bmjax.cli.sweep", "--config", str(sweep), "--workdir", str(tmp_path / "sweep"),
                          "--eval_tasks", "bmjax_choice")
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = [p for p in (tmp_path / "sweep").iterdir() if p.is_dir()]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and 0 <= summary["lm_eval"]["bmjax_choice"]["acc"] <= 1
    # scores of an earlier step (a run extended after bmjax-eval): the sweep evaluates the finished run again
    (run / "summary.json").write_text(json.dumps(dict(summary, lm_eval_step=0)))
    again = commands.run("-m", "bmjax.cli.sweep", "--config", str(sweep), "--workdir", str(tmp_path / "sweep"),
                         "--eval_tasks", "bmjax_choice")
    assert again.returncode == 0 and "finished, skipped" in again.stdout, again.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["lm_eval_step"] == summary["steps"] == 4
    refused = commands.run("-m", "bmjax.cli.sweep", "--config", str(sweep), "--workdir", str(tmp_path / "sweep"),
                           "--eval_tasks", "bmjax_choice", "--launcher", "print")
    assert refused.returncode == 2 and refused.stderr.startswith("error: --eval_tasks"), refused.stderr
