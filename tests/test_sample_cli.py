"""bmjax-sample: samples from a tiny trained run, one prompt or a file of them in batches; bad input is one line
and exit status 2."""
import json

import jax
import numpy as np
import pytest

from bmjax.models.generate import Sampling, generate
from bmjax.cli.sample import load_run, main
from bmjax.train.loop import train_and_evaluate

from helpers.commands import run
from helpers.configs import load_config


def _shakespeare_char_config(text_path):
    c = load_config("configs/gpt/shakespeare_char.py")
    c.data.path = str(text_path)
    c.mesh.cpu_devices = 0  # keep the 8 fake devices jax already runs with (unset: one device per core)
    c.model.num_layers, c.model.d_model, c.model.max_len = 2, 32, 32
    c.data.seq_len, c.data.batch_size = 32, 8
    c.optim.warmup_steps, c.optim.decay_steps = 2, 10
    c.train.steps = c.train.ckpt_every = c.train.eval_every = 10
    c.train.eval_steps = 1
    c.train.sample_tokens = 40  # more than max_len: the end-of-training sample runs past the cache
    c.train.sample_prompt = "ROMEO:"
    c.train.progress = False
    return c


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, repo_data):
    """A char-level GPT trained for 10 steps (config.json, vocab.json, a checkpoint, sample.txt)."""
    root = tmp_path_factory.mktemp("sample_cli")
    text = root / "shakespeare.txt"
    text.write_text((repo_data / "tinyshakespeare.txt").read_text()[:50_000])
    workdir = root / "run"
    train_and_evaluate(_shakespeare_char_config(text), str(workdir))
    return workdir


def test_training_ends_with_a_cached_sample(run_dir):
    sample = (run_dir / "sample.txt").read_text()
    assert sample.startswith("ROMEO:") and len(sample) == len("ROMEO:") + 40


def test_cli_prints_the_greedy_continuation(run_dir):
    out = run("-m", "bmjax.cli.sample", "--workdir", str(run_dir), "--prompt", "ROMEO:", "--max_new_tokens", "20",
              "--temperature", "0", devices=0)  # one device is all sampling uses
    assert out.returncode == 0, out.stderr
    # The same text as generating in process from the restored checkpoint.
    _, tokenizer, model = load_run(run_dir)
    prompt = tokenizer.encode("ROMEO:")[None]
    tokens, _ = generate(model, prompt, max_new_tokens=20, key=jax.random.key(0), sampling=Sampling(temperature=0))
    expected = tokenizer.decode(np.asarray(tokens[0]))
    assert out.stdout == expected + "\n"
    assert len(expected) == len("ROMEO:") + 20
    assert "[1 prompt(s), 20 tokens in" in out.stderr


def test_sampling_flags_reach_the_generator(run_dir, capsys):
    args = ["--workdir", str(run_dir), "--prompt", "ROMEO:", "--max_new_tokens", "20"]
    outputs = []
    for flags in (["--temperature", "1.5", "--seed", "1"], ["--temperature", "1.5", "--seed", "1"],
                  ["--temperature", "1.5", "--seed", "2"], ["--temperature", "1.5", "--seed", "2", "--top_k", "1"],
                  ["--temperature", "0"]):
        main(args + flags)
        outputs.append(capsys.readouterr().out)
    hot_1, again_1, hot_2, top_1, greedy = outputs
    assert hot_1 == again_1 and hot_1 != hot_2  # the seed decides the sample
    assert top_1 == greedy and greedy != hot_2  # top-k 1 is greedy, whatever the temperature


PROMPTS = ["ROMEO:", "A", "First Citizen:", "JULIET"]


def _from_file(run_dir, tmp_path, capsys, *flags):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    main(["--workdir", str(run_dir), "--prompts", str(path), "--max_new_tokens", "12", *flags])
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [row["prompt"] for row in rows] == PROMPTS and all(row["new_tokens"] == 12 for row in rows)
    return [row["completion"] for row in rows]


def test_prompts_file_in_batches_equals_each_prompt_alone(run_dir, tmp_path, capsys):
    # Greedy: batches of 3 (the second one a single prompt, padded out to 3 rows) give each prompt's own text.
    batched = _from_file(run_dir, tmp_path, capsys, "--batch_size", "3", "--temperature", "0")
    alone = []
    for prompt in PROMPTS:
        main(["--workdir", str(run_dir), "--prompt", prompt, "--max_new_tokens", "12", "--temperature", "0"])
        alone.append(capsys.readouterr().out.removesuffix("\n").removeprefix(prompt))
    assert batched == alone
    # Sampled: prompt i draws from stream (seed, i) whatever the batch size (and a 10-step model's sampled text,
    # unlike its greedy text, depends on the prompt: padding that leaked into a row would show).
    hot = ("--temperature", "1.5", "--seed", "4")
    assert _from_file(run_dir, tmp_path, capsys, "--batch_size", "4", *hot) == \
        _from_file(run_dir, tmp_path, capsys, "--batch_size", "1", *hot) != batched


@pytest.mark.parametrize("case, flags, needle", [
    ("missing", ["--prompt", "A"], "--workdir: "),
    ("no_checkpoint", ["--prompt", "A"], "no checkpoint in"),
    ("run", ["--prompt", "A\u20ac"], "--prompt: "),
    ("run", ["--prompt", "A", "--top_p", "0"], "--top_p: "),
    ("run", ["--prompt", "A", "--max_new_tokens", "0"], "--max_new_tokens: "),
    ("run", ["--prompts", "PROMPTS", "--batch_size", "0"], "--batch_size: "),
    ("run", ["--prompts", "PROMPTS", "--prompt", "A"], "--prompts: give --prompt or --prompts"),
    ("run", ["--prompts", "BAD_PROMPTS"], "--prompts: line 2: "),
    ("run", ["--prompts", "NOWHERE"], "--prompts: cannot read"),
    ("run", ["--top_k", "many"], "flag --top_k=many"),
    ("run", ["--temprature", "1"], "temprature"),
    ("run", ["stray"], "unexpected arguments: stray"),
])
def test_bad_input_is_one_line_and_exit_2(run_dir, tmp_path, capsys, case, flags, needle):
    workdir = {"missing": tmp_path / "nowhere", "no_checkpoint": tmp_path, "run": run_dir}[case]
    if case == "no_checkpoint":
        (tmp_path / "config.json").write_text((run_dir / "config.json").read_text())
    (tmp_path / "PROMPTS").write_text("ROMEO:\n")
    (tmp_path / "BAD_PROMPTS").write_text("ROMEO:\nA\u20ac\n")
    flags = [str(tmp_path / f) if f.isupper() else f for f in flags]
    code = main(["--workdir", str(workdir)] + flags)
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err, err
    if case != "run":
        assert str(workdir) in err
