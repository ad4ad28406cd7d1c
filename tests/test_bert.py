"""BERT on its own: heads and their outputs, padding, dropout, jit, axis names, sizes, config errors.
(Numerical equality with Hugging Face's BERT is in test_hf_parity.py.)"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bmjax.errors import ConfigError
from bmjax.models import build_model
from bmjax.models.bert import Bert, BertConfig, BertOutput

TINY = dict(name="bert", vocab_size=61, d_model=32, num_layers=2, num_heads=4, d_ff=64, max_len=24)
AXES = {"batch", "length", "embed", "heads", "kv_heads", "head_dim", "mlp", "vocab", None}


def _bert(**overrides) -> Bert:
    return build_model({**TINY, **overrides}, rngs=nnx.Rngs(0))


@nnx.jit
def _run(model, ids, types=None, mask=None, rngs=None):
    """model(...) compiled once per model shape (eager op-by-op calls are slow on CPU)."""
    return model(ids, types, mask, rngs=rngs)


@pytest.fixture(scope="module")
def model() -> Bert:
    return _bert()  # heads="pretraining", the default


def _inputs(batch=2, length=10, seed=0):
    rng = np.random.default_rng(seed)
    ids = jnp.asarray(rng.integers(0, TINY["vocab_size"], (batch, length)))
    types = jnp.asarray((np.arange(length) >= length // 2).astype(np.int32)[None].repeat(batch, 0))
    mask = jnp.ones((batch, length), jnp.int32).at[1, 6:].set(0)
    return ids, types, mask


@pytest.mark.parametrize("heads,present", [
    ("pretraining", {"pooled", "mlm_logits", "nsp_logits"}),
    ("mlm", {"mlm_logits"}),
    ("classification", {"pooled", "logits"}),
    ("none", {"pooled"}),
])
def test_each_head_returns_its_outputs(heads, present):
    cfg = BertConfig.from_mapping({**TINY, "heads": heads, "num_labels": 3})
    ids, types, mask = _inputs()
    # Shapes and dtypes only (values are checked against Hugging Face in test_hf_parity.py):
    # an abstract build and call, nothing compiled.
    with nnx.use_eager_sharding(False):
        out = jax.eval_shape(lambda: Bert(cfg, rngs=nnx.Rngs(0))(ids, types, mask))
    assert isinstance(out, BertOutput)
    shapes = {"hidden_states": (2, 10, 32), "pooled": (2, 32), "mlm_logits": (2, 10, 61),
              "nsp_logits": (2, 2), "logits": (2, 3)}
    for field, shape in shapes.items():
        value = getattr(out, field)
        if field == "hidden_states" or field in present:
            assert value.shape == shape, field
        else:
            assert value is None, field
    for field in ("mlm_logits", "nsp_logits", "logits"):
        if field in present:
            assert getattr(out, field).dtype == jnp.float32


def test_padded_tokens_do_not_change_real_outputs(model):
    ids, types, mask = _inputs()
    other_ids = ids.at[1, 6:].set((ids[1, 6:] + 7) % TINY["vocab_size"])  # only row 1's padding changes
    a, b = _run(model, ids, types, mask), _run(model, other_ids, types, mask)
    np.testing.assert_allclose(a.hidden_states[1, :6], b.hidden_states[1, :6], atol=1e-6)
    np.testing.assert_allclose(a.nsp_logits, b.nsp_logits, atol=1e-6)
    # Without padding the same change does reach the real tokens (so the check above means something).
    no_padding = jnp.ones_like(mask)
    c, d = _run(model, ids, types, no_padding), _run(model, other_ids, types, no_padding)
    assert float(jnp.max(jnp.abs(c.hidden_states[1, :6] - d.hidden_states[1, :6]))) > 1e-3


def test_token_types_default_to_zero(model):
    ids, _, mask = _inputs()
    a, b = _run(model, ids, None, mask), _run(model, ids, jnp.zeros_like(ids), mask)
    np.testing.assert_array_equal(a.hidden_states, b.hidden_states)


def test_dropout_runs_only_with_rngs(model):
    x = _inputs()
    plain = _run(model, *x)
    np.testing.assert_array_equal(plain.nsp_logits, _run(model, *x).nsp_logits)
    # "rbg" keys: XLA compiles their random bits far faster on CPU than threefry's.
    drop1 = _run(model, *x, rngs=nnx.Rngs(dropout=jax.random.key(1, impl="rbg")))
    drop2 = _run(model, *x, rngs=nnx.Rngs(dropout=jax.random.key(2, impl="rbg")))
    assert float(jnp.max(jnp.abs(drop1.hidden_states - plain.hidden_states))) > 1e-3
    assert float(jnp.max(jnp.abs(drop1.hidden_states - drop2.hidden_states))) > 1e-3


def test_gradients_reach_every_parameter_through_remat(model):
    """Under remat="full" (blocks recomputed in the backward pass) the outputs are unchanged,
    leave the jit as a BertOutput, and every parameter gets a gradient."""
    remat = _bert(remat="full")  # same seed, so the same parameters as `model`
    graphdef, params = nnx.split(remat, nnx.Param)
    ids, types, mask = _inputs()

    def loss(params):
        o = nnx.merge(graphdef, params)(ids, types, mask)
        mlm = jnp.sum(jax.nn.log_softmax(o.mlm_logits)[..., 0])
        return mlm + jnp.sum(jax.nn.log_softmax(o.nsp_logits)[:, 0]), o

    grads, out = jax.jit(jax.grad(loss, has_aux=True))(params)
    assert isinstance(out, BertOutput)
    np.testing.assert_allclose(out.mlm_logits, _run(model, ids, types, mask).mlm_logits, atol=1e-5)
    for path, g in nnx.to_flat_state(grads):
        assert float(jnp.max(jnp.abs(g[...]))) > 0, f"no gradient reaches {path}"


def test_every_parameter_has_logical_axis_names(model):
    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param):
            names = var.get_metadata().get("out_sharding")
            assert names is not None and len(names) == var.ndim, (path, names)
            assert set(names) <= AXES, (path, names)
    assert model.wte.embedding.get_metadata()["out_sharding"] == ("vocab", "embed")


def test_bert_base_has_the_published_parameter_count():
    """bert-base-uncased: 109,482,240 parameters in BertModel; + MLM transform, bias and NSP."""
    with nnx.use_eager_sharding(False):
        abstract = nnx.eval_shape(lambda: Bert(BertConfig(heads="pretraining"), rngs=nnx.Rngs(0)))
    sizes = {path: v.size for path, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}
    heads = sum(n for path, n in sizes.items() if path[0] in ("mlm", "nsp"))
    assert sum(sizes.values()) - heads == 109_482_240
    assert heads == (768 * 768 + 768) + 2 * 768 + 30522 + (768 * 2 + 2)


def test_bad_configs_name_the_key():
    with pytest.raises(ConfigError, match="model.heads"):
        BertConfig(heads="qa")
    with pytest.raises(ConfigError, match="model.num_labels"):
        BertConfig(heads="classification")
    with pytest.raises(ConfigError, match="model.num_heads"):
        BertConfig(d_model=30, num_heads=4)
    with pytest.raises(ConfigError, match="model.remat"):
        BertConfig(remat="sometimes")
    # from_mapping ignores keys of other model kinds (a shared model.* config section).
    assert BertConfig.from_mapping({**TINY, "norm": "rmsnorm"}).d_model == 32
