"""Parameter counts and training FLOPs against published numbers and counted parameters."""
import pytest
from flax import nnx

from bmjax.models import GPT, GPTConfig
from bmjax.models.flops import count_params, param_counts, train_flops_per_token


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
