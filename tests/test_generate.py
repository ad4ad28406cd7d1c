"""KV-cache decoding: the same logits as a full forward pass; greedy, top-k, top-p, stop token; left-padded batches."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bmjax.models import build_model
from bmjax.models.attention import KVCache
from bmjax.models.generate import Sampling, filter_logits, generate, left_pad, next_token

TINY = dict(name="gpt", vocab_size=97, d_model=32, num_layers=2, num_heads=4, max_len=16)
VARIANTS = {
    "learned": dict(),
    # Rotary positions, grouped-query attention, stacked (scanned) layers and the other GPT options at once.
    "rotary_gqa_scan": dict(position="rotary", num_kv_heads=2, scan_layers=True, tie_embeddings=False,
                            norm="rmsnorm", mlp="swiglu", use_bias=False),
}


@functools.lru_cache(maxsize=None)
def _cached_model(overrides):
    # A larger init than GPT-2's, so the random model's next-token choices are not near-ties.
    return build_model({**TINY, "init_std": 0.3, **dict(overrides)}, rngs=nnx.Rngs(0))


def _model(**overrides):
    """The tiny model with these overrides, built once (tests only read it)."""
    return _cached_model(tuple(sorted(overrides.items())))


def _ids(seed, shape):
    return jax.random.randint(jax.random.key(seed), shape, 0, TINY["vocab_size"])


def _jitted(model, fn):
    graphdef, state = nnx.split(model)
    jitted = jax.jit(lambda state, *args: fn(nnx.merge(graphdef, state), *args))
    return lambda *args: jitted(state, *args)


def _prefill_chunk_and_steps(model, ids):
    """Logits for ids [B, 14]: prefill 5, then a chunk of 3, then one token at a time, through the cache."""
    cache = model.init_cache(ids.shape[0], 16)
    logits, cache = model(ids[:, :5], cache=cache)
    chunk, cache = model(ids[:, 5:8], cache=cache)

    def step(cache, token):  # scanned: one traced decode step instead of six
        logits, cache = model(token[:, None], cache=cache)
        return cache, logits[:, 0]

    cache, steps = jax.lax.scan(step, cache, ids[:, 8:].T)
    index = cache.index[0] if isinstance(cache, KVCache) else cache[0].index  # stacked or per layer
    return jnp.concatenate([logits, chunk, steps.transpose(1, 0, 2)], axis=1), model(ids), index


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cached_decoding_matches_full_forward_at_every_position(variant):
    model = _model(**VARIANTS[variant])
    cached, full, index = _jitted(model, _prefill_chunk_and_steps)(_ids(1, (2, 14)))
    np.testing.assert_allclose(cached, full, atol=2e-5, rtol=1e-5)
    assert int(index) == 14


@functools.lru_cache(maxsize=None)
def _last_logits_fn(model):
    """forward(ids [B, L], n) -> the logits after token n - 1, compiled once per model and shape."""
    return _jitted(model, lambda m, ids, n: m(ids)[:, n - 1])


def _greedy_by_full_forward(model, prompt, steps, cache_len):
    """Argmax of a full forward pass over the context, re-run for every token; prompt [B, P].

    The context window follows generate's rule: it holds at most cache_len tokens, and when one more
    would not fit it restarts from the last cache_len // 2. Contexts are right-padded to cache_len, so
    one compiled forward serves them all (causal: padding after a position does not change it).
    """
    forward = _last_logits_fn(model)
    tokens = np.asarray(prompt)
    start = max(0, tokens.shape[1] - cache_len)
    for _ in range(steps):
        context = tokens[:, start:]
        padded = np.zeros((tokens.shape[0], cache_len), np.int32)
        padded[:, :context.shape[1]] = context
        next_ids = np.asarray(jnp.argmax(forward(padded, context.shape[1]), axis=-1))
        tokens = np.concatenate([tokens, next_ids[:, None]], axis=1)
        if tokens.shape[1] - start > cache_len:
            start = tokens.shape[1] - cache_len // 2
    return tokens


@pytest.mark.parametrize("variant, prompt_len, new_tokens, cache_len", [
    ("learned", 20, 6, 16),  # a prompt longer than the cache: its last 16 tokens are prefilled
    ("rotary_gqa_scan", 5, 24, 8),  # 24 new tokens through an 8-token cache: the window restarts 5 times
])
def test_greedy_equals_argmax_of_full_forward(variant, prompt_len, new_tokens, cache_len):
    model = _model(**VARIANTS[variant])
    prompt = _ids(2, (1, prompt_len))
    tokens, lengths = generate(model, prompt, max_new_tokens=new_tokens, key=jax.random.key(0),
                               sampling=Sampling(temperature=0.0), cache_len=cache_len)
    assert tokens.shape == (1, prompt_len + new_tokens) and int(lengths[0]) == prompt_len + new_tokens
    np.testing.assert_array_equal(tokens, _greedy_by_full_forward(model, prompt, new_tokens, cache_len))


def test_learned_positions_limit_the_cache():
    with pytest.raises(ValueError, match="max_len"):
        generate(_model(), _ids(0, (1, 3)), max_new_tokens=2, key=jax.random.key(0), cache_len=32)


GREEDY = Sampling(temperature=0.0)


def _greedy_free(model, prompt):
    """Greedy, 10 new tokens, no stop token, the cache never full (shared by the tests below)."""
    return np.asarray(generate(model, prompt, max_new_tokens=10, key=jax.random.key(0), sampling=GREEDY)[0])


def test_greedy_without_filling_the_cache_equals_argmax_of_full_forward():
    model = _model()
    prompt = _ids(5, (2, 3))
    np.testing.assert_array_equal(_greedy_free(model, prompt), _greedy_by_full_forward(model, prompt, 10, 16))


def test_stop_token_ends_each_row_where_it_appears():
    model = _model()
    prompt = _ids(5, (2, 3))
    free = _greedy_free(model, prompt)
    stop = int(free[0, 3 + 4])  # row 0's fifth new token
    tokens, lengths = generate(model, prompt, max_new_tokens=10, key=jax.random.key(0), sampling=GREEDY,
                               stop_token=stop)
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    for row in range(2):
        hits = np.flatnonzero(free[row, 3:] == stop)
        end = 13 if hits.size == 0 else 3 + int(hits[0]) + 1  # up to and including the first stop token
        assert lengths[row] == end
        np.testing.assert_array_equal(tokens[row, :end], free[row, :end])
        assert (tokens[row, end:] == 0).all()
    assert lengths[0] <= 8


PROMPT_LENGTHS = (5, 1, 9, 3)


def _prompts():
    return [np.asarray(_ids(10 + i, (n,))) for i, n in enumerate(PROMPT_LENGTHS)]


def _batched(model, sampling, new_tokens, cache_len):
    """The prompts in one left-padded batch: each row's prompt + continuation, as a list of tokens."""
    prompts = _prompts()
    prompt, prompt_lengths = left_pad(prompts)
    assert prompt.shape == (4, 9) and (prompt[1, :8] == 0).all() and prompt[1, 8] == prompts[1][0]
    tokens, lengths = generate(model, prompt, prompt_lengths=prompt_lengths, max_new_tokens=new_tokens,
                               key=jax.random.key(3), sampling=sampling, cache_len=cache_len)
    pads = prompt.shape[1] - prompt_lengths
    return [np.asarray(tokens[row, pads[row]:int(lengths[row])]).tolist() for row in range(len(prompts))]


