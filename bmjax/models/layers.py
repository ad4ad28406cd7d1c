"""Building blocks shared by GPT and BERT: linear, norms, MLPs, embeddings, dropout.

Every parameter carries logical axis names (batch, length, embed, heads, kv_heads,
head_dim, mlp, vocab) through `nnx.with_partitioning`; the rules in force map them to
mesh axes (bmjax/models/sharding.py). Biases take their kernel's output axes; norm parameters ('embed',).
Build modules under `nnx.use_eager_sharding(False)` (the model builder does), since
eager sharding needs a mesh.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from bmjax.models import dropout as dropout_lib
from bmjax.models.sharding import constrain  # activation layout hints, used here and by the models

Axes = tuple[str | None, ...]


def default_d_ff(d_model: int, mlp: str) -> int:
    """Hidden width when the config leaves d_ff unset.

    gelu: 4 * d_model (GPT-2). swiglu: 8/3 * d_model (same parameter count as a
    4x GELU MLP with three matrices instead of two), rounded up to a multiple of 64.
    """
    if mlp == "swiglu":
        return 64 * math.ceil(8 * d_model / 3 / 64)
    return 4 * d_model


def _tuple(x: int | Sequence[int]) -> tuple[int, ...]:
    return (x,) if isinstance(x, int) else tuple(x)


def token_matmul(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
    """`lax.dot_general` for a linear layer (trailing axes of lhs against leading axes of rhs, no batch axes).

    On CPU the leading (token) axes are merged first, so the product is one 2-D matmul: XLA:CPU turns the
    weight gradient of a dot that contracts two token axes ([batch, length]) into a transposed copy of the
    output gradient, duplicating its producer (e.g. GELU's backward) in a slow strided loop; with one token
    axis the weight gradient is a plain matmul. The result is the same product. Other backends (where a
    sharded length axis could not be merged into the batch axis without communication) get the plain dot.
    """
    (lhs_contract, rhs_contract), batch = dimension_numbers
    n = len(lhs_contract)
    trailing_by_leading = (tuple(lhs_contract) == tuple(range(lhs.ndim - n, lhs.ndim))
                           and tuple(rhs_contract) == tuple(range(n)) and not any(batch))
    if jax.default_backend() != "cpu" or lhs.ndim - n <= 1 or not trailing_by_leading:
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                                   preferred_element_type=preferred_element_type, **kwargs)
    lead, inner, out = lhs.shape[:-n], rhs.shape[:n], rhs.shape[n:]
    flat = jax.lax.dot_general(lhs.reshape(-1, math.prod(inner)), rhs.reshape(math.prod(inner), -1),
                               (((1,), (0,)), ((), ())), precision=precision,
                               preferred_element_type=preferred_element_type, **kwargs)
    return flat.reshape(*lead, *out)


def output_logits(equation: str, h, w):
    """The output layer's logits in float32, from operands in the compute dtype: `jnp.einsum(equation, h, w)`.

    Plain autodiff of an einsum with a float32 result multiplies the float32 cotangent by the other, low-precision
    operand: mixed operands that XLA runs as float32 matrix products, the largest of the model (tokens x vocab x
    width, twice in the backward pass). Here the cotangent is rounded to the operands' dtype first, as every
    other layer's is, so the backward's products run in that dtype too (float32 accumulation). With float32
    operands this is exactly the plain einsum.
    """
    if h.dtype == jnp.float32 and w.dtype == jnp.float32:
        return jnp.einsum(equation, h, w, preferred_element_type=jnp.float32)
    return _low_precision_logits(equation, h, w)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _low_precision_logits(equation, h, w):
    return jnp.einsum(equation, h, w, preferred_element_type=jnp.float32)


def _low_precision_logits_fwd(equation, h, w):
    return _low_precision_logits(equation, h, w), (h, w)


def _low_precision_logits_bwd(equation, residuals, g):
    h, w = residuals
    inputs, out = equation.split("->")
    h_axes, w_axes = inputs.split(",")
    g = g.astype(h.dtype)
    dh = jnp.einsum(f"{out},{w_axes}->{h_axes}", g, w.astype(h.dtype), preferred_element_type=jnp.float32)
    dw = jnp.einsum(f"{h_axes},{out}->{w_axes}", h, g, preferred_element_type=jnp.float32)
    return dh.astype(h.dtype), dw.astype(w.dtype)


_low_precision_logits.defvjp(_low_precision_logits_fwd, _low_precision_logits_bwd)


def linear(in_features: int | Sequence[int], out_features: int | Sequence[int],
           in_axes: Axes, out_axes: Axes, *, use_bias: bool, init_std: float, dtype, param_dtype,
           rngs: nnx.Rngs) -> nnx.LinearGeneral:
    """A (multi-axis) linear layer contracting the trailing input axes.

    Kernel shape (*in_features, *out_features) named (*in_axes, *out_axes), init
    N(0, init_std); bias zeros named out_axes.
    """
    in_features, out_features = _tuple(in_features), _tuple(out_features)
    return nnx.LinearGeneral(
        in_features, out_features, axis=tuple(range(-len(in_features), 0)), use_bias=use_bias,
        dtype=dtype, param_dtype=param_dtype,
        kernel_init=nnx.with_partitioning(nnx.initializers.normal(init_std), (*in_axes, *out_axes)),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), out_axes),
        dot_general=token_matmul, rngs=rngs)


def make_norm(kind: str, d_model: int, *, eps: float, use_bias: bool, dtype, param_dtype,
              rngs: nnx.Rngs) -> nnx.Module:
    """LayerNorm (scale, and bias when use_bias) or RMSNorm (scale only)."""
    scale_init = nnx.with_partitioning(nnx.initializers.ones_init(), ("embed",))
    if kind == "layernorm":
        return nnx.LayerNorm(d_model, epsilon=eps, use_bias=use_bias, dtype=dtype,
                             param_dtype=param_dtype, scale_init=scale_init,
                             bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("embed",)),
                             rngs=rngs)
    if kind == "rmsnorm":
        return nnx.RMSNorm(d_model, epsilon=eps, dtype=dtype, param_dtype=param_dtype,
                           scale_init=scale_init, rngs=rngs)
    raise ValueError(f"unknown norm {kind!r}; expected 'layernorm' or 'rmsnorm'")


class MLP(nnx.Module):
    """fc_in -> GELU -> fc_out (GPT-2 uses the tanh approximation; BERT the exact erf)."""

    def __init__(self, d_model: int, d_ff: int, *, use_bias: bool, init_std: float,
                 out_init_std: float, dtype, param_dtype, rngs: nnx.Rngs,
                 approximate_gelu: bool = True):
        common = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc_in = linear(d_model, d_ff, ("embed",), ("mlp",), init_std=init_std, **common)
        self.fc_out = linear(d_ff, d_model, ("mlp",), ("embed",), init_std=out_init_std, **common)
        self.approximate_gelu = approximate_gelu

    def __call__(self, x):
        return self.fc_out(jax.nn.gelu(self.fc_in(x), approximate=self.approximate_gelu))


class SwiGLU(nnx.Module):
    """down(silu(gate(x)) * up(x)) (Shazeer 2020; LLaMA)."""

    def __init__(self, d_model: int, d_ff: int, *, use_bias: bool, init_std: float,
                 out_init_std: float, dtype, param_dtype, rngs: nnx.Rngs):
        common = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate = linear(d_model, d_ff, ("embed",), ("mlp",), init_std=init_std, **common)
        self.up = linear(d_model, d_ff, ("embed",), ("mlp",), init_std=init_std, **common)
        self.down = linear(d_ff, d_model, ("mlp",), ("embed",), init_std=out_init_std, **common)

    def __call__(self, x):
        return self.down(jax.nn.silu(self.gate(x)) * self.up(x))


def make_mlp(kind: str, d_model: int, d_ff: int, **kwargs) -> nnx.Module:
    """'gelu' -> MLP, 'swiglu' -> SwiGLU; kwargs as their constructors take."""
    if kind == "gelu":
        return MLP(d_model, d_ff, **kwargs)
    if kind == "swiglu":
        return SwiGLU(d_model, d_ff, **kwargs)
    raise ValueError(f"unknown mlp {kind!r}; expected 'gelu' or 'swiglu'")


class Embed(nnx.Embed):
    """nnx.Embed whose table is whole along its embedding axis where it is looked up.

    FSDP keeps the table split on its embedding columns at rest. Rows looked up from a column-split table
    come out column-split, and turning them into batch-split activations is a re-sharding XLA's SPMD
    partitioner can only do by replicating them ("involuntary full rematerialization"); gathering the table's
    columns first (what FSDP does for every other weight) makes the lookup batch-parallel. A vocabulary split
    (tensor parallelism) stays: that lookup is a masked local gather and a sum.
    """

    def __init__(self, *args, lookup_axes: Axes, **kwargs):
        super().__init__(*args, **kwargs)
        self.lookup_axes = lookup_axes

    def __call__(self, inputs):
        table = constrain(self.embedding[...], self.lookup_axes)
        (table,) = self.promote_dtype((table,), dtype=self.dtype, inexact=False)
        return jnp.take(table, inputs, axis=0)


def embed(num_embeddings: int, d_model: int, axes: Axes, *, init_std: float, dtype, param_dtype,
          rngs: nnx.Rngs) -> Embed:
    """A lookup table [num_embeddings, d_model] named `axes`, init N(0, init_std).

    Token embeddings use ('vocab', 'embed'); position embeddings (None, 'embed').
    """
    return Embed(num_embeddings, d_model, dtype=dtype, param_dtype=param_dtype,
                 embedding_init=nnx.with_partitioning(nnx.initializers.normal(init_std), axes),
                 lookup_axes=(axes[0], None), rngs=rngs)


def dropout(x, rate: float, rngs: nnx.Rngs | None):
    """nnx.Dropout's result, active iff rngs is given and rate > 0: each call takes the next key of rngs.dropout
    (bmjax/models/dropout.py: the same masks, drawn without jax's slow CPU lowering)."""
    return dropout_lib.dropout(x, rate, rngs)


# Rematerialisation policies (model.remat): what a block keeps from its forward pass for the backward pass.
# "none" keeps everything (no jax.checkpoint); the others recompute whatever they do not keep.
REMAT_POLICIES = {
    "full": None,  # keep only the block's input; recompute the whole block
    "dots_saveable": jax.checkpoint_policies.dots_saveable,  # keep every matmul output
    # keep the weight matmuls' outputs but not attention's batched q.k / p.v products (MaxText's "minimal")
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    # keep only the attention output (named "attention_out" by Attention); recompute projections and MLP
    "save_attention_out": jax.checkpoint_policies.save_only_these_names("attention_out"),
}
