"""The output layer's logits (GPT's LM head, BERT's MLM decoder): float32 logits from bfloat16 operands, and a
backward pass whose matrix products run in bfloat16 too, not as float32 products of mixed operands (what plain
autodiff of a float32-result einsum gives: on a GPU the model's largest matmuls at the float32 rate)."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bmjax.models import build_model
from bmjax.models.layers import output_logits
from bmjax.train import tasks


def mixed_products(jaxpr) -> list:
    """The dot_generals (in every nested jaxpr) whose two operands have different dtypes."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general" and eqn.invars[0].aval.dtype != eqn.invars[1].aval.dtype:
            found.append(eqn)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += mixed_products(inner)
    return found


def operands(dtype):
    keys = jax.random.split(jax.random.key(0), 3)
    h = jax.random.normal(keys[0], (2, 8, 32)).astype(dtype)
    w = (jax.random.normal(keys[1], (96, 32)) * 0.2).astype(dtype)
    g = jax.random.normal(keys[2], (2, 8, 96))
    return h, w, g


def grads(fn, h, w, g):
    return jax.grad(lambda h, w: jnp.sum(fn("bld,vd->blv", h, w) * g), argnums=(0, 1))(h, w)


def plain(equation, h, w):
    return jnp.einsum(equation, h, w, preferred_element_type=jnp.float32)


def test_bfloat16_logits_are_the_plain_products_and_the_backward_stays_in_bfloat16():
    h, w, g = operands(jnp.bfloat16)
    out = output_logits("bld,vd->blv", h, w)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, plain("bld,vd->blv", h, w))

    jaxpr = jax.make_jaxpr(lambda h, w: grads(output_logits, h, w, g))(h, w).jaxpr
    assert mixed_products(jaxpr) == []
    assert mixed_products(jax.make_jaxpr(lambda h, w: grads(plain, h, w, g))(h, w).jaxpr)  # what it avoids

    # The gradients are those of float32 arithmetic up to bfloat16 rounding of the cotangent.
    reference = grads(plain, h.astype(jnp.float32), w.astype(jnp.float32), g)
    for got, want in zip(grads(output_logits, h, w, g), reference):
        assert got.dtype == jnp.bfloat16
        err = np.linalg.norm(np.asarray(got, np.float32) - want) / np.linalg.norm(want)
        assert err < 1e-2, err


def test_float32_is_exactly_the_plain_einsum_with_its_gradients():
    h, w, g = operands(jnp.float32)
    np.testing.assert_array_equal(output_logits("bld,vd->blv", h, w), plain("bld,vd->blv", h, w))
    for got, want in zip(grads(output_logits, h, w, g), grads(plain, h, w, g)):
        np.testing.assert_array_equal(got, want)


def test_a_bfloat16_gpt_training_step_has_no_mixed_precision_output_layer_matmul():
    vocab = 160  # no other dimension of this model has this size
    model = build_model(dict(name="gpt", vocab_size=vocab, d_model=32, num_layers=2, num_heads=2, max_len=16,
                             dtype="bfloat16"), rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    ids = jnp.zeros((2, 16), jnp.int32)
    batch = {"inputs": ids, "targets": ids}

    def loss(params):
        return tasks.lm_loss(nnx.merge(graphdef, params, rest), batch, None)[0]

    mixed = mixed_products(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
    # (XLA's own attention mixes float32 probabilities with bfloat16 values in products it pins to bfloat16
    # arithmetic; cuDNN's is fused. The output layer is the one that matters for speed.)
    assert [e for e in mixed if any(vocab in v.aval.shape for v in e.invars)] == []
