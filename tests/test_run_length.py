"""How long a run is and how it ends: `train.steps` that is not a multiple of `train.steps_per_call` runs a
shorter last call and ends exactly at train.steps with its eval and checkpoint; the end-of-run sample is written
after the final checkpoint is committed and samples from the parameters as they are sharded."""
import math

import pytest

import jax

from bmjax import workdir as workdir_lib
from bmjax.data import build_tokenizer
from bmjax.models import flops
from bmjax.models import generate as generate_lib
from bmjax.parallel import mesh as mesh_lib
from bmjax.train import mfu, optim, sample, setup
from bmjax.train.loop import build_model_config, train_and_evaluate
from helpers.configs import tiny_gpt_config
from helpers.metrics import read_rows


def test_steps_not_a_multiple_of_steps_per_call_end_exactly_at_train_steps_then_sample(tmp_path, capsys, monkeypatch):
    fused, single = tmp_path / "fused", tmp_path / "single"
    config = tiny_gpt_config(steps=7, steps_per_call=3)
    config.train.sample_tokens = 4
    sampled_after = []
    real_sample = sample.sample_text

    def sample_after_the_final_checkpoint(*args):
        # The final checkpoint is committed (orbax renames the folder last) before any sampling starts.
        checkpoints = fused / "checkpoints"
        assert (checkpoints / "7" / "_CHECKPOINT_METADATA").is_file() and (checkpoints / "7" / "state").is_dir()
        assert not [p for p in checkpoints.iterdir() if "tmp" in p.name]
        sampled_after.append(workdir_lib.checkpoint_steps(fused)[-1])
        return real_sample(*args)

    monkeypatch.setattr(sample, "sample_text", sample_after_the_final_checkpoint)
    train_and_evaluate(config, str(fused))
    assert sampled_after == [7] and (fused / "sample.txt").read_text()
    logged = read_rows(fused)
    assert [r["step"] for r in logged if r["split"] == "train"] == [3, 6, 7]
    assert [r["step"] for r in logged if r["split"] == "eval"] == [3, 6, 7]  # the final eval at step 7
    assert workdir_lib.checkpoint_steps(fused)[-1] == 7

    # Throughput leaves out the calls that compile (the first, and the shorter last one): a window of only those
    # reports NaN; mfu is tokens/s x FLOPs per token over the peak, which is printed once at start-up.
    first, middle, last = [r for r in logged if r["split"] == "train"]
    assert math.isnan(first["tokens_per_sec"]) and math.isnan(last["tokens_per_sec"]) and math.isnan(last["mfu"])
    flops_per_token = flops.train_flops_per_token(build_model_config(config), 32)
    assert middle["tokens_per_sec"] > 0
    assert middle["mfu"] == pytest.approx(middle["tokens_per_sec"] * flops_per_token / mfu.total_peak_flops(),
                                          rel=1e-9)
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("MFU ")]
    assert printed == [mfu.describe_peak("float32")] and printed[0].startswith("MFU peak: ")

    # The shorter last call is the same maths: step 7's losses are the one-step-per-call run's.
    config = tiny_gpt_config(steps=7)
    config.train.log_every = config.train.eval_every = config.train.ckpt_every = 7
    train_and_evaluate(config, str(single))
    want = {r["split"]: r["loss"] for r in read_rows(single) if r["step"] == 7}
    got = {r["split"]: r["loss"] for r in logged if r["step"] == 7}
    assert got == pytest.approx(want, rel=1e-5) and set(got) == {"train", "eval"}


def test_sample_runs_on_the_sharded_parameters_and_matches_one_device(monkeypatch):
    """On an (data 2, fsdp 2, tensor 2) mesh the generator gets the parameters as training shards them, not
    gathered copies, and greedy decoding gives the text one device gives."""
    config = tiny_gpt_config(steps=1)
    config.mesh.fsdp = config.mesh.tensor = 2
    config.model.init_std = 0.3  # far from ties between next tokens, so rounding cannot change a greedy choice
    config.train.sample_tokens = 12
    config.train.sample_temperature = 0.0
    mesh = mesh_lib.make_mesh(config.mesh)
    tx, _ = optim.make_optimizer(config.optim, 1)
    graphdef, _, shardings, init = setup.create_state(config, mesh, tx)
    state = init(0)
    tokenizer = build_tokenizer(config, None)

    seen = []
    real_make = generate_lib.make_generate_fn

    def recording_make(*args, **kwargs):
        fn = real_make(*args, **kwargs)

        def call(params, rest, prompt, *args):
            seen.append(jax.tree.map(lambda x: x.sharding, params))
            return fn(params, rest, prompt, *args)

        return call

    monkeypatch.setattr(generate_lib, "make_generate_fn", recording_make)
    sharded_text = sample.sample_text(graphdef, state.params, state.rest, tokenizer, config)
    assert len(seen) == 1 and seen[0] == shardings.params
    specs = {tuple(s.spec) for s in jax.tree.leaves(seen[0], is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))}
    assert any("tensor" in spec for spec in specs) and any("fsdp" in spec for spec in specs), specs

    one_device = jax.devices()[0]
    local_text = sample.sample_text(graphdef, jax.device_put(state.params, one_device),
                                    jax.device_put(state.rest, one_device), tokenizer, config)
    assert len(seen) == 2 and all(s.device_set == {one_device} for s in jax.tree.leaves(
        seen[1], is_leaf=lambda x: isinstance(x, jax.sharding.Sharding)))
    assert sharded_text == local_text and len(sharded_text) > len(config.train.sample_prompt)
