"""The same training run on every mesh: sharding changes where numbers live, never what they are.

Ten optimizer steps of a tiny GPT (and BERT, pretraining and fine-tuning) on one device give the reference loss
curve; the same steps with the batch, parameters, heads, vocabulary and sequence split over 8 fake devices must
give it to 1e-4 relative (float32). A broken rule, a missing all-reduce or a wrong ring step would move the curve. On one of the meshes,
gradient accumulation (4 micro-batches) must give the one-batch curve, and bfloat16 compute must keep float32
master weights and a float32 loss.
"""
import jax
import numpy as np
import pytest

from bmjax.parallel import mesh as mesh_lib
from bmjax.train import loop, optim, setup
from helpers.compile import FAST_COMPILE
from helpers.tiny_models import STEPS, bert_config, classification_batches, finetune_config, gpt_config, \
    initial_state, lm_batches, mlm_batches

MESHES = {
    "data8": dict(data=8),
    "fsdp8": dict(data=1, fsdp=8),
    "tensor4_data2": dict(data=2, tensor=4),
    "data2_fsdp2_tensor2": dict(data=2, fsdp=2, tensor=2),
    "sequence2_fsdp4": dict(data=1, fsdp=4, sequence=2),
}


def loss_curve(config, mesh_sizes, batches, state):
    """Train `len(batches)` steps from `state` on the mesh; returns (per-step losses, final state on the host)."""
    config = config.copy_and_resolve_references()
    config.mesh.update(dict(data=-1, fsdp=1, tensor=1, sequence=1), **mesh_sizes)
    devices = jax.devices() if mesh_sizes else jax.devices()[:1]
    mesh = mesh_lib.make_mesh(config.mesh, devices)
    tx, schedule = optim.make_optimizer(config.optim, STEPS)
    graphdef, _, shardings, _ = setup.create_state(config, mesh, tx)
    step_fn, _, _, feed_sharding = setup.make_step_fns(config, mesh, graphdef, shardings, tx, schedule)
    state = jax.device_put(state, shardings)
    feeds = [loop.to_global(batch, feed_sharding, config.data.seq_len) for batch in batches]
    compiled = step_fn.lower(state, feeds[0]).compile(compiler_options=FAST_COMPILE)
    losses = []
    for feed in feeds:
        state, out = compiled(state, feed)
        losses.append(out["loss"])
    return np.asarray(jax.device_get(losses)), jax.device_get(state)


def runner(config, batches):
    """`run(mesh_name)`: the loss curve on that mesh ("one_device": the reference), each computed once."""
    state = initial_state(config)
    cache = {}

    def run(mesh_name):
        if mesh_name not in cache:
            sizes = MESHES.get(mesh_name, {})
            run_config = config.copy_and_resolve_references()
            if sizes.get("sequence", 1) > 1:
                run_config.model.attention = "ring"
            cache[mesh_name] = loss_curve(run_config, sizes, batches, state)
        return cache[mesh_name]

    run.config, run.batches, run.state = config, batches, state
    return run


@pytest.fixture(scope="module")
def gpt_run():
    config = gpt_config()
    return runner(config, lm_batches(config))


@pytest.fixture(scope="module")
def bert_run():
    config = bert_config()
    return runner(config, mlm_batches(config))


@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_gpt_loss_curve_is_the_same_on_every_mesh(gpt_run, mesh_name):
    reference, _ = gpt_run("one_device")
    assert reference[-1] < reference[0] - 0.3  # the curve moves, so agreeing with it means something
    got, _ = gpt_run(mesh_name)
    np.testing.assert_allclose(got, reference, rtol=1e-4)


@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_bert_loss_curve_is_the_same_on_every_mesh(bert_run, mesh_name):
    reference, _ = bert_run("one_device")
    assert reference[-1] < reference[0] - 0.3
    got, _ = bert_run(mesh_name)
    np.testing.assert_allclose(got, reference, rtol=1e-4)


@pytest.fixture(scope="module")
def finetune_run():
    config = finetune_config()
    return runner(config, classification_batches(config))


@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_bert_finetuning_loss_curve_is_the_same_on_every_mesh(finetune_run, mesh_name):
    reference, _ = finetune_run("one_device")
    assert reference[-1] < reference[0] - 0.3
    got, _ = finetune_run(mesh_name)
    np.testing.assert_allclose(got, reference, rtol=1e-4)


def test_grad_accumulation_of_4_micro_batches_of_4_equals_one_batch_of_16(gpt_run):
    """On data=2 x fsdp=2 x tensor=2 each micro-batch of 4 rows is still split over data x fsdp."""
    whole, _ = gpt_run("data2_fsdp2_tensor2")
    config = gpt_run.config.copy_and_resolve_references()
    config.optim.grad_accum = 4
    accumulated, _ = loss_curve(config, MESHES["data2_fsdp2_tensor2"], gpt_run.batches, gpt_run.state)
    np.testing.assert_allclose(accumulated, whole, rtol=1e-5)


def test_bfloat16_compute_keeps_float32_master_weights_and_loss(gpt_run):
    from flax import nnx

    from bmjax.models import build_model

    f32_losses, _ = gpt_run("data2_fsdp2_tensor2")
    config = gpt_run.config.copy_and_resolve_references()
    config.model.dtype = "bfloat16"  # param_dtype stays float32: the same initial state
    losses, final = loss_curve(config, MESHES["data2_fsdp2_tensor2"], gpt_run.batches, gpt_run.state)
    assert {leaf.dtype for leaf in jax.tree.leaves(final.params)} == {np.dtype("float32")}
    assert {leaf.dtype for leaf in jax.tree.leaves(final.opt_state) if np.ndim(leaf)} == {np.dtype("float32")}
    assert losses.dtype == np.float32
    np.testing.assert_allclose(losses, f32_losses, rtol=2e-2)  # bf16 rounding, not a different model

    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0))))
    inputs = jax.ShapeDtypeStruct(gpt_run.batches[0]["inputs"].shape, jax.numpy.int32)
    logits = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), abstract, inputs)
    hidden = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).hidden_states(x), abstract, inputs)
    assert logits.dtype == np.float32 and hidden.dtype == jax.numpy.bfloat16
