"""bmjax-convert --to_hf: a training run's newest checkpoint becomes a Hugging Face directory that transformers
loads with the bmjax model's outputs (GPT-2 and BERT); bad input is one line and exit status 2."""
import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402

from bmjax import workdir as workdir_lib  # noqa: E402
from bmjax.cli.convert import main  # noqa: E402
from bmjax.train.loop import train_and_evaluate  # noqa: E402
from helpers.paths import REPO_ROOT  # noqa: E402
from helpers.configs import load_config  # noqa: E402

TOL = 1e-4


def _config(relpath: str):
    c = load_config(f"{relpath}:runlocal")
    c.mesh.cpu_devices = 0  # keep the tests' 8 fake devices
    c.model.d_model, c.model.num_layers, c.model.max_len = 32, 2, 32
    c.data.seq_len, c.data.batch_size = 32, 8
    c.train.steps, c.train.ckpt_every, c.train.eval_every, c.train.eval_steps = 4, 2, 4, 1
    c.train.sample_tokens = 0
    c.train.progress = False
    return c


@pytest.fixture(scope="module", params=["gpt", "bert"])
def run_dir(request, tmp_path_factory):
    """A 4-step run with checkpoints at steps 2 and 4."""
    config = _config({"gpt": "configs/gpt/tiny.py", "bert": "configs/bert/tiny.py"}[request.param])
    workdir = tmp_path_factory.mktemp(request.param) / "run"
    train_and_evaluate(config, str(workdir))
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4"]
    return request.param, workdir


def _inputs(vocab_size: int):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, vocab_size, (2, 16))
    types = (np.arange(16)[None, :] >= np.array([[6], [9]])).astype(np.int64)
    mask = np.ones((2, 16), np.int64)
    mask[1, 12:] = 0  # right padding in row 1
    return ids, types, mask


def test_exported_run_loads_in_transformers_with_equal_outputs(run_dir, tmp_path, capsys):
    kind, workdir = run_dir
    main(["--to_hf", str(workdir), "--out", str(tmp_path / "hf")])
    assert capsys.readouterr().out.strip().endswith(str(workdir.resolve() / "checkpoints" / "4"))
    config = workdir_lib.read_config(workdir)
    model = workdir_lib.load_model(workdir, config)
    ids, types, mask = _inputs(config.model.vocab_size)
    arch = json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"]
    hf_model, info = getattr(transformers, arch[0]).from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    hf_model.eval()
    real = mask.astype(bool)
    with torch.no_grad():
        if kind == "gpt":
            assert arch == ["GPT2LMHeadModel"]
            want = {"logits": hf_model(input_ids=torch.tensor(ids)).logits.numpy()}
            got = {"logits": np.asarray(model(jnp.asarray(ids)))}
        else:  # the pretraining task's heads: MLM + NSP
            assert arch == ["BertForPreTraining"]
            out = hf_model(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types),
                           attention_mask=torch.tensor(mask))
            want = {"mlm_logits": out.prediction_logits.numpy()[real], "nsp_logits": out.seq_relationship_logits.numpy()}
            bm = model(jnp.asarray(ids), jnp.asarray(types), jnp.asarray(mask))
            got = {"mlm_logits": np.asarray(bm.mlm_logits)[real], "nsp_logits": np.asarray(bm.nsp_logits)}
    for key in want:
        assert np.max(np.abs(got[key] - want[key])) <= TOL, key
        assert np.std(want[key]) > 0.01  # a trained model, not constant outputs


def test_convert_tool_script_and_bad_input(run_dir, tmp_path, capsys):
    kind, workdir = run_dir
    if kind != "gpt":
        pytest.skip("one run is enough for the command line")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    # The script, once (an interpreter start costs seconds): an --out directory that holds files is refused.
    out = subprocess.run([sys.executable, "-m", "bmjax.cli.convert", "--to_hf", str(workdir), "--out",
                          str(tmp_path / "full")], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.startswith("error: --out: ") and out.stderr.count("\n") == 1, out.stderr
    (tmp_path / "no_ckpt").mkdir()
    (tmp_path / "no_ckpt" / "config.json").write_text((workdir / "config.json").read_text())
    rmsnorm = tmp_path / "rmsnorm"
    rmsnorm.mkdir()
    (rmsnorm / "checkpoints").symlink_to(workdir / "checkpoints")
    config = json.loads((workdir / "config.json").read_text())
    config["model"]["norm"] = "rmsnorm"
    (rmsnorm / "config.json").write_text(json.dumps(config))
    cases = [
        (["--to_hf", str(tmp_path / "nowhere"), "--out", str(tmp_path / "a")], "--to_hf: "),
        (["--to_hf", str(tmp_path / "no_ckpt"), "--out", str(tmp_path / "b")], "--to_hf: no checkpoint in"),
        (["--to_hf", str(rmsnorm), "--out", str(tmp_path / "c")], "model.norm: 'rmsnorm' has no GPT2LMHeadModel"),
        (["--to_hf", str(workdir)], "--out: required"),
        (["--from_hf", str(workdir), "--out", str(tmp_path / "d")], "from_hf"),
    ]
    for argv, needle in cases:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (argv, err)
        assert needle in err, (argv, err)
    assert not (tmp_path / "c").exists()  # nothing written for a model with no Hugging Face equivalent
