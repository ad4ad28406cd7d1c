"""μP (bmjax/models/mup.py) piece by piece, without training: the per-parameter learning rates by name against a
hand-written table, the decoupled weight decay at the base learning rate, the hidden init scale, the readout
multiplier, the attention logit scale through every attention implementation that runs on CPU, the standard
model at the base width exactly, and the Hugging Face export with the multipliers folded into the weights."""
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from ml_collections import config_dict

from bmjax.defaults import base_config
from bmjax.models import attention, build_model, mup
from bmjax.train import optim

REPO = pathlib.Path(__file__).resolve().parents[1]
BASE, WIDTH, HEADS = 32, 128, 4  # width multiplier m = 4: hidden learning rates x 1/4, init std x 1/2


def model_cfg(name="gpt", parametrization="mup", width=WIDTH, **extra):
    c = base_config().model
    c.update(dict(name=name, vocab_size=64, d_model=width, num_layers=1, num_heads=HEADS, max_len=16,
                  parametrization=parametrization, **extra))
    if parametrization == "mup":
        c.mup_base_width = BASE
    return c


def optim_cfg(weight_decay=0.0):
    c = base_config().optim
    c.update(dict(lr=0.01, schedule="constant", warmup_steps=0, weight_decay=weight_decay, grad_clip=0.0))
    return c


