"""Rematerialisation (model.remat): every policy gives the same gradients, and recomputes what it does not keep.

(Gradient accumulation and bfloat16 compute are checked on a mesh in test_parallel_mesh.py.)"""
import re

import jax
import numpy as np
import pytest
from flax import nnx

from bmjax.models import build_model
from bmjax.train import tasks
from test_parallel_mesh import FAST_COMPILE, gpt_config, initial_state, lm_batches

POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable", "save_attention_out")


@pytest.fixture(scope="module")
def remat_runs():
    """For each policy: the loss gradient and the number of matmuls in the compiled forward + backward."""
    batch = lm_batches(gpt_config(), steps=1)[0]
    params = jax.device_get(initial_state(gpt_config()).params)  # the policy changes no parameter
    out = {}
    for policy in POLICIES:
        model = nnx.eval_shape(lambda: build_model(dict(gpt_config().model, remat=policy), rngs=nnx.Rngs(0)))
        graphdef, _, rest = nnx.split(model, nnx.Param, ...)

        def loss(params):
            return tasks.lm_loss(nnx.merge(graphdef, params, rest), batch, None)[0]

        compiled = jax.jit(jax.grad(loss)).lower(params).compile(compiler_options=FAST_COMPILE)
        out[policy] = (compiled(params), len(re.findall(r" dot\(", compiled.as_text())))
    return out


def test_remat_policies_give_the_same_gradients(remat_runs):
    reference, _ = remat_runs["none"]
    for policy in POLICIES[1:]:
        grads, _ = remat_runs[policy]
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(reference)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=policy)


def test_remat_policies_recompute_what_they_do_not_keep(remat_runs):
    """Matmuls in the compiled step: "full" redoes every forward matmul of every block in the backward pass,
    "save_attention_out" all but those after attention, "dots_saveable" none."""
    dots = {policy: count for policy, (_, count) in remat_runs.items()}
    assert dots["dots_saveable"] == dots["none"]
    assert dots["none"] < dots["save_attention_out"] < dots["full"]
