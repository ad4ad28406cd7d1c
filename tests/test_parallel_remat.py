"""Rematerialisation (model.remat): every policy gives the same gradients, and keeps for the backward pass only
what it says it keeps (the rest is recomputed).

What a policy keeps is measured on the jaxpr, not on compiled HLO text: the residuals of `jax.vjp` (the arrays
the forward pass hands to the backward pass; `vjp`'s function is a pytree whose leaves are exactly those).
(Gradient accumulation and bfloat16 compute are checked on a mesh in test_parallel_mesh.py.)"""
import jax
import numpy as np
import pytest
from flax import nnx

from bmjax.models import build_model
from bmjax.train import tasks
from helpers.compile import FAST_COMPILE
from helpers.tiny_models import bert_config, gpt_config, initial_state, lm_batches, mlm_batches

POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable", "save_attention_out")


def loss_fn(config, policy, batch):
    """params -> the task's loss, for the model of `config` under remat `policy`."""
    model = nnx.eval_shape(lambda: build_model(dict(config.model, remat=policy), rngs=nnx.Rngs(0)))
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    task_loss = tasks.lm_loss if config.model.name == "gpt" else tasks.mlm_loss
    return lambda params: task_loss(nnx.merge(graphdef, params, rest), batch, None)[0]


def residual_bytes(loss, params) -> int:
    """Bytes the forward pass keeps for the backward pass: the leaves of jax.vjp's backward function (the
    parameters themselves are among them, the same under every policy). Traced only, nothing runs."""
    backward = jax.eval_shape(lambda p: jax.vjp(loss, p)[1], params)
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(backward))


@pytest.fixture(scope="module")
def remat_gradients():
    """For each policy: the loss gradient of the 2-layer GPT, compiled."""
    batch = lm_batches(gpt_config(), steps=1)[0]
    params = jax.device_get(initial_state(gpt_config()).params)  # the policy changes no parameter
    out = {}
    for policy in POLICIES:
        grad = jax.jit(jax.grad(loss_fn(gpt_config(), policy, batch)))
        out[policy] = grad.lower(params).compile(compiler_options=FAST_COMPILE)(params)
    return out


def test_remat_policies_give_the_same_gradients(remat_gradients):
    reference = remat_gradients["none"]
    for policy in POLICIES[1:]:
        for a, b in zip(jax.tree.leaves(remat_gradients[policy]), jax.tree.leaves(reference)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=policy)


@pytest.mark.parametrize("name", ["gpt", "gpt_scan_layers", "bert"])
def test_remat_policies_keep_only_what_they_name(name):
    """Residual bytes per policy. "full" keeps least (each block's input); "save_attention_out" keeps exactly the
    attention outputs ([batch, length, d_model] float32 per layer) on top of that; "dots_with_no_batch_dims_saveable"
    keeps the weight matmuls but not attention's batched products, so at least the [batch, heads, length, length]
    scores per layer less than "dots_saveable"; no policy keeps as much as "none"."""
    config = {"gpt": gpt_config(), "gpt_scan_layers": gpt_config(scan_layers=True), "bert": bert_config()}[name]
    batch = (lm_batches if config.model.name == "gpt" else mlm_batches)(config, steps=1)[0]
    params = nnx.state(nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0))), nnx.Param)
    kept = {policy: residual_bytes(loss_fn(config, policy, batch), params) for policy in POLICIES}

    m, b, length = config.model, config.data.batch_size, config.data.seq_len
    attention_outputs = m.num_layers * b * length * m.d_model * 4
    attention_scores = m.num_layers * b * m.num_heads * length * length * 4
    assert kept["save_attention_out"] - kept["full"] == attention_outputs, kept
    assert kept["dots_saveable"] - kept["dots_with_no_batch_dims_saveable"] >= attention_scores, kept
    assert kept["full"] < kept["save_attention_out"] < kept["dots_with_no_batch_dims_saveable"], kept
    assert kept["dots_saveable"] < kept["none"], kept
