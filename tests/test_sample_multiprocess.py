"""The end-of-run sample of a two-process run (4 CPU devices each, parameters sharded over fsdp inside each
process, the data axis across them): generated on the sharded parameters, with no process gathering the model,
and the same text one process with 8 devices samples from the same checkpoint."""
import jax

from bmjax.checkpoint import read_tree
from bmjax.data import build_tokenizer
from bmjax.parallel import mesh as mesh_lib
from bmjax.train import optim, sample, setup
from helpers.multihost import config_with, run_two_processes

SAMPLED = {"train.steps": 2, "train.ckpt_every": 2, "train.eval_every": 2, "train.sample_tokens": 12,
           "train.sample_temperature": 0.0, "model.init_std": 0.3, "mesh.dcn_data": 2}


def test_two_processes_sample_the_text_one_process_samples_from_their_checkpoint(tmp_path):
    workdir = tmp_path / "multi"
    outputs = run_two_processes(workdir, **SAMPLED)
    text = (workdir / "sample.txt").read_text()
    assert text and "--- sample ---\n" + text in outputs[0]

    config = config_with(**{k: v for k, v in SAMPLED.items() if k != "mesh.dcn_data"})
    mesh = mesh_lib.make_mesh(config.mesh)
    tx, _ = optim.make_optimizer(config.optim, 2)
    graphdef, abstract_state, shardings, _ = setup.create_state(config, mesh, tx)
    # The arrays alone (the data positions are the two processes' own), laid out on one process's 8 devices.
    state = jax.device_put(read_tree(workdir / "checkpoints" / "2", abstract_state), shardings)
    assert int(state.step) == 2 and jax.device_count() == 8
    assert sample.sample_text(graphdef, state.params, state.rest, build_tokenizer(config, None), config) == text
