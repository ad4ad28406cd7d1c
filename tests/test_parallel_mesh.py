"""The same training run on every mesh: sharding changes where numbers live, never what they are.

Ten optimizer steps of a tiny GPT (and BERT) on one device give the reference loss curve; the same steps with
the batch, parameters, heads, vocabulary and sequence split over 8 fake devices must give it to 1e-4 relative
(float32). A broken rule, a missing all-reduce or a wrong ring step would move the curve.
"""
import jax
import numpy as np
import pytest

from bmjax.defaults import base_config
from bmjax.parallel import mesh as mesh_lib
from bmjax.train import loop, optim

STEPS = 10
MESHES = {
    "data8": dict(data=8),
    "fsdp8": dict(data=1, fsdp=8),
    "tensor4_data2": dict(data=2, tensor=4),
    "data2_fsdp2_tensor2": dict(data=2, fsdp=2, tensor=2),
    "sequence2_fsdp4": dict(data=1, fsdp=4, sequence=2),
}


def gpt_config(**model):
    c = base_config()
    c.model.update(dict(name="gpt", vocab_size=64, d_model=32, num_layers=2, num_heads=4, max_len=16), **model)
    c.data.seq_len = 16
    c.data.batch_size = 16
    c.optim.update(lr=1e-2, min_lr=1e-3, warmup_steps=2, weight_decay=0.1)
    c.train.steps = STEPS
    return c


def lm_batches(config, steps=STEPS, seed=0):
    """Token streams with structure (a noisy affine recurrence), so the loss falls visibly in ten steps."""
    rng = np.random.default_rng(seed)
    b, length, vocab = config.data.batch_size, config.data.seq_len, config.model.vocab_size
    out = []
    for _ in range(steps):
        tokens = np.empty((b, length + 1), np.int64)
        tokens[:, 0] = rng.integers(0, vocab, b)
        for i in range(length):
            noise = rng.random(b) < 0.2
            tokens[:, i + 1] = np.where(noise, rng.integers(0, vocab, b), (5 * tokens[:, i] + 3) % vocab)
        out.append({"inputs": tokens[:, :-1].astype(np.int32), "targets": tokens[:, 1:].astype(np.int32)})
    return out


# Compiling at XLA's lowest backend optimisation level keeps these tests fast; every mesh, the one-device
# reference included, is compiled the same way.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def initial_state(config):
    """The train state every mesh starts from, initialised once on one device."""
    mesh = mesh_lib.single_device_mesh()
    tx, _ = optim.make_optimizer(config.optim, STEPS)
    _, _, _, init = loop.create_state(config, mesh, tx)
    return jax.device_get(init.lower(0).compile(compiler_options=FAST_COMPILE)())  # on the host: no donation


def loss_curve(config, mesh_sizes, batches, state):
    """Train `len(batches)` steps from `state` on the mesh; returns the per-step losses."""
    config = config.copy_and_resolve_references()
    config.mesh.update(dict(data=-1, fsdp=1, tensor=1, sequence=1), **mesh_sizes)
    devices = jax.devices() if mesh_sizes else jax.devices()[:1]
    mesh = mesh_lib.make_mesh(config.mesh, devices)
    tx, schedule = optim.make_optimizer(config.optim, STEPS)
    graphdef, _, shardings, _ = loop.create_state(config, mesh, tx)
    step_fn, _, _, feed_sharding = loop.make_step_fns(config, mesh, graphdef, shardings, tx, schedule)
    state = jax.device_put(state, shardings)
    feeds = [loop.to_global(batch, feed_sharding) for batch in batches]
    compiled = step_fn.lower(state, feeds[0]).compile(compiler_options=FAST_COMPILE)
    losses = []
    for feed in feeds:
        state, out = compiled(state, feed)
        losses.append(out["loss"])
    return np.asarray(jax.device_get(losses), np.float64)


@pytest.fixture(scope="module")
def gpt_reference():
    config = gpt_config()
    batches = lm_batches(config)
    state = initial_state(config)
    return config, batches, state, loss_curve(config, {}, batches, state)


@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_gpt_loss_curve_is_the_same_on_every_mesh(gpt_reference, mesh_name):
    config, batches, state, reference = gpt_reference
    assert reference[-1] < reference[0] - 0.3  # the curve moves, so agreeing with it means something
    sizes = MESHES[mesh_name]
    if sizes.get("sequence", 1) > 1:
        config = config.copy_and_resolve_references()
        config.model.attention = "ring"
    got = loss_curve(config, sizes, batches, state)
    np.testing.assert_allclose(got, reference, rtol=1e-4)
