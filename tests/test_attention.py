"""Attention: every implementation equals the einsum reference; masks, GQA, rotary, dropout."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bmjax.models import attention
from bmjax.models.attention import Attention, attend, attention_reference, make_mask

B, L, H, K, D = 2, 12, 4, 2, 8  # grouped-query: 4 query heads share 2 kv heads

IMPLS = [
    "xla",
    pytest.param("cudnn", marks=pytest.mark.skipif(jax.default_backend() != "gpu",
                                                   reason="cuDNN attention needs a GPU")),
]


def _qkv(seed=0, heads=H, kv_heads=K, q_len=L, kv_len=L):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(kq, (B, q_len, heads, D))
    k = jax.random.normal(kk, (B, kv_len, kv_heads, D))
    v = jax.random.normal(kv, (B, kv_len, kv_heads, D))
    return q, k, v


# Two packed documents per row, then right padding (padding tokens get segment 0).
SEGMENTS = jnp.array([[1] * 5 + [2] * 5 + [0] * 2,
                      [1] * 3 + [2] * 9])
PADDING = SEGMENTS > 0


def _visible_rows(causal, segment_ids, padding_mask):
    """[B, L] True for query rows that see at least one key (the rows every implementation defines)."""
    mask = make_mask(L, L, causal=causal, segment_ids=segment_ids, padding_mask=padding_mask)
    if mask is None:
        return np.ones((B, L), bool)
    return np.asarray(jnp.broadcast_to(mask, (B, 1, L, L)).any(-1)[:, 0])


@pytest.mark.parametrize("implementation", IMPLS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masks", ["none", "segments", "padding", "both"])
@pytest.mark.parametrize("kv_heads", [K, H])
def test_implementation_matches_reference(implementation, causal, masks, kv_heads):
    q, k, v = _qkv(kv_heads=kv_heads)
    seg = SEGMENTS if masks in ("segments", "both") else None
    pad = PADDING if masks in ("padding", "both") else None
    ref = attention_reference(q, k, v, causal=causal, segment_ids=seg, padding_mask=pad)
    out = attend(q, k, v, causal=causal, segment_ids=seg, padding_mask=pad,
                 implementation=implementation)
    assert out.shape == (B, L, H, D) and out.dtype == q.dtype
    rows = _visible_rows(causal, seg, pad)
    np.testing.assert_allclose(np.asarray(out)[rows], np.asarray(ref)[rows], atol=1e-5, rtol=1e-5)
    assert np.isfinite(np.asarray(out)).all()


def test_reference_matches_naive_per_head_loop():
    """The grouped einsum equals attention written head by head with an explicit kv-head index."""
    q, k, v = _qkv()
    out = attention_reference(q, k, v, causal=True)
    causal = np.tril(np.ones((L, L), bool))
    for h in range(H):
        kh = h // (H // K)
        logits = np.einsum("bqd,bkd->bqk", q[:, :, h], k[:, :, kh]) / np.sqrt(D)
        logits = np.where(causal, logits, -np.inf)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        np.testing.assert_allclose(out[:, :, h], np.einsum("bqk,bkd->bqd", p, v[:, :, kh]),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("implementation", ["reference", "xla"])
def test_fully_masked_rows_are_finite(implementation):
    q, k, v = _qkv()
    pad = jnp.zeros((B, L), bool).at[0].set(True)  # row 1: every key is padding
    out = attend(q, k, v, padding_mask=pad, implementation=implementation)
    assert np.isfinite(np.asarray(out)).all()
    if implementation == "reference":
        np.testing.assert_array_equal(np.asarray(out[1]), 0.0)


@pytest.mark.parametrize("implementation", ["reference", "xla"])
def test_padded_keys_change_nothing(implementation):
    q, k, v = _qkv()
    pad = jnp.arange(L)[None, :] < jnp.array([[9], [6]])
    out = attend(q, k, v, causal=True, padding_mask=pad, implementation=implementation)
    noise_k, noise_v = _qkv(seed=1)[1:]
    k2, v2 = jnp.where(pad[..., None, None], k, noise_k), jnp.where(pad[..., None, None], v, noise_v)
    out2 = attend(q, k2, v2, causal=True, padding_mask=pad, implementation=implementation)
    np.testing.assert_allclose(out2, out, atol=1e-6)
    # Without the mask the same change is visible: the test can tell.
    assert not np.allclose(attend(q, k2, v2, causal=True, implementation=implementation),
                           attend(q, k, v, causal=True, implementation=implementation), atol=1e-3)


@pytest.mark.parametrize("implementation", ["reference", "xla"])
def test_other_segments_change_nothing(implementation):
    q, k, v = _qkv()
    in_doc1 = (SEGMENTS == 1)[..., None, None]
    noise_q, noise_k, noise_v = _qkv(seed=2)
    q2, k2, v2 = (jnp.where(in_doc1, a, n) for a, n in ((q, noise_q), (k, noise_k), (v, noise_v)))
    kw = dict(causal=True, segment_ids=SEGMENTS, implementation=implementation)
    out, out2 = attend(q, k, v, **kw), attend(q2, k2, v2, **kw)
    rows = np.asarray(SEGMENTS == 1)
    np.testing.assert_allclose(np.asarray(out2)[rows], np.asarray(out)[rows], atol=1e-6)
    assert not np.allclose(np.asarray(out2)[~rows], np.asarray(out)[~rows], atol=1e-3)


@pytest.mark.parametrize("implementation", ["reference", "xla"])
def test_causal_queries_at_the_end_of_a_longer_key_sequence(implementation):
    """Lq < Lk (decoding against a cache): the queries are the last positions."""
    q, k, v = _qkv()
    full = attend(q, k, v, causal=True, implementation=implementation)
    last = attend(q[:, -3:], k, v, causal=True, implementation=implementation)
    np.testing.assert_allclose(last, full[:, -3:], atol=1e-5, rtol=1e-5)


def test_dropout_on_probabilities():
    q, k, v = _qkv()
    plain = attend(q, k, v, implementation="xla")
    dropped = attend(q, k, v, implementation="xla", dropout_rate=0.5, dropout_rng=jax.random.key(0))
    again = attend(q, k, v, implementation="xla", dropout_rate=0.5, dropout_rng=jax.random.key(0))
    np.testing.assert_array_equal(dropped, again)
    assert not np.allclose(dropped, plain, atol=1e-3)
    # A rate without a key is no dropout.
    np.testing.assert_allclose(attend(q, k, v, dropout_rate=0.5), plain, atol=1e-6)


def test_registered_implementation_is_dispatched(monkeypatch):
    calls = []

    def fake(q, k, v, **kwargs):
        calls.append(kwargs)
        return attention_reference(q, k, v, **kwargs)

    monkeypatch.setitem(attention.IMPLEMENTATIONS, "fake", fake)
    q, k, v = _qkv()
    attend(q, k, v, causal=True, implementation="fake")
    assert calls and calls[0]["causal"] is True
    with pytest.raises(ValueError, match="unknown attention implementation"):
        attend(q, k, v, implementation="nope")


def _module(**overrides):
    kw = dict(d_model=32, num_heads=H, num_kv_heads=K, head_dim=D, use_bias=True, dropout=0.0,
              implementation="xla", rotary=True, rope_theta=10000.0, dtype=jnp.float32,
              param_dtype=jnp.float32, causal=True, rngs=nnx.Rngs(0))
    kw.update(overrides)
    with nnx.use_eager_sharding(False):
        return Attention(**kw)


def test_module_kernel_shapes_and_names():
    m = _module()
    assert m.query.kernel.shape == (32, H, D)
    assert m.key.kernel.shape == m.value.kernel.shape == (32, K, D)
    assert m.out.kernel.shape == (H, D, 32)
    specs = nnx.get_partition_spec(nnx.state(m))
    assert tuple(specs["query"]["kernel"].get_value()) == ("embed", "heads", "head_dim")
    assert tuple(specs["key"]["kernel"].get_value()) == ("embed", "kv_heads", "head_dim")
    assert tuple(specs["out"]["kernel"].get_value()) == ("heads", "head_dim", "embed")
    assert tuple(specs["query"]["bias"].get_value()) == ("heads", "head_dim")


def test_rotary_depends_only_on_relative_positions():
    m = _module(init_std=0.5)  # large weights: logits far from zero, so positions matter
    x = jax.random.normal(jax.random.key(3), (B, L, 32))
    pos = jnp.broadcast_to(jnp.arange(L), (B, L))
    out = m(x, positions=pos)
    # The angles position x frequency round to float32 at their size: shifted by 1000 they are off by up to
    # ~1000 x eps radians each (sin/cos add a few ulps), which moves q.k by that relative amount and more at the
    # largest logits; a wrong rotation moves the output by O(1).
    shifted = 4 * (1000 + L) * np.finfo(np.float32).eps
    np.testing.assert_allclose(m(x, positions=pos + 1000), out, atol=shifted, rtol=shifted)
    np.testing.assert_allclose(m(x), out, atol=1e-6)  # default positions are arange
    # Different relative distances do change the output (rotary is really applied).
    assert not np.allclose(m(x, positions=2 * pos), out, atol=1e-3)


def test_rotary_rotates_pairs_by_position_angle():
    x = jax.random.normal(jax.random.key(4), (1, 3, 1, 4))
    pos = jnp.array([[0, 1, 5]])
    out = attention.apply_rotary(x, pos, theta=100.0)
    np.testing.assert_allclose(out[:, 0], x[:, 0], atol=1e-6)  # position 0: identity
    for t, p in enumerate([0, 1, 5]):
        for i, freq in enumerate([1.0, 100.0 ** -0.5]):
            a, b = x[0, t, 0, i], x[0, t, 0, i + 2]
            c, s = np.cos(p * freq), np.sin(p * freq)
            np.testing.assert_allclose(out[0, t, 0, [i, i + 2]], [a * c - b * s, b * c + a * s],
                                       atol=1e-5)


def test_module_dropout_needs_rngs():
    m = _module(dropout=0.5)
    x = jax.random.normal(jax.random.key(5), (B, L, 32))
    np.testing.assert_array_equal(m(x), m(x))
    assert not np.allclose(m(x, rngs=nnx.Rngs(dropout=1)), m(x), atol=1e-3)


def test_every_implementation_is_listed_in_one_place():
    """A fresh process that imports only the models knows every implementation (ring included: nothing is
    registered as a side effect of importing bmjax.parallel), and validation accepts exactly these names."""
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys, jax.numpy as jnp; from bmjax.models import attention; "
            "print(sorted(attention.IMPLEMENTATIONS)); "
            "q = jnp.ones((1, 4, 2, 8)); attention.attend(q, q, q, causal=True, implementation='ring'); "
            "from bmjax import validate; print(sorted(validate.CHOICES['model.attention']))")
    env = dict(os.environ, PYTHONPATH=repo)
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    names = "['cudnn', 'reference', 'ring', 'splash', 'xla']"
    assert result.stdout.split("\n")[:2] == [names, names]
