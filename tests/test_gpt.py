"""GPT: causal, packing, GPT-2 124M shape/count, options, dropout, remat, logical axis names."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from bmjax.models import GPT, GPTConfig, build_model, model_config
from bmjax.models.flops import count_params, param_counts

TINY = dict(name="gpt", vocab_size=97, d_model=32, num_layers=2, num_heads=4, max_len=16)


def _model(seed=0, **overrides):
    return build_model({**TINY, **overrides}, rngs=nnx.Rngs(seed))


def _ids(seed=0, shape=(2, 12), vocab=97):
    return jax.random.randint(jax.random.key(seed), shape, 0, vocab)


def test_future_tokens_change_no_earlier_logit():
    model = _model()
    ids = _ids()
    t = 7
    changed = ids.at[:, t].set((ids[:, t] + 1) % 97)
    a, b = model(ids), model(changed)
    np.testing.assert_allclose(a[:, :t], b[:, :t], atol=1e-6)
    assert not np.allclose(a[:, t], b[:, t], atol=1e-4)


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_packed_documents_do_not_see_each_other(position):
    """Two documents packed in one row (segment ids, positions restarting) give each one's own logits."""
    model = _model(position=position)
    doc_a, doc_b = _ids(1, (1, 5)), _ids(2, (1, 7))
    packed = jnp.concatenate([doc_a, doc_b], axis=1)
    segments = jnp.array([[1] * 5 + [2] * 7])
    positions = jnp.array([list(range(5)) + list(range(7))])
    out = model(packed, positions=positions, segment_ids=segments)
    np.testing.assert_allclose(out[:, :5], model(doc_a), atol=1e-5)
    np.testing.assert_allclose(out[:, 5:], model(doc_b), atol=1e-5)


def test_gpt2_124m_shape_and_parameter_count():
    cfg = GPTConfig()
    with nnx.use_eager_sharding(False):
        abstract = nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0)))
    assert count_params(abstract) == 124_439_808
    assert param_counts(cfg)["total"] == 124_439_808
    graphdef, state = nnx.split(abstract)
    out = jax.eval_shape(lambda st, ids: nnx.merge(graphdef, st)(ids), state,
                         jax.ShapeDtypeStruct((2, 1024), jnp.int32))
    assert out.shape == (2, 1024, 50257) and out.dtype == jnp.float32


OPTIONS = {
    "rmsnorm": dict(norm="rmsnorm"),
    "swiglu": dict(mlp="swiglu"),
    "rotary": dict(position="rotary"),
    "no_bias": dict(use_bias=False),
    "untied": dict(tie_embeddings=False),
    "gqa": dict(num_kv_heads=2),
    "mqa_d_ff": dict(num_kv_heads=1, d_ff=48),
    "llama_like": dict(norm="rmsnorm", mlp="swiglu", position="rotary", use_bias=False,
                       tie_embeddings=False, num_kv_heads=2),
    "bf16": dict(dtype="bfloat16"),
    "reference_attention": dict(attention="reference"),
}


@pytest.mark.parametrize("option", OPTIONS)
def test_options_build_run_and_count(option):
    overrides = OPTIONS[option]
    model = _model(**overrides)
    out = model(_ids())
    assert out.shape == (2, 12, 97) and out.dtype == jnp.float32
    assert np.isfinite(np.asarray(out)).all()
    assert count_params(model) == param_counts(GPTConfig.from_mapping({**TINY, **overrides}))["total"]


def test_options_change_the_parameters():
    def names(model):
        return {"/".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}

    base = names(_model())
    assert "wpe/embedding" in base and "lm_head/kernel" not in base
    assert "blocks/0/mlp/fc_in/kernel" in base and "blocks/1/ln_1/bias" in base
    llama = names(_model(**OPTIONS["llama_like"]))
    assert "wpe/embedding" not in llama and "lm_head/kernel" in llama
    assert {"blocks/0/mlp/gate/kernel", "blocks/0/mlp/up/kernel", "blocks/0/mlp/down/kernel"} <= llama
    assert not any(n.endswith("bias") for n in llama)
    assert _model(num_kv_heads=2).blocks[0].attn.key.kernel.shape == (32, 2, 8)


def test_reference_attention_gives_the_same_logits():
    ids = _ids()
    np.testing.assert_allclose(_model(attention="reference")(ids), _model()(ids), atol=1e-5)


def test_dropout_only_with_rngs():
    model = _model(dropout=0.3)
    ids = _ids()
    plain = model(ids)
    np.testing.assert_array_equal(model(ids), plain)  # no rngs: deterministic
    a = model(ids, rngs=nnx.Rngs(dropout=1))
    b = model(ids, rngs=nnx.Rngs(dropout=2))
    assert not np.allclose(a, plain, atol=1e-4)
    assert not np.allclose(a, b, atol=1e-4)
    np.testing.assert_array_equal(model(ids, rngs=nnx.Rngs(dropout=1)), a)


@pytest.mark.parametrize("remat", ["full", "dots_saveable"])
def test_remat_gives_the_same_loss_and_gradients(remat):
    ids = _ids()

    def loss(model):
        logits = model(ids[:, :-1])
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), ids[:, 1:, None], -1))

    base, rematted = _model(), _model(remat=remat)
    l0, g0 = nnx.value_and_grad(loss)(base)
    l1, g1 = nnx.value_and_grad(loss)(rematted)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g1, g0)


