"""The optimizer's semantics, pinned against references: optax's AdamW with a mask written out by hand, the
schedule's values at chosen steps (by hand and optax's), gradient clipping as optax's clip_by_global_norm, and
which parameters of the real models weight decay touches."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bmjax.defaults import base_config
from bmjax.models import build_model
from bmjax.train import optim
from bmjax.train.step import split_model


def optim_config(**overrides):
    c = base_config().optim
    c.update(dict(lr=1e-3, min_lr=1e-4, warmup_steps=10, decay_steps=110, schedule="cosine"), **overrides)
    return c


# --- the schedule -------------------------------------------------------------------------------------------

def cosine_by_hand(step, lr=1e-3, min_lr=1e-4, warmup=10, decay_steps=110):
    if step < warmup:
        return lr * step / warmup
    t = min(step, decay_steps) - warmup
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * t / (decay_steps - warmup)))


COSINE_POINTS = {  # step -> value; warmup, peak, quarter and middle of the cosine, the floor at and after the end
    0: 0.0, 5: 5e-4, 10: 1e-3, 35: 1e-4 + 9e-4 * 0.5 * (1 + math.cos(math.pi / 4)), 60: 5.5e-4, 109: None,
    110: 1e-4, 111: 1e-4, 1000: 1e-4,
}


@pytest.mark.parametrize("step", list(COSINE_POINTS))
def test_cosine_schedule_at_chosen_steps(step):
    schedule = optim.schedule(optim_config(), total_steps=500)
    want = COSINE_POINTS[step] if COSINE_POINTS[step] is not None else cosine_by_hand(step)
    assert cosine_by_hand(step) == pytest.approx(want, rel=1e-12)  # the table agrees with the formula
    assert float(schedule(step)) == pytest.approx(want, rel=1e-6, abs=1e-12)
    reference = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 110, end_value=1e-4)
    assert float(schedule(step)) == float(reference(step))


def test_the_schedule_ends_at_min_lr_not_zero():
    schedule = optim.schedule(optim_config(min_lr=3e-5), total_steps=110)
    assert [float(schedule(s)) for s in (110, 200, 10_000)] == pytest.approx([3e-5] * 3, rel=1e-6)


def test_decay_steps_default_to_the_run_length():
    schedule = optim.schedule(optim_config(decay_steps=None), total_steps=210)
    assert float(schedule(110)) == pytest.approx(5.5e-4, rel=1e-6)  # the middle of a 200-step cosine
    assert float(schedule(210)) == pytest.approx(1e-4, rel=1e-6)


def test_linear_and_constant_schedules_at_chosen_steps():
    linear = optim.schedule(optim_config(schedule="linear"), total_steps=110)
    assert [float(linear(s)) for s in (5, 10, 60, 110, 1000)] == pytest.approx(
        [5e-4, 1e-3, 5.5e-4, 1e-4, 1e-4], rel=1e-6)
    constant = optim.schedule(optim_config(schedule="constant"), total_steps=110)
    assert [float(constant(s)) for s in (5, 10, 110, 1000)] == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3], rel=1e-6)


def test_no_warmup_starts_at_the_peak():
    schedule = optim.schedule(optim_config(warmup_steps=0, decay_steps=100), total_steps=100)
    assert float(schedule(0)) == pytest.approx(1e-3, rel=1e-6)
    assert float(schedule(50)) == pytest.approx(5.5e-4, rel=1e-6)


def test_decay_steps_within_the_warmup_fall_to_the_floor_right_after_it():
    schedule = optim.schedule(optim_config(warmup_steps=10, decay_steps=5), total_steps=100)
    assert [float(schedule(s)) for s in (5, 10, 11, 50)] == pytest.approx([5e-4, 1e-3, 1e-4, 1e-4], rel=1e-6)


# --- which parameters decay ---------------------------------------------------------------------------------

def model_params(name, **model):
    c = base_config().model
    c.update(dict(name=name, d_model=16, num_layers=1, num_heads=2, vocab_size=32, max_len=8), **model)
    _, params, _ = split_model(build_model(c, rngs=nnx.Rngs(0)))
    return params


def decayed_leaves(params, decay_embeddings=False):
    mask = optim.decay_mask(params, decay_embeddings)
    names = {jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value"): flag
             for path, flag in jax.tree_util.tree_leaves_with_path(mask)}
    return {name for name, flag in names.items() if flag}, set(names)


GPT_MATRICES = {f"blocks/0/{m}/kernel" for m in ("attn/query", "attn/key", "attn/value", "attn/out",
                                                   "mlp/fc_in", "mlp/fc_out")} | {"lm_head/kernel"}
GPT_EMBEDDINGS = {"wte/embedding", "wpe/embedding"}
BERT_MATRICES = ({f"blocks/0/{m}/kernel" for m in ("attn/query", "attn/key", "attn/value", "attn/out",
                                                     "mlp/fc_in", "mlp/fc_out")}
                 | {"mlm/dense/kernel", "nsp/kernel", "pooler/kernel"})
BERT_EMBEDDINGS = {"wte/embedding", "wpe/embedding", "token_types/embedding"}


@pytest.mark.parametrize("decay_embeddings", [False, True])
def test_gpt_decays_matrices_not_biases_or_norms(decay_embeddings):
    decayed, every = decayed_leaves(model_params("gpt", tie_embeddings=False), decay_embeddings)
    assert decayed == GPT_MATRICES | (GPT_EMBEDDINGS if decay_embeddings else set())
    kept = every - decayed
    assert {"blocks/0/ln_1/scale", "blocks/0/ln_1/bias", "ln_f/scale", "blocks/0/attn/query/bias",
            "blocks/0/mlp/fc_out/bias"} <= kept
    assert all(n.endswith(("bias", "scale")) for n in kept - GPT_EMBEDDINGS)


@pytest.mark.parametrize("decay_embeddings", [False, True])
def test_bert_decays_matrices_not_biases_or_norms(decay_embeddings):
    decayed, every = decayed_leaves(model_params("bert", heads="pretraining"), decay_embeddings)
    assert decayed == BERT_MATRICES | (BERT_EMBEDDINGS if decay_embeddings else set())
    assert {"ln_embed/scale", "mlm/ln/scale", "mlm/bias", "blocks/0/ln_mlp/bias"} <= every - decayed


def test_rmsnorm_scales_and_stacked_layers_keep_their_mask():
    """Decided by names: an RMSNorm scale is not decayed, nor a bias stacked into 2-D by scan_layers."""
    decayed, every = decayed_leaves(model_params("gpt", norm="rmsnorm", scan_layers=True, num_layers=2))
    assert "blocks/mlp/fc_in/bias" in every and "blocks/mlp/fc_in/bias" not in decayed
    assert "blocks/ln_1/scale" in every and "blocks/ln_1/scale" not in decayed
    assert "blocks/mlp/fc_in/kernel" in decayed


# --- the update against optax's AdamW -----------------------------------------------------------------------

def toy_params():
    rng = np.random.default_rng(0)
    leaf = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    return {"dense": {"kernel": leaf(4, 3), "bias": leaf(3)}, "ln_f": {"scale": leaf(3), "bias": leaf(3)},
            "wte": {"embedding": leaf(5, 4)}}


def hand_mask(decay_embeddings):
    return {"dense": {"kernel": True, "bias": False}, "ln_f": {"scale": False, "bias": False},
            "wte": {"embedding": decay_embeddings}}


def toy_loss(params, step):
    """A loss whose gradient changes size from step to step, so clipping at 1.0 bites on some steps only."""
    x = jnp.ones((2, 5)) * (1.0 + step)
    h = jnp.tanh(x @ params["wte"]["embedding"]) @ params["dense"]["kernel"] + params["dense"]["bias"]
    h = h * params["ln_f"]["scale"] + params["ln_f"]["bias"]
    return jnp.sum(h ** 2) * (0.2 + step % 3)


def run_updates(tx, steps=6):
    params = toy_params()
    state = tx.init(params)
    norms = []
    for step in range(steps):
        grads = jax.grad(toy_loss)(params, step)
        norms.append(float(optax.tree.norm(grads)))
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, norms


@pytest.mark.parametrize("decay_embeddings", [False, True])
def test_update_equals_optax_adamw_with_an_explicit_mask(decay_embeddings):
    cfg = optim_config(lr=0.05, min_lr=0.005, warmup_steps=2, decay_steps=6, b1=0.8, b2=0.97, eps=1e-6,
                       weight_decay=0.3, grad_clip=1.0, decay_embeddings=decay_embeddings)
    tx, _ = optim.make_optimizer(cfg, total_steps=6)
    got, norms = run_updates(tx)
    reference = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(lambda s: jnp.asarray([cosine_by_hand(i, 0.05, 0.005, 2, 6) for i in range(8)])[s],
                    b1=0.8, b2=0.97, eps=1e-6, weight_decay=0.3, mask=hand_mask(decay_embeddings)))
    want, _ = run_updates(reference)
    assert min(norms) < 1.0 < max(norms)  # clipping is active on some steps, not on others
    # Two float32 computations of the same six updates may round differently (AVX2 and AVX-512 kernels do): each
    # step may add a few roundings of the parameter's size and of the update's (at most the peak lr), so allow
    # 4 float32 epsilons of each per step. A wrong mask or schedule moves a parameter by ~1e-2, far outside.
    tolerance = 6 * 4 * np.finfo(np.float32).eps
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=tolerance, atol=tolerance * 0.05, err_msg=jax.tree_util.keystr(path))


def test_weight_decay_alone_shrinks_exactly_the_masked_leaves():
    """With a zero gradient Adam's step is 0, so one update is p - lr * weight_decay * p on decayed leaves and
    nothing on the others (hand-computed, no optax on the reference side)."""
    cfg = optim_config(lr=0.1, warmup_steps=0, schedule="constant", weight_decay=0.5, grad_clip=1.0)
    tx, _ = optim.make_optimizer(cfg, total_steps=10)
    params = toy_params()
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    new = optax.apply_updates(params, updates)
    for (path, p), q, decays in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(new),
                                    jax.tree.leaves(hand_mask(False))):
        want = np.asarray(p) * (1 - 0.1 * 0.5) if decays else np.asarray(p)
        np.testing.assert_allclose(np.asarray(q), want, rtol=1e-6, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("grad_clip", [0.5, 0.0])
def test_gradients_are_clipped_as_optax_clip_by_global_norm(grad_clip):
    """Adam's first moment after one step is (1 - b1) times the gradient it saw: the clipped one."""
    cfg = optim_config(b1=0.9, grad_clip=grad_clip)
    tx, _ = optim.make_optimizer(cfg, total_steps=100)
    params = toy_params()
    grads = jax.grad(toy_loss)(params, 2)
    assert float(optax.tree.norm(grads)) > 2.0
    _, state = tx.update(grads, tx.init(params), params)
    if grad_clip:
        seen, _ = optax.clip_by_global_norm(grad_clip).update(grads, optax.EmptyState())
        assert float(optax.tree.norm(seen)) == pytest.approx(grad_clip, rel=1e-6)
    else:
        seen = grads
    mu = optax.tree.get(state, "mu")
    for (path, m), g in zip(jax.tree_util.tree_leaves_with_path(mu), jax.tree.leaves(seen)):
        np.testing.assert_allclose(np.asarray(m), 0.1 * np.asarray(g), rtol=1e-6, err_msg=jax.tree_util.keystr(path))


def test_a_schedule_that_does_not_fit_the_run_is_a_start_up_warning():
    assert optim.schedule_warnings(optim_config(warmup_steps=10, decay_steps=None), total_steps=100) == []  # decay follows steps
    assert optim.schedule_warnings(optim_config(warmup_steps=500, lr=2e-5, decay_steps=None), total_steps=54) == [
        "optim.warmup_steps=500 >= the run's 54 steps (train.steps): the learning rate never reaches "
        "optim.lr=2e-05 and never decays"]
    assert optim.schedule_warnings(optim_config(warmup_steps=10, decay_steps=2000), total_steps=200) == [
        "optim.decay_steps=2000 is set apart from the run's 200 steps (train.steps): the learning rate ends the "
        "run 1800 steps before its decay is done; unset optim.decay_steps to follow train.steps"]
    assert "stays at optim.min_lr for the last 100 steps" in optim.schedule_warnings(
        optim_config(warmup_steps=10, decay_steps=100), total_steps=200)[0]