@pytest.mark.parametrize("variant, new_tokens, cache_len", [
    ("learned", 6, 16),  # the cache never fills
    # An 8-token cache: the 9-token prompt is cut to its last 8, and every row's window restarts on its own
    # schedule (rows of 1..8 tokens fill it at different steps); the others' caches are refilled meanwhile.
    ("learned", 20, 8),
    ("rotary_gqa_scan", 20, 8),
])
def test_greedy_left_padded_rows_equal_each_prompt_alone(variant, new_tokens, cache_len):
    model = _model(**VARIANTS[variant])
    # Alone: argmax of a full forward pass over the prompt's own context (what generate gives for one prompt,
    # test_greedy_equals_argmax_of_full_forward); one compiled forward serves every prompt.
    alone = [_greedy_by_full_forward(model, ids[None], new_tokens, cache_len)[0].tolist() for ids in _prompts()]
    assert [len(row) for row in alone] == [n + new_tokens for n in PROMPT_LENGTHS]
    assert _batched(model, GREEDY, new_tokens, cache_len) == alone


def test_sampled_left_padded_rows_equal_each_prompt_alone():
    # Row b draws from fold_in(key, row id): the batch does not change what a prompt samples.
    model, sampling = _model(), Sampling(temperature=1.0, top_k=20)
    batched = _batched(model, sampling, 20, 8)
    for row in (0, 1, 2):  # 3 of the 4 prompts: each alone costs a compile
        ids = _prompts()[row]
        tokens, lengths = generate(model, ids[None], max_new_tokens=20, key=jax.random.key(3), sampling=sampling,
                                   cache_len=8, row_ids=[row])
        assert np.asarray(tokens[0, :int(lengths[0])]).tolist() == batched[row]
    assert batched != _batched(model, GREEDY, 20, 8)


def test_prompt_lengths_are_checked():
    with pytest.raises(ValueError, match="prompt_lengths"):
        generate(_model(), _ids(0, (2, 3)), prompt_lengths=[3, 0], max_new_tokens=2, key=jax.random.key(0))


PROBS = np.array([0.05, 0.5, 0.1, 0.2, 0.15])  # ranked: 1 (0.5), 3 (0.2), 4 (0.15), 2 (0.1), 0 (0.05)


@pytest.mark.parametrize("top_k, top_p, support", [
    (2, 1.0, {1, 3}),
    (0, 0.45, {1}),
    (0, 0.69, {1, 3}),
    (0, 0.71, {1, 3, 4}),
    (0, 0.9, {1, 3, 4, 2}),
    (3, 0.6, {1, 3}),
    (0, 1.0, {0, 1, 2, 3, 4}),
])
def test_top_k_and_top_p_restrict_the_support(top_k, top_p, support):
    logits = jnp.log(jnp.asarray(PROBS, jnp.float32))[None]
    kept = np.flatnonzero(np.isfinite(np.asarray(filter_logits(logits, top_k=top_k, top_p=top_p)[0])))
    assert set(kept.tolist()) == support
    # Draws land only in the support, in proportion to the renormalised probabilities.
    keys = jax.random.split(jax.random.key(0), 4000)
    sampling = Sampling(top_k=top_k, top_p=top_p)
    draws = np.asarray(jax.jit(jax.vmap(lambda k: next_token(k, logits, sampling)[0]))(keys))
    assert set(np.unique(draws).tolist()) == support
    expected = PROBS[sorted(support)] / PROBS[sorted(support)].sum()
    observed = np.bincount(draws, minlength=5)[sorted(support)] / len(draws)
    np.testing.assert_allclose(observed, expected, atol=0.03)


def test_bad_sampling_settings_are_rejected():
    for bad in (dict(temperature=-1.0), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            Sampling(**bad)