def flat(tree) -> dict:
    """{"blocks.0.attn.query.kernel": array, ...}"""
    def name(path):
        keys = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
        return ".".join(keys[:-1] if keys[-1] == "value" else keys)  # a Param's own .value, not attn.value
    return {name(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


# Hand-written: every parameter of each model and its learning-rate factor at m = 4 (Tensor Programs V, Table 3).
HIDDEN = 1 / 4
GPT_TABLE = {
    "wte.embedding": 1, "wpe.embedding": 1, "ln_f.scale": 1, "ln_f.bias": 1,
    "blocks.0.ln_1.scale": 1, "blocks.0.ln_1.bias": 1, "blocks.0.ln_2.scale": 1, "blocks.0.ln_2.bias": 1,
    "blocks.0.attn.query.kernel": HIDDEN, "blocks.0.attn.key.kernel": HIDDEN, "blocks.0.attn.value.kernel": HIDDEN,
    "blocks.0.attn.out.kernel": HIDDEN, "blocks.0.attn.query.bias": 1, "blocks.0.attn.key.bias": 1,
    "blocks.0.attn.value.bias": 1, "blocks.0.attn.out.bias": 1,
    "blocks.0.mlp.fc_in.kernel": HIDDEN, "blocks.0.mlp.fc_out.kernel": HIDDEN, "blocks.0.mlp.fc_in.bias": 1,
    "blocks.0.mlp.fc_out.bias": 1,
}
UNTIED_GPT_TABLE = {**GPT_TABLE, "lm_head.kernel": 1}
BERT_TABLE = {
    "wte.embedding": 1, "wpe.embedding": 1, "token_types.embedding": 1, "ln_embed.scale": 1, "ln_embed.bias": 1,
    "blocks.0.attn.query.kernel": HIDDEN, "blocks.0.attn.key.kernel": HIDDEN, "blocks.0.attn.value.kernel": HIDDEN,
    "blocks.0.attn.out.kernel": HIDDEN, "blocks.0.attn.query.bias": 1, "blocks.0.attn.key.bias": 1,
    "blocks.0.attn.value.bias": 1, "blocks.0.attn.out.bias": 1, "blocks.0.ln_attn.scale": 1,
    "blocks.0.ln_attn.bias": 1, "blocks.0.mlp.fc_in.kernel": HIDDEN, "blocks.0.mlp.fc_out.kernel": HIDDEN,
    "blocks.0.mlp.fc_in.bias": 1, "blocks.0.mlp.fc_out.bias": 1, "blocks.0.ln_mlp.scale": 1,
    "blocks.0.ln_mlp.bias": 1, "pooler.kernel": HIDDEN, "pooler.bias": 1, "mlm.dense.kernel": HIDDEN,
    "mlm.dense.bias": 1, "mlm.ln.scale": 1, "mlm.ln.bias": 1, "mlm.bias": 1, "nsp.kernel": 1, "nsp.bias": 1,
}


def first_update(model_c, grads_like="ones", weight_decay=0.0):
    """The first AdamW update of every parameter, as a multiple of -lr (gradients all ones: Adam's direction is
    1/(1 + eps) in every coordinate, so the ratio is the parameter's learning-rate factor)."""
    params = nnx.state(build_model(model_c, rngs=nnx.Rngs(0)), nnx.Param)
    tx, _ = optim.make_optimizer(optim_cfg(weight_decay), 10, model_c)
    grads = jax.tree.map(jnp.ones_like if grads_like == "ones" else jnp.zeros_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    return flat(params), {k: v / -0.01 for k, v in flat(updates).items()}


@pytest.mark.parametrize("name,extra,table", [("gpt", {}, GPT_TABLE),
                                               ("gpt", {"tie_embeddings": False}, UNTIED_GPT_TABLE),
                                               ("bert", {"heads": "pretraining"}, BERT_TABLE)],
                         ids=["gpt-tied", "gpt-untied", "bert"])
def test_learning_rate_factors_by_name_match_the_table(name, extra, table):
    _, factors = first_update(model_cfg(name, **extra))
    assert set(factors) == set(table)
    got = {k: float(np.mean(v)) for k, v in factors.items()}
    for key, want in table.items():
        np.testing.assert_allclose(got[key], want, rtol=1e-6, err_msg=key)  # 1/(1+1e-8): float32 exact
        assert np.ptp(factors[key]) <= 1e-6 * want, key  # the same factor for every coordinate


def test_standard_learning_rates_are_all_one():
    _, factors = first_update(model_cfg("gpt", parametrization="standard"))
    assert all(np.allclose(v, 1.0, rtol=1e-6) for v in factors.values())


def test_weight_decay_shrinks_by_the_base_learning_rate_at_every_width():
    """With zero gradients the update is the decay alone, -lr * wd * theta, for hidden weights too (μP's 1/m acts
    on Adam's direction, not on the decay); a decay coupled to lr/m would move them 4x less."""
    params, factors = first_update(model_cfg("gpt"), grads_like="zeros", weight_decay=0.1)
    for key in ("blocks.0.attn.query.kernel", "blocks.0.mlp.fc_out.kernel"):
        np.testing.assert_allclose(factors[key], 0.1 * params[key], rtol=1e-6, atol=1e-12)
    assert not factors["wte.embedding"].any() and not factors["ln_f.scale"].any()  # not decayed (decay_mask)


def test_hidden_init_std_shrinks_like_one_over_sqrt_width():
    """Hidden kernels: std init_std * sqrt(B/n) (GPT-2's residual projections / sqrt(2 L) as well); embeddings keep
    init_std. 128 x 512 draws: the sample std is within ~3% of the true one (4 sigma)."""
    p = flat(nnx.state(build_model(model_cfg("gpt"), rngs=nnx.Rngs(0)), nnx.Param))
    half = 0.02 * math.sqrt(BASE / WIDTH)
    np.testing.assert_allclose(p["blocks.0.mlp.fc_in.kernel"].std(), half, rtol=0.03)
    np.testing.assert_allclose(p["blocks.0.mlp.fc_out.kernel"].std(), half / math.sqrt(2), rtol=0.03)
    np.testing.assert_allclose(p["blocks.0.attn.query.kernel"].std(), half, rtol=0.05)
    np.testing.assert_allclose(p["wte.embedding"].std(), 0.02, rtol=0.05)


@pytest.mark.parametrize("name", ["gpt", "bert"])
def test_mup_at_the_base_width_is_the_standard_model_exactly(name):
    extra = {"heads": "pretraining"} if name == "bert" else {}
    standard = build_model(model_cfg(name, "standard", width=BASE, **extra), rngs=nnx.Rngs(3))
    at_base = build_model(model_cfg(name, "mup", width=BASE, **extra), rngs=nnx.Rngs(3))
    a, b = flat(nnx.state(standard, nnx.Param)), flat(nnx.state(at_base, nnx.Param))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    ids = jnp.arange(32).reshape(2, 16) % 64
    out_a, out_b = standard(ids), at_base(ids)
    for x, y in zip(jax.tree.leaves(out_a), jax.tree.leaves(out_b)):
        assert np.array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("output_mult", [1.0, 2.5])
def test_readout_multiplier_scales_the_logits_input(output_mult):
    """GPT's logits are the standard readout of mup_output_mult * base/width times the final hidden states."""
    model = build_model(model_cfg("gpt", mup_output_mult=output_mult), rngs=nnx.Rngs(0))
    h = jax.random.normal(jax.random.key(1), (2, 3, WIDTH))
    want = jnp.einsum("bld,vd->blv", h * (output_mult * BASE / WIDTH), model.wte.embedding[...])
    np.testing.assert_allclose(model.logits_from_hidden(h), want, rtol=1e-5, atol=1e-7)


REFERENCE = json.loads((REPO / "experiments" / "mup" / "mup_reference.json").read_text())


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_the_table_matches_the_mup_package(tie):
    """Parameter by parameter, bmjax's μP against what experiments/mup/mup_reference.py read off Microsoft's `mup`
    package (MuSharedReadout / MuReadout, mup.init.normal_, MuAdamW) for the same GPT at m = 4: the learning-rate
    factor, the per-step decay shrink lr * weight_decay of the decayed kernels (the package scales a hidden
    group's decay by m against its lr / m), the init std (sampled: within 5%) and the readout multiplier."""
    ref = REFERENCE["tied" if tie else "untied"]
    c = model_cfg("gpt", width=REFERENCE["width"], tie_embeddings=tie)
    c.vocab_size, c.max_len, c.mup_base_width = 320, 32, REFERENCE["base_width"]
    params, factors = first_update(c)
    _, decay = first_update(c, grads_like="zeros", weight_decay=0.1)
    assert set(factors) == set(ref["params"])
    for name, row in ref["params"].items():
        np.testing.assert_allclose(factors[name].mean(), row["lr_factor"], rtol=1e-6, err_msg=name)
        if name.endswith(".kernel"):  # bmjax decays kernels only (optim.decay_mask); the package what it is given
            shrink = decay[name] / (0.1 * params[name])
            np.testing.assert_allclose(shrink, row["decay_shrink_factor"], rtol=1e-4, err_msg=name)
        if row["init_std"] is not None:
            np.testing.assert_allclose(params[name].std(), row["init_std"], rtol=0.05, err_msg=name)
    assert mup.readout_multiplier(c) == pytest.approx(ref["readout_multiplier"])


def test_attention_scale_is_one_over_head_dim_equal_at_the_base_head_size():
    c = model_cfg("gpt")
    head, base_head = WIDTH // HEADS, BASE // HEADS
    assert mup.attention_scale(c) == pytest.approx(math.sqrt(base_head) / head)
    assert mup.attention_scale(c) * head == pytest.approx(math.sqrt(base_head))  # ∝ 1/d_head
    assert mup.attention_scale(model_cfg("gpt", width=BASE)) is None  # the implementations' own 1/sqrt(d)
    assert mup.attention_scale(model_cfg("gpt", "standard")) is None


def _hand_attention(q, k, v, scale):
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
    causal = jnp.tril(jnp.ones((q.shape[1], k.shape[1]), bool))
    probs = jax.nn.softmax(jnp.where(causal, logits, -jnp.inf), axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


@pytest.mark.parametrize("implementation", ["reference", "xla", "ring", "splash"])
def test_every_cpu_attention_implementation_takes_the_scale(implementation):
    """Splash runs in Pallas interpret mode off a TPU; cudnn needs a GPU (it is jax.nn.dot_product_attention's
    scale argument, as xla)."""
    q, k, v = (jax.random.normal(jax.random.key(i), (1, 128, 2, 16)) for i in range(3))
    scale = 0.37  # far from 1/sqrt(16) = 0.25
    got = attention.attend(q, k, v, causal=True, implementation=implementation, scale=scale)
    np.testing.assert_allclose(got, _hand_attention(q, k, v, scale), rtol=1e-5, atol=1e-5)
    default = attention.attend(q, k, v, causal=True, implementation=implementation)
    np.testing.assert_allclose(default, _hand_attention(q, k, v, 0.25), rtol=1e-5, atol=1e-5)


def test_decoding_with_a_cache_uses_the_scale():
    """The cached (decoding) path scores the same logits as the full forward under μP off the base width."""
    model = build_model(model_cfg("gpt"), rngs=nnx.Rngs(0))
    # Bigger queries/keys than at init, so a wrong scale shows in the logits.
    for block in model.blocks:
        block.attn.query.kernel[...] = block.attn.query.kernel[...] * 20
    ids = jnp.arange(8)[None] % 64
    full = model(ids)
    cache = model.init_cache(1, 8)
    step_logits, cache = model(ids[:, :5], cache=cache)
    last, _ = model(ids[:, 5:], cache=cache)
    np.testing.assert_allclose(jnp.concatenate([step_logits, last], axis=1), full, rtol=1e-4, atol=1e-5)


torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _perturb(model, seed=0):
    """Noise on every parameter (no norm scale 1, no bias 0), scaled up so the attention scale matters."""
    state = nnx.state(model, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(seed), len(jax.tree.leaves(state))))
    nnx.update(model, jax.tree.map(lambda x: x + 0.3 * jax.random.normal(next(keys), x.shape), state))
    return model


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_gpt_export_folds_the_multipliers_transformers_gives_the_same_logits(tie, tmp_path):
    from bmjax.models import hf

    model = _perturb(build_model(model_cfg("gpt", tie_embeddings=tie, mup_output_mult=2.5), rngs=nnx.Rngs(0)))
    ids = np.arange(24).reshape(2, 12) % 64
    want = np.asarray(model(jnp.asarray(ids)))
    hf.save_pretrained(model, tmp_path)
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        got = back(torch.tensor(ids)).logits.numpy()
    # float32 through two layers of different op orders: ~1e-6 relative per op, logits of size ~10.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert hf.from_pretrained(tmp_path).cfg.parametrization == "standard"


def test_bert_export_folds_the_multipliers_transformers_gives_the_same_outputs(tmp_path):
    from bmjax.models import hf

    c = model_cfg("bert", heads="pretraining", dropout=0.0, mup_output_mult=2.5)
    model = _perturb(build_model(c, rngs=nnx.Rngs(0)))
    ids = np.arange(24).reshape(2, 12) % 64
    out = model(jnp.asarray(ids))
    hf.save_pretrained(model, tmp_path)
    back = transformers.BertForPreTraining.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        o = back(torch.tensor(ids))
    for got, want in ((o.prediction_logits.numpy(), out.mlm_logits), (o.seq_relationship_logits.numpy(),
                                                                         out.nsp_logits)):
        want = np.asarray(want)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_the_export_would_differ_without_the_folding(tmp_path):
    """The μP model and the same weights read as a standard model differ: the folding test can fail."""
    model = _perturb(build_model(model_cfg("gpt"), rngs=nnx.Rngs(0)))
    standard = build_model(model_cfg("gpt", "standard"), rngs=nnx.Rngs(1))
    nnx.update(standard, nnx.state(model, nnx.Param))
    ids = jnp.arange(24).reshape(2, 12) % 64
    assert np.abs(np.asarray(standard(ids)) - np.asarray(model(ids))).max() > 0.1 * np.abs(np.asarray(model(ids))).max()


def test_config_dict_and_dataclass_agree():
    """The μP helpers read a model ConfigDict (the optimizer's) and the model's dataclass alike."""
    from bmjax.models import model_config

    c = model_cfg("gpt")
    assert isinstance(c, config_dict.ConfigDict)
    for fn in (mup.width_mult, mup.hidden_init_std, mup.readout_multiplier, mup.attention_scale):
        assert fn(c) == fn(model_config(c))


def test_sweeps_set_mup_with_one_base_learning_rate():
    """configs/sweeps/mup_sweep.py runs the wrapped sweep's runs under μP with the one base rate in place of the
    per-size rates (chinchilla_isoflop sets one per size); mup_base_lr.py sweeps the rate at the base width."""
    from bmjax.scaling import sweep

    wrapped = sweep.load_sweep("configs/sweeps/chinchilla_isoflop.py:runlocal")
    arg = "sweep=chinchilla_isoflop,base_width=32,lr=0.02,runlocal"
    wrapper = sweep.load_module("configs/sweeps/mup_sweep.py")
    c = wrapper.get_config(arg)
    assert (c.model.parametrization, c.model.mup_base_width, c.optim.lr) == ("mup", 32, 0.02)
    assert c.model.mup_output_mult == 1.0 and wrapper.get_config(arg + ",output_mult=4").model.mup_output_mult == 4.0
    runs = sweep.load_sweep(f"configs/sweeps/mup_sweep.py:{arg}").runs
    assert len(runs) == len(wrapped.runs)
    assert {r.args["optim.lr"] for r in runs} == {0.02} != {r.args["optim.lr"] for r in wrapped.runs}
    assert {r.args["optim.min_lr"] for r in runs} == {0.002}  # the wrapped runs' min_lr = lr / 10

    base = sweep.load_module("configs/sweeps/mup_base_lr.py")
    c = base.get_config("base_width=32")
    assert (c.model.parametrization, c.model.mup_base_width, c.model.d_model) == ("mup", 32, 32)
    lrs = [r.args["optim.lr"] for r in sweep.load_sweep("configs/sweeps/mup_base_lr.py:base_width=32").runs]
    assert lrs == sorted(lrs) and len(lrs) == 7
    grid = sweep.load_sweep("configs/sweeps/mup_base_lr.py:base_width=32,output_mult_grid").runs
    pairs = {(r.args["model.mup_output_mult"], r.args["optim.lr"]) for r in grid}
    assert len(grid) == len(pairs) == 35 and {m for m, _ in pairs} == set(base.OUTPUT_MULTS)