def _scanned_copy_of(plain, **overrides):
    """A scan_layers model holding the same weights as `plain` (its blocks stacked on a layer axis)."""
    scanned = _model(num_layers=len(plain.blocks), scan_layers=True, **overrides)
    # Copy values only (pure dicts), so the scanned model keeps its own axis-name metadata.
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs),
                           *[nnx.to_pure_dict(nnx.state(b)) for b in plain.blocks])
    for module, values in [(scanned.blocks, stacked)] + [
            (getattr(scanned, n), nnx.to_pure_dict(nnx.state(getattr(plain, n))))
            for n in ("wte", "wpe", "ln_f")]:
        state = nnx.state(module)
        nnx.replace_by_pure_dict(state, values)
        nnx.update(module, state)
    return scanned


def test_scan_layers_equals_a_python_loop():
    plain = _model(num_layers=3, dropout=0.2)
    scanned = _scanned_copy_of(plain, dropout=0.2, remat="full")  # remat inside the scan body too
    assert scanned.blocks.attn.query.kernel.shape == (3, 32, 4, 8)
    assert count_params(scanned) == count_params(plain)
    names = nnx.get_partition_spec(nnx.state(scanned))["blocks"]["mlp"]["fc_in"]["kernel"]
    assert tuple(names.get_value()) == (None, "embed", "mlp")
    ids = _ids()
    expected = plain(ids)
    np.testing.assert_allclose(scanned(ids), expected, atol=1e-5)
    with_dropout = scanned(ids, rngs=nnx.Rngs(dropout=0))
    assert not np.allclose(with_dropout, expected, atol=1e-4)
    np.testing.assert_array_equal(scanned(ids, rngs=nnx.Rngs(dropout=0)), with_dropout)


def test_scan_layers_draws_each_layer_separately():
    kernel = _model(num_layers=3, scan_layers=True).blocks.attn.query.kernel[...]
    assert not np.allclose(kernel[0], kernel[1])


def test_hidden_states_and_logits_from_hidden_compose_to_call():
    model = _model(tie_embeddings=False)
    ids = _ids()
    h = model.hidden_states(ids)
    assert h.shape == (2, 12, 32)
    np.testing.assert_allclose(model.logits_from_hidden(h), model(ids), atol=1e-6)


def test_gpt2_initialisation():
    """N(0, 0.02) everywhere, residual projections N(0, 0.02/sqrt(2*num_layers)), zero biases, unit norms."""
    model = _model(d_model=256, num_layers=8, num_heads=4, vocab_size=512)
    block = model.blocks[3]
    assert np.std(model.wte.embedding[...]) == pytest.approx(0.02, rel=0.05)
    assert np.std(block.attn.query.kernel[...]) == pytest.approx(0.02, rel=0.05)
    assert np.std(block.mlp.fc_in.kernel[...]) == pytest.approx(0.02, rel=0.05)
    assert np.std(block.attn.out.kernel[...]) == pytest.approx(0.02 / 4, rel=0.05)
    assert np.std(block.mlp.fc_out.kernel[...]) == pytest.approx(0.02 / 4, rel=0.05)
    np.testing.assert_array_equal(block.mlp.fc_in.bias[...], 0.0)
    np.testing.assert_array_equal(block.ln_1.scale[...], 1.0)


def test_logical_axis_names():
    specs = nnx.get_partition_spec(nnx.state(_model(mlp="gelu")))
    names = lambda v: tuple(v.get_value())  # noqa: E731
    assert names(specs["wte"]["embedding"]) == ("vocab", "embed")
    assert names(specs["wpe"]["embedding"]) == (None, "embed")
    attn = specs["blocks"][0]["attn"]
    assert names(attn["query"]["kernel"]) == ("embed", "heads", "head_dim")
    assert names(attn["key"]["kernel"]) == ("embed", "kv_heads", "head_dim")
    assert names(attn["out"]["kernel"]) == ("heads", "head_dim", "embed")
    assert names(attn["out"]["bias"]) == ("embed",)
    mlp = specs["blocks"][0]["mlp"]
    assert names(mlp["fc_in"]["kernel"]) == ("embed", "mlp")
    assert names(mlp["fc_in"]["bias"]) == ("mlp",)
    assert names(mlp["fc_out"]["kernel"]) == ("mlp", "embed")
    assert names(specs["ln_f"]["scale"]) == ("embed",)
    untied = nnx.get_partition_spec(nnx.state(_model(tie_embeddings=False)))
    assert names(untied["lm_head"]["kernel"]) == ("embed", "vocab")


def test_config_from_mapping_ignores_other_keys():
    cd = ml_collections.ConfigDict({**TINY, "type_vocab_size": 2, "num_kv_heads": None})
    cfg = GPTConfig.from_mapping(cd)
    assert (cfg.d_model, cfg.num_layers, cfg.kv_heads, cfg.max_len) == (32, 2, 4, 16)
    assert cfg.ff_dim == 128 and GPTConfig(d_model=768, mlp="swiglu").ff_dim == 2048
    assert cfg.dropout == 0.0 and cfg.tie_embeddings


def test_model_config_returns_the_dataclass():
    cfg = model_config(ml_collections.ConfigDict({**TINY, "scan_layers": True}))
    assert isinstance(cfg, GPTConfig) and cfg.scan_layers and cfg.vocab_size == 97


def test_build_model_rejects_unknown_name():
    with pytest.raises(ValueError, match="model.name"):
        build_model({**TINY, "name": "t5"}, rngs=nnx.Rngs(0))
