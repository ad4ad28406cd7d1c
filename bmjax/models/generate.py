"""Text generation from a GPT with a key/value cache: greedy, temperature, top-k, top-p, stop token.

    tokens, lengths = generate(model, prompt_ids, max_new_tokens=100, key=jax.random.key(0),
                               sampling=Sampling(temperature=0.8, top_k=40), stop_token=eos_id)
    # tokens [B, P + 100]; row b is prompt + continuation up to tokens[b, :lengths[b]]

The whole generation is one jitted function: prefill the prompt in one model call, then a
`lax.while_loop` of one-token decode steps against a cache of fixed length (so nothing is
recompiled per token, and Python does no per-token work). It stops when every row has produced
the stop token or after `max_new_tokens`.

When the context outgrows the cache (`cache_len`, at most the model's `max_len` for learned
positions), the last `cache_len // 2` tokens are prefilled afresh as a new window at positions
0.. and decoding goes on: each token sees between half and all of the last `cache_len` tokens,
and the re-prefill costs one model call per `cache_len // 2` tokens.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the next token is drawn from the logits."""
    temperature: float = 1.0  # 0: greedy (argmax); otherwise logits / temperature
    top_k: int = 0  # keep the k most likely tokens (0: all)
    top_p: float = 1.0  # keep the smallest set of most likely tokens whose probability reaches top_p

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")


def filter_logits(logits, *, top_k: int = 0, top_p: float = 1.0):
    """logits [..., vocab] with every token outside the top-k / top-p set at -inf (k first, then p).

    Tokens tied with the last one kept stay too (exact ties do not occur with float logits in practice).
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits >= kth, logits, -jnp.inf)
    if top_p < 1.0:
        sorted_logits = -jnp.sort(-logits, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # A token stays if the tokens ranked above it hold less than top_p: the most likely one always
        # stays, and the set ends at the first token that brings the mass to top_p.
        kept = jnp.sum(jnp.cumsum(probs, axis=-1) - probs < top_p, axis=-1, keepdims=True)
        cutoff = jnp.take_along_axis(sorted_logits, kept - 1, axis=-1)
        logits = jnp.where(logits >= cutoff, logits, -jnp.inf)
    return logits


def next_token(key, logits, sampling: Sampling):
    """One token id per row of logits [B, vocab] (float32), int32 [B]."""
    if sampling.temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits / sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def _prefill(model, window, cache_len: int):
    """Run `window` [B, W] at positions 0..W-1 into a fresh cache; the logits [B, vocab] after its last token."""
    cache = model.init_cache(window.shape[0], cache_len)
    logits, cache = model(window, cache=cache)
    return logits[:, -1], cache


@functools.lru_cache(maxsize=16)
def make_generate_fn(graphdef, *, max_new_tokens: int, cache_len: int, sampling: Sampling = Sampling(),
                     stop_token: int | None = None):
    """A jitted fn(params, rest, prompt [B, P] int32, key) -> (tokens [B, P + max_new_tokens], lengths [B]).

    `graphdef, params, rest` is a GPT split as nnx.split(model, nnx.Param, ...). Compiled once per prompt
    shape; `tokens[b, lengths[b]:]` is padding (0). A row's continuation ends with `stop_token` if it
    produced it.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    if cache_len < 2:
        raise ValueError(f"cache_len={cache_len} must be >= 2")
    keep = cache_len // 2  # tokens carried over when the cache is full

    def generate_fn(params, rest, prompt, key):
        model = nnx.merge(graphdef, params, rest)
        batch, prompt_len = prompt.shape
        if prompt_len < 1:
            raise ValueError("the prompt must hold at least one token")
        tokens = jnp.zeros((batch, prompt_len + max_new_tokens), jnp.int32).at[:, :prompt_len].set(prompt)
        window = prompt[:, -cache_len:].astype(jnp.int32)
        logits, cache = _prefill(model, window, cache_len)

        def decode(carry):
            t, tokens, logits, cache, fill, done, lengths = carry
            token = next_token(jax.random.fold_in(key, t), logits, sampling)
            token = jnp.where(done, 0, token)
            tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, prompt_len + t))
            lengths = lengths + (~done).astype(jnp.int32)
            if stop_token is not None:
                done = done | (token == stop_token)

            def step(_):
                logits, new_cache = model(token[:, None], cache=cache)
                return logits[:, 0], new_cache, fill + 1

            def shift(_):
                # The cache is full: restart it from the last `keep` tokens (the new one included).
                start = prompt_len + t + 1 - keep
                window = jax.lax.dynamic_slice(tokens, (0, start), (batch, keep))
                logits, new_cache = _prefill(model, window, cache_len)
                return logits, new_cache, jnp.int32(keep)

            if window.shape[1] + max_new_tokens - 1 < cache_len:  # static: the cache never fills
                logits, cache, fill = step(None)
            else:
                logits, cache, fill = jax.lax.cond(fill < cache_len, step, shift, None)
            return t + 1, tokens, logits, cache, fill, done, lengths

        def running(carry):
            t, done = carry[0], carry[5]
            return (t < max_new_tokens) & ~jnp.all(done)

        carry = (jnp.int32(0), tokens, logits, cache, jnp.int32(window.shape[1]),
                 jnp.zeros((batch,), bool), jnp.full((batch,), prompt_len, jnp.int32))
        carry = jax.lax.while_loop(running, decode, carry)
        return carry[1], carry[6]

    return jax.jit(generate_fn)


def generate(model, prompt, *, max_new_tokens: int, key, sampling: Sampling = Sampling(),
             stop_token: int | None = None, cache_len: int | None = None):
    """Continue each row of `prompt` [B, P] (ids) by up to max_new_tokens; returns (tokens, lengths).

    `cache_len` defaults to the model's max_len; learned positions allow no more. Runs where the
    model's parameters live (put them on one device first for a small model).
    """
    cfg = model.cfg
    cache_len = cfg.max_len if cache_len is None else int(cache_len)
    if cfg.position == "learned" and cache_len > cfg.max_len:
        raise ValueError(f"cache_len={cache_len} exceeds the learned positions (max_len={cfg.max_len})")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    fn = make_generate_fn(graphdef, max_new_tokens=int(max_new_tokens), cache_len=cache_len,
                          sampling=sampling, stop_token=None if stop_token is None else int(stop_token))
    return fn(params, rest, jnp.asarray(prompt, jnp.int32), key)
