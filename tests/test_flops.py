"""Parameter counts and training FLOPs against published numbers and counted parameters."""
import pytest
from flax import nnx

from bmjax import data as data_lib
from bmjax.models import GPT, GPTConfig
from bmjax.models.flops import count_params, param_counts, train_flops_per_token
from helpers.configs import load_config


def test_gpt2_124m_counts():
    counts = param_counts(GPTConfig())
    assert counts["total"] == 124_439_808
    # Kaplan's non-embedding count: minus 50257*768 token and 1024*768 position embeddings.
    assert counts["non_embedding"] == 124_439_808 - 50257 * 768 - 1024 * 768 == 85_056_000


def test_train_flops_match_nanogpt_estimate():
    """nanoGPT's estimate_mfu: 6N + 12*L*H*Q*T, N = parameters minus position embeddings (tied wte kept)."""
    n_nanogpt = 124_439_808 - 1024 * 768
    expected = 6 * n_nanogpt + 12 * 12 * 12 * 64 * 1024
    assert train_flops_per_token(GPTConfig(), 1024) == pytest.approx(expected, rel=1e-12)


def test_untied_output_matrix_is_counted_once_in_flops():
    tied, untied = GPTConfig(), GPTConfig(tie_embeddings=False)
    assert param_counts(untied)["total"] - param_counts(tied)["total"] == 768 * 50257
    assert param_counts(untied)["non_embedding"] == param_counts(tied)["non_embedding"]
    assert train_flops_per_token(untied, 1024) == train_flops_per_token(tied, 1024)


def test_attention_term_grows_with_sequence_length():
    cfg = GPTConfig()
    assert train_flops_per_token(cfg, 2048) - train_flops_per_token(cfg, 1024) == 12 * 12 * 768 * 1024


@pytest.mark.parametrize("overrides", [
    dict(),
    dict(norm="rmsnorm", mlp="swiglu", position="rotary", use_bias=False, tie_embeddings=False),
    dict(num_kv_heads=4, d_ff=1000),
    dict(mlp="swiglu", num_kv_heads=1),
])
def test_analytic_count_equals_counted_parameters(overrides):
    cfg = GPTConfig(vocab_size=1000, d_model=192, num_layers=3, num_heads=12, max_len=64, **overrides)
    with nnx.use_eager_sharding(False):
        model = nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0)))
    assert count_params(model) == param_counts(cfg)["total"]


# Every shipped model config with the arguments that change its shape. finetune.py's data file is only named.
SHIPPED_CONFIGS = [
    ("configs/gpt/tiny.py", ""), ("configs/gpt/tiny.py", "runlocal"),
    ("configs/gpt/shakespeare_char.py", ""),
    *[("configs/gpt/gpt2.py", f"size={size}") for size in ("124m", "350m", "774m", "1.5b")],
    ("configs/gpt/gpt2.py", "runlocal"),
    ("configs/bert/base.py", ""), ("configs/bert/base.py", "runlocal"),
    ("configs/bert/tiny.py", ""),
    ("configs/bert/finetune.py", "data=x.csv,labels=2"), ("configs/bert/finetune.py", "data=x.csv,labels=5,model=tiny"),
]


def built_parameters(model_cfg) -> dict[str, int]:
    """{parameter path: scalars} of the model as bmjax builds it (abstractly: nothing is allocated)."""
    import math

    from bmjax.models import build_model

    model = nnx.eval_shape(lambda: build_model(model_cfg, rngs=nnx.Rngs(0)))
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {"/".join(map(str, path)): math.prod(v.get_value().shape) for path, v in flat}


# Kaplan's embedding parameters: vocabulary and position tables (and BERT's token types and MLM output bias).
EMBEDDING_PARAMETERS = ("wte/", "wpe/", "token_types/", "lm_head/", "mlm/bias")


@pytest.mark.parametrize("relpath,arg", SHIPPED_CONFIGS)
def test_param_counts_equal_the_built_model_of_every_shipped_config(relpath, arg):
    from bmjax.models import model_config

    config = data_lib.with_model_vocab_size(load_config(relpath, arg))  # an unset vocabulary: the tokenizer's
    built = built_parameters(config.model)
    counts = param_counts(model_config(config.model))
    assert counts["total"] == sum(built.values())
    embedding = sum(n for path, n in built.items() if path.startswith(EMBEDDING_PARAMETERS))
    assert counts["non_embedding"] == sum(built.values()) - embedding


def test_bert_base_counts_equal_transformers_bert_for_pretraining():
    """bert-base-uncased as BertForPreTraining: 110,106,428 parameters (transformers' num_parameters())."""
    transformers = pytest.importorskip("transformers")
    from bmjax.models import model_config

    cfg = model_config(load_config("configs/bert/base.py", "").model)
    hf_config = transformers.BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
                                        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                                        intermediate_size=cfg.ff_dim, max_position_embeddings=cfg.max_len,
                                        type_vocab_size=cfg.type_vocab_size)
    import torch

    with torch.device("meta"):
        hf = transformers.BertForPreTraining(hf_config)
    assert hf.num_parameters() == param_counts(cfg)["total"] == 110_106_428


@pytest.mark.parametrize("heads,hf_class", [("none", "BertModel"), ("mlm", "BertForMaskedLM"),
                                            ("classification", "BertForSequenceClassification")])
def test_bert_head_counts_equal_transformers(heads, hf_class):
    transformers = pytest.importorskip("transformers")
    import torch

    from bmjax.models import BertConfig

    cfg = BertConfig(vocab_size=320, d_model=128, num_layers=2, num_heads=4, d_ff=512, max_len=128, heads=heads,
                     num_labels=3 if heads == "classification" else 0)
    hf_config = transformers.BertConfig(vocab_size=320, hidden_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=512, max_position_embeddings=128,
                                        num_labels=3)
    with torch.device("meta"):
        hf = getattr(transformers, hf_class)(hf_config)
    assert hf.num_parameters() == param_counts(cfg)["total"]


def test_gpt2_counts_equal_transformers_gpt2_lm_head_model():
    transformers = pytest.importorskip("transformers")
    import torch

    with torch.device("meta"):
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    assert hf.num_parameters() == param_counts(GPTConfig())["total"]


def test_bert_flops_per_token_count_every_head_where_it_runs():
    """BERT pretraining by hand: the encoder on every token, the MLM transform and the decoder (+ bias) on the
    scored fraction, the pooler and NSP head once per sequence."""
    from bmjax.models import BertConfig

    d, f, v, layers, seq = 64, 256, 100, 2, 32
    cfg = BertConfig(vocab_size=v, d_model=d, num_layers=layers, num_heads=4, d_ff=f, max_len=seq)
    layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d
    encoder = layers * layer + 2 * d  # + the embedding LayerNorm
    mlm = (d * d + d) + 2 * d + d * v + v  # transform dense + LayerNorm, decoder matrix (tied) + bias
    per_sequence = (d * d + d) + (d * 2 + 2)  # pooler, NSP
    attention = 12 * layers * d * seq
    fraction = 5 / seq
    expected = 6 * (encoder + fraction * mlm + per_sequence / seq) + attention
    assert train_flops_per_token(cfg, seq, fraction) == pytest.approx(expected, rel=1e-12)
    classifier = BertConfig(vocab_size=v, d_model=d, num_layers=layers, num_heads=4, d_ff=f, max_len=seq,
                            heads="classification", num_labels=3)
    expected = 6 * (encoder + ((d * d + d) + (d * 3 + 3)) / seq) + attention
    assert train_flops_per_token(classifier, seq, 0.0) == pytest.approx(expected, rel=1e-12)
