"""Hugging Face parity: tiny random transformers models (every weight perturbed, so no bias is 0
and no LayerNorm 1) load into bmjax with the same outputs, padding included, and bmjax writes
them back so that transformers loads the same model again."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from bmjax.errors import ConfigError  # noqa: E402
from bmjax.models import hf  # noqa: E402
from bmjax.models.bert import Bert, BertConfig  # noqa: E402
from bmjax.models.gpt import GPT, GPTConfig  # noqa: E402

TOL = 1e-4
BERT_CLASSES = ["BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification"]


def _perturbed(model, seed):
    """Add noise to every weight, so a bias, a LayerNorm or a head that is not loaded shows up."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _hf_bert(cls_name, seed=0):
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=64, num_labels=3)
    torch.manual_seed(seed)
    return _perturbed(getattr(transformers, cls_name)(cfg), seed)


def _hf_gpt2(tie=True, seed=0):
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=99, n_positions=64,
                                  tie_word_embeddings=tie, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(seed)
    return _perturbed(transformers.GPT2LMHeadModel(cfg), seed)


def _batch(seed=1, batch=3, length=12):
    """ids, token types (segment A then B) and an attention mask with right padding in rows 1, 2."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 99, (batch, length))
    types = (np.arange(length)[None, :] >= rng.integers(3, 8, (batch, 1))).astype(np.int64)
    mask = np.ones((batch, length), np.int64)
    mask[1, 9:] = 0
    mask[2, 5:] = 0
    return ids, types, mask


def _hf_outputs(model, ids, types, mask) -> dict:
    """The outputs bmjax's BertOutput names, from a transformers BERT (or GPT-2 logits)."""
    t = {k: torch.tensor(v) for k, v in dict(input_ids=ids, attention_mask=mask).items()}
    if isinstance(model, transformers.GPT2LMHeadModel):
        with torch.no_grad():
            return {"logits": model(**t).logits.numpy()}
    with torch.no_grad():
        o = model(**t, token_type_ids=torch.tensor(types), output_hidden_states=True)
        out = {"hidden_states": o.hidden_states[-1].numpy()}
        if isinstance(model, transformers.BertModel):
            out["pooled"] = o.pooler_output.numpy()
        elif isinstance(model, transformers.BertForPreTraining):
            out["mlm_logits"], out["nsp_logits"] = o.prediction_logits.numpy(), o.seq_relationship_logits.numpy()
        elif isinstance(model, transformers.BertForMaskedLM):
            out["mlm_logits"] = o.logits.numpy()
        else:
            out["logits"] = o.logits.numpy()
            base = model.bert(**t, token_type_ids=torch.tensor(types))
            out["pooled"] = base.pooler_output.numpy()
    return out


@nnx.jit
def _run(model, ids, types, mask):
    """One compiled forward (eager op-by-op calls are slow on CPU). GPT takes ids only:
    causal attention keeps right padding out of every real position."""
    if isinstance(model, GPT):
        return {"logits": model(ids)}
    return {k: v for k, v in vars(model(ids, types, mask)).items() if v is not None}


def _bmjax_outputs(model, ids, types, mask) -> dict:
    out = _run(model, jnp.asarray(ids), jnp.asarray(types), jnp.asarray(mask))
    return {k: np.asarray(v) for k, v in out.items()}


def _assert_close(got: dict, want: dict, mask):
    """Per-token outputs compared at real (unpadded) positions; per-sequence outputs in full."""
    for key in want:
        assert key in got, f"bmjax has no {key}"
        g, w = got[key], want[key]
        assert g.shape == w.shape, (key, g.shape, w.shape)
        if g.ndim == 3:
            g, w = g[mask.astype(bool)], w[mask.astype(bool)]
        err = float(np.max(np.abs(g - w)))
        assert err <= TOL, f"{key}: max abs difference {err:.2e}"


@pytest.fixture(scope="module")
def batch():
    return _batch()


@pytest.fixture(scope="module", params=BERT_CLASSES)
def bert_dir(request, tmp_path_factory):
    model = _hf_bert(request.param)
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    return request.param, model, path


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_gpt2_logits_match_both_ways(tie, batch, tmp_path):
    ids, types, mask = batch
    ref = _hf_gpt2(tie)
    ref.save_pretrained(tmp_path / "hf")
    want = _hf_outputs(ref, ids, types, mask)

    model = hf.from_pretrained(tmp_path / "hf")
    assert isinstance(model, GPT) and model.cfg.tie_embeddings is tie
    _assert_close(_bmjax_outputs(model, ids, types, mask), want, mask)

    hf.save_pretrained(model, tmp_path / "back")
    back, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    _assert_close(_hf_outputs(back.eval(), ids, types, mask), want, mask)


def test_bert_outputs_match_transformers(bert_dir, batch):
    cls_name, ref, path = bert_dir
    ids, types, mask = batch
    model = hf.from_pretrained(path)
    assert isinstance(model, Bert) and model.cfg.heads == hf.BERT_ARCHITECTURES[cls_name]
    got, want = _bmjax_outputs(model, ids, types, mask), _hf_outputs(ref, ids, types, mask)
    _assert_close(got, want, mask)
    # Exactly the outputs of the Hugging Face class exist (BertForMaskedLM has no pooler).
    assert set(got) == set(want) | ({"pooled"} if cls_name == "BertForPreTraining" else set())


