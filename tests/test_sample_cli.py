"""bmjax-sample: samples from a tiny trained run; bad input is one line and exit status 2."""
import importlib.util
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from bmjax.models.generate import Sampling, generate
from bmjax.sample import load_run, main
from bmjax.train.loop import train_and_evaluate

from conftest import REPO_ROOT


def _shakespeare_char_config(text_path):
    spec = importlib.util.spec_from_file_location("cfg", REPO_ROOT / "configs/gpt/shakespeare_char.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config("")
    c.data.path = str(text_path)
    c.mesh.cpu_devices = 0  # keep the tests' 8 fake devices (the config asks for 2 when jax starts)
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
    env = dict(os.environ, XLA_FLAGS="")  # one device is all sampling uses
    out = subprocess.run(
        [sys.executable, "-m", "bmjax.sample", "--workdir", str(run_dir), "--prompt", "ROMEO:",
         "--max_new_tokens", "20", "--temperature", "0"],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    # The same text as generating in process from the restored checkpoint.
    _, tokenizer, model = load_run(run_dir)
    prompt = tokenizer.encode("ROMEO:")[None]
    tokens, _ = generate(model, prompt, max_new_tokens=20, key=jax.random.key(0), sampling=Sampling(temperature=0))
    expected = tokenizer.decode(np.asarray(tokens[0]))
    assert out.stdout == expected + "\n"
    assert len(expected) == len("ROMEO:") + 20
    assert "[20 tokens in" in out.stderr


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


@pytest.mark.parametrize("case, flags, needle", [
    ("missing", ["--prompt", "A"], "--workdir: "),
    ("no_checkpoint", ["--prompt", "A"], "no checkpoint in"),
    ("run", ["--prompt", "A\u20ac"], "--prompt: "),
    ("run", ["--prompt", "A", "--top_p", "0"], "--top_p: "),
    ("run", ["--prompt", "A", "--max_new_tokens", "0"], "--max_new_tokens: "),
])
def test_bad_input_is_one_line_and_exit_2(run_dir, tmp_path, capsys, case, flags, needle):
    workdir = {"missing": tmp_path / "nowhere", "no_checkpoint": tmp_path, "run": run_dir}[case]
    if case == "no_checkpoint":
        (tmp_path / "config.json").write_text((run_dir / "config.json").read_text())
    with pytest.raises(SystemExit) as exit_info:
        main(["--workdir", str(workdir)] + flags)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err
    if case != "run":
        assert str(workdir) in err