def test_bert_save_pretrained_loads_in_transformers(bert_dir, batch, tmp_path):
    cls_name, ref, path = bert_dir
    ids, types, mask = batch
    hf.save_pretrained(hf.from_pretrained(path), tmp_path)
    back, info = getattr(transformers, cls_name).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    _assert_close(_hf_outputs(back.eval(), ids, types, mask), _hf_outputs(ref, ids, types, mask), mask)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [cls_name]


def test_classification_head_on_a_pretraining_checkpoint(batch, tmp_path):
    """Fine-tuning start: the encoder and pooler load, a new classifier starts fresh."""
    ids, types, mask = batch
    ref = _hf_bert("BertForPreTraining")
    ref.save_pretrained(tmp_path)
    model = hf.from_pretrained(tmp_path, heads="classification", num_labels=3)
    got = _bmjax_outputs(model, ids, types, mask)
    assert got["logits"].shape == (3, 3) and "mlm_logits" not in got
    t = dict(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types), attention_mask=torch.tensor(mask))
    with torch.no_grad():
        base = ref.bert(**t)
    _assert_close({"pooled": got["pooled"], "hidden_states": got["hidden_states"]},
                  {"pooled": base.pooler_output.numpy(), "hidden_states": base.last_hidden_state.numpy()},
                  mask)
    with pytest.raises(ConfigError, match="num_labels"):
        hf.from_pretrained(tmp_path, heads="classification")


def test_scan_layers_loads_and_saves_the_same_model(batch, tmp_path):
    """With scan_layers the blocks are stacked on load and come apart again on save."""
    ids, types, mask = batch
    ref = _hf_bert("BertForPreTraining", seed=2)
    ref.save_pretrained(tmp_path / "hf")
    model = hf.from_pretrained(tmp_path / "hf", scan_layers=True)
    assert model.cfg.scan_layers and model.blocks.attn.query.kernel.shape == (2, 32, 4, 8)
    want = _hf_outputs(ref, ids, types, mask)
    _assert_close(_bmjax_outputs(model, ids, types, mask), want, mask)
    hf.save_pretrained(model, tmp_path / "back")
    back = transformers.BertForPreTraining.from_pretrained(tmp_path / "back").eval()
    _assert_close(_hf_outputs(back, ids, types, mask), want, mask)


def test_config_from_hf_gives_bmjax_model_keys(bert_dir):
    cls_name, ref, path = bert_dir
    keys = hf.config_from_hf(path)
    assert keys["name"] == "bert" and keys["d_model"] == 32 and keys["num_layers"] == 2
    assert keys["heads"] == hf.BERT_ARCHITECTURES[cls_name]
    assert keys["num_labels"] == (3 if cls_name == "BertForSequenceClassification" else 0)
    assert BertConfig.from_mapping(keys) == hf.from_pretrained(path).cfg


def test_bad_directories_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such directory"):
        hf.from_pretrained(tmp_path / "absent")
    with pytest.raises(ConfigError, match="no config.json"):
        hf.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["RobertaModel"], "model_type": "roberta"}))
    with pytest.raises(ConfigError, match="unsupported architecture 'RobertaModel'"):
        hf.from_pretrained(tmp_path)
    _hf_bert("BertModel").save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    with pytest.raises(ConfigError, match="no model.safetensors"):
        hf.from_pretrained(tmp_path)
    (tmp_path / "elsewhere.safetensors").rename(tmp_path / "model.safetensors")
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden_act": "relu"}))
    with pytest.raises(ConfigError, match="hidden_act='relu' is not supported"):
        hf.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="d_model: cannot be changed"):
        hf.from_pretrained(tmp_path, d_model=64)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "vocab_size": 100}))
    with pytest.raises(ConfigError, match="word_embeddings.weight: shape \\(99, 32\\) does not match"):
        hf.from_pretrained(tmp_path)


@pytest.mark.parametrize("settings", [
    dict(use_bias=False),  # the shakespeare and tiny configs' setting: a GPT-2 whose biases are zero
    dict(num_kv_heads=2, use_bias=False, tie_embeddings=False),  # each kv head repeated for its query heads
    dict(num_kv_heads=1, d_ff=48, scan_layers=True),
], ids=["no_bias", "gqa_untied", "mqa_dff_scanned"])
def test_gpt_settings_with_a_gpt2_equivalent_export_with_equal_logits(settings, batch, tmp_path):
    ids, types, mask = batch
    cfg = GPTConfig(vocab_size=99, d_model=32, num_layers=2, num_heads=4, max_len=64, init_std=0.2, **settings)
    with nnx.use_eager_sharding(False):
        model = GPT(cfg, rngs=nnx.Rngs(3))
    hf.save_pretrained(model, tmp_path)
    back, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    want = _bmjax_outputs(model, ids, types, mask)
    assert float(np.std(want["logits"])) > 0.1  # logits far from zero: a wrong head grouping would show
    _assert_close(_hf_outputs(back.eval(), ids, types, mask), want, mask)


@pytest.mark.parametrize("setting", [dict(norm="rmsnorm"), dict(mlp="swiglu"), dict(position="rotary")])
def test_gpt_without_a_gpt2_equivalent_is_refused(setting, tmp_path):
    cfg = GPTConfig(vocab_size=50, d_model=16, num_layers=1, num_heads=2, max_len=16, **setting)
    with nnx.use_eager_sharding(False):
        model = nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0)))
    (key, value), = setting.items()
    with pytest.raises(ConfigError, match=f"model.{key}: {value!r} has no GPT2LMHeadModel equivalent"):
        hf.save_pretrained(model, tmp_path)
