"""Text generation from a GPT with a key/value cache: greedy, temperature, top-k, top-p, stop token, batches.

    prompt, prompt_lengths = left_pad([ids_1, ids_2, ...])  # prompts of different lengths, one per row
    tokens, lengths = generate(model, prompt, prompt_lengths=prompt_lengths, max_new_tokens=100,
                               key=jax.random.key(0), sampling=Sampling(temperature=0.8, top_k=40),
                               stop_token=eos_id)
    # tokens [B, P + 100]; row b is its prompt + continuation: tokens[b, P - prompt_lengths[b]:lengths[b]]

The whole generation is one jitted function: prefill the prompts in one model call, then a
`lax.while_loop` of one-token decode steps against a cache of fixed length (so nothing is
recompiled per token, and Python does no per-token work). It stops when every row has produced
the stop token or after `max_new_tokens`.

A batch of prompts is left-padded, so that every row's next token goes into the same column. Each
row's padding is hidden from its real tokens, and its first real token is at position 0: a row
generates what its prompt would generate alone (greedy: the same tokens; sampled: the same
tokens for the same `row_ids`, since row b draws from fold_in(key, row_ids[b])).

When a row's context outgrows the cache (`cache_len` tokens, at most the model's `max_len` for
learned positions), its last `cache_len // 2` tokens become a new window at positions 0.. and
decoding goes on: each token sees between half and all of its row's last `cache_len` tokens. The
cache is then refilled for the whole batch in one model call (rows whose window did not restart
get their same tokens at the same positions back), once per row every `cache_len // 2` tokens.

Given a mesh and logical-axis rules (`mesh=`, `rules=`: the parameters already laid out by them, as a trained
run's are), the batch is sharded over the axes the rules give "batch" (data x fsdp by default): the prompts,
every step's tokens and logits, and the KV cache (its heads over what "kv_heads" maps to), the model's own
activations following the same rules while the function is traced. `generate_each` then pads every batch to a
multiple of those axes with repeats of its rows, whose outputs it drops. Without a mesh the function runs where
the parameters live.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from bmjax.models import sharding
from bmjax.models.attention import KVCache


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


def _next_tokens(row_keys, step, logits, sampling: Sampling):
    """One token per row of logits [B, vocab]; row b draws with fold_in(row_keys[b], step)."""
    if sampling.temperature == 0:
        return next_token(None, logits, sampling)
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, step)
    return jax.vmap(lambda key, row: next_token(key, row[None], sampling)[0])(keys, logits)


def _prefill(model, window, start, cache_len: int):
    """Run `window` [B, W] into a fresh cache whose row b starts at slot start[b]; logits [B, W, vocab]."""
    cache = model.init_cache(window.shape[0], cache_len, start)
    return model(window, cache=cache)


def _rows(x, *names):
    """`x` [B, ...] with its rows over the batch axes of the layout in force, its next axes named `names` (the
    rest whole); the identity outside a layout."""
    return sharding.constrain(x, ("batch",) + names + (None,) * (x.ndim - 1 - len(names)))


def _lay_out_cache(cache):
    """The cache's rows over the batch axes and its heads over the kv_heads axes of the layout in force (a
    stacked cache's leading layer axis whole), so every decode step keeps it where its rows' tokens are."""
    def one(c: KVCache) -> KVCache:
        layer = (None,) * (c.k.ndim - 4)
        kv = layer + ("batch", None, "kv_heads", "head_dim")
        return c.replace(k=sharding.constrain(c.k, kv), v=sharding.constrain(c.v, kv),
                         start=sharding.constrain(c.start, layer + ("batch",)))

    return jax.tree.map(one, cache, is_leaf=lambda x: isinstance(x, KVCache))


def batch_ways(mesh: Mesh | None, rules) -> int:
    """How many ways `rules` split a batch over `mesh` (1 without a mesh): a sharded batch is a multiple of it."""
    if mesh is None:
        return 1
    return math.prod(mesh.shape[axis] for axis in sharding.mesh_axes("batch", rules))


def _rewind(cache, used):
    """The cache with only its first `used` slots counted as written (the next token goes to slot `used`)."""
    return jax.tree.map(lambda c: c.replace(index=jnp.full_like(c.index, used)), cache,
                        is_leaf=lambda x: isinstance(x, KVCache))


@functools.lru_cache(maxsize=16)
def make_generate_fn(graphdef, *, max_new_tokens: int, cache_len: int, sampling: Sampling = Sampling(),
                     stop_token: int | None = None, layout: sharding.Layout | None = None):
    """A jitted fn(params, rest, prompt [B, P], prompt_lengths [B], row_keys [B]) -> (tokens [B, P + new], lengths [B]).

    `graphdef, params, rest` is a GPT split as nnx.split(model, nnx.Param, ...); `prompt` is left-padded (row b's
    prompt is its last prompt_lengths[b] tokens). Compiled once per prompt shape; `tokens[b, lengths[b]:]` is
    padding (0). A row's continuation ends with `stop_token` if it produced it. With a `layout` (a concrete mesh
    and rules), it is traced under that layout: the batch's rows over its batch axes (see the module's note).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    if cache_len < 2:
        raise ValueError(f"cache_len={cache_len} must be >= 2")
    keep = cache_len // 2  # tokens a row carries over when its window is full

    def generate_fn(params, rest, prompt, prompt_lengths, row_keys):
        if layout is None:
            return generate_in_layout(params, rest, prompt, prompt_lengths, row_keys)
        with jax.sharding.use_abstract_mesh(layout.mesh.abstract_mesh), nnx.logical_axis_rules(layout.rules):
            return generate_in_layout(params, rest, prompt, prompt_lengths, row_keys)

    def generate_in_layout(params, rest, prompt, prompt_lengths, row_keys):
        model = nnx.merge(graphdef, params, rest)
        batch, prompt_len = prompt.shape
        if prompt_len < 1:
            raise ValueError("the prompt must hold at least one token")
        width = prompt_len + max_new_tokens
        # Columns past the end give a refill's fixed-size window room (see refill).
        tokens = _rows(jnp.zeros((batch, width + cache_len), jnp.int32).at[:, :prompt_len].set(prompt))
        # Row b's window (what its tokens see) starts at column first[b]; the cache's slot 0 holds column offset.
        first = jnp.maximum(prompt_len - prompt_lengths.astype(jnp.int32), max(0, prompt_len - cache_len))
        used = min(prompt_len, cache_len)
        offset = prompt_len - used
        logits, cache = _prefill(model, tokens[:, offset:prompt_len], first - offset, cache_len)
        logits, cache = _rows(logits[:, -1], "vocab"), _lay_out_cache(cache)

        def decode(carry):
            t, tokens, logits, cache, fill, first, done, lengths = carry
            column = prompt_len + t
            token = jnp.where(done, 0, _next_tokens(row_keys, t, logits, sampling))
            tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, column))
            lengths = lengths + (~done).astype(jnp.int32)
            if stop_token is not None:
                done = done | (token == stop_token)

            def step(_):
                logits, new_cache = model(token[:, None], cache=cache)
                return logits[:, 0], new_cache, fill + 1, first

            def refill(_):
                # The cache is full. Rows whose window holds cache_len tokens restart it from their last `keep`
                # (the new one included); then the cache is rebuilt from the oldest window start on. The window
                # run through the model has a fixed size, cache_len: its columns after `column` are not counted.
                new_first = jnp.where(column - first >= cache_len, column + 1 - keep, first)
                start = jnp.min(new_first)
                window = jax.lax.dynamic_slice(tokens, (0, start), (batch, cache_len))
                logits, new_cache = _prefill(model, window, new_first - start, cache_len)
                used = column + 1 - start
                last = jax.lax.dynamic_index_in_dim(logits, used - 1, axis=1, keepdims=False)
                return last, _rewind(new_cache, used), used, new_first

            if prompt_len + max_new_tokens - 1 < cache_len:  # static: the cache never fills
                logits, cache, fill, first = step(None)
            else:
                logits, cache, fill, first = jax.lax.cond(fill < cache_len, step, refill, None)
            return t + 1, _rows(tokens), _rows(logits, "vocab"), _lay_out_cache(cache), fill, first, done, lengths

        def running(carry):
            t, done = carry[0], carry[6]
            return (t < max_new_tokens) & ~jnp.all(done)

        carry = (jnp.int32(0), tokens, logits, cache, jnp.int32(used), first,
                 jnp.zeros((batch,), bool), jnp.full((batch,), prompt_len, jnp.int32))
        carry = jax.lax.while_loop(running, decode, carry)
        return carry[1][:, :width], carry[7]

    return jax.jit(generate_fn)


def left_pad(sequences, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(prompt [B, longest] int32, lengths [B]) for token sequences of different lengths, right-aligned."""
    lengths = np.array([len(s) for s in sequences], np.int32)
    prompt = np.full((len(sequences), max(lengths, default=0)), pad_id, np.int32)
    for row, (ids, n) in enumerate(zip(sequences, lengths)):
        prompt[row, prompt.shape[1] - n:] = ids
    return prompt, lengths


def generate(model, prompt, *, max_new_tokens: int, key, sampling: Sampling = Sampling(),
             stop_token: int | None = None, cache_len: int | None = None, prompt_lengths=None, row_ids=None,
             mesh: Mesh | None = None, rules=None):
    """Continue each row of `prompt` [B, P] (ids) by up to max_new_tokens; returns (tokens, lengths).

    `prompt_lengths` [B]: the prompts are left-padded (see left_pad) and row b's is its last prompt_lengths[b]
    tokens (default: all P). `row_ids` [B] (default 0..B-1) names each row's random stream: a prompt sampled with
    the same key and row id draws the same tokens in any batch. `cache_len` defaults to the model's max_len;
    learned positions allow no more. Runs where the model's parameters live (put them on one device first for a
    small model); with `mesh` and `rules` (the layout the parameters were put in), the batch's rows are sharded
    over the rules' batch axes, B a multiple of batch_ways(mesh, rules).
    """
    cfg = model.cfg
    cache_len = cfg.max_len if cache_len is None else int(cache_len)
    if cfg.position == "learned" and cache_len > cfg.max_len:
        raise ValueError(f"cache_len={cache_len} exceeds the learned positions (max_len={cfg.max_len})")
    prompt = jnp.asarray(prompt, jnp.int32)
    batch, prompt_len = prompt.shape
    prompt_lengths = np.full((batch,), prompt_len) if prompt_lengths is None else np.asarray(prompt_lengths)
    if prompt_lengths.shape != (batch,) or prompt_lengths.min() < 1 or prompt_lengths.max() > prompt_len:
        raise ValueError(f"prompt_lengths must be {batch} lengths in 1..{prompt_len}, got {prompt_lengths.tolist()}")
    row_ids = np.arange(batch) if row_ids is None else np.asarray(row_ids)
    row_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.asarray(row_ids, jnp.uint32))
    prompt_lengths = jnp.asarray(prompt_lengths, jnp.int32)
    layout = None
    if mesh is not None:
        if rules is None:
            raise ValueError("a mesh needs its logical-axis rules (rules=)")
        if batch % batch_ways(mesh, rules):
            raise ValueError(f"a batch of {batch} rows does not split {batch_ways(mesh, rules)} ways over the mesh")
        layout = sharding.Layout(mesh, tuple(rules))
        prompt, prompt_lengths, row_keys = (
            jax.device_put(x, NamedSharding(mesh, layout.spec(("batch",) + (None,) * (x.ndim - 1), x.shape)))
            for x in (prompt, prompt_lengths, row_keys))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    fn = make_generate_fn(graphdef, max_new_tokens=int(max_new_tokens), cache_len=cache_len,
                          sampling=sampling, stop_token=None if stop_token is None else int(stop_token),
                          layout=layout)
    return fn(params, rest, prompt, prompt_lengths, row_keys)


def generate_each(model, prompts, *, max_new_tokens: int, key, sampling: Sampling = Sampling(),
                  stop_token: int | None = None, batch_size: int = 1, mesh: Mesh | None = None,
                  rules=None) -> list[np.ndarray]:
    """The new tokens of each prompt in `prompts` (a list of id sequences of any lengths), stop token included.

    The prompts are left-padded to the longest and run `batch_size` at a time (the last batch repeats rows to
    keep its shape), so one compiled function serves every batch; prompt i draws from fold_in(key, i), so the
    batch size does not change the text. With `mesh` and `rules` (see generate), each batch is sharded over the
    rules' batch axes, its rows repeated up to a multiple of them (the repeats' outputs dropped).
    """
    prompt, lengths = left_pad(prompts)
    ways = batch_ways(mesh, rules)
    rows_per_batch = -(-min(batch_size, len(prompts)) // ways) * ways
    new = []
    for first in range(0, len(prompts), batch_size):
        rows = np.arange(first, min(first + batch_size, len(prompts)))
        rows_full = np.resize(rows, rows_per_batch)
        tokens, ends = generate(model, prompt[rows_full], prompt_lengths=lengths[rows_full], row_ids=rows_full,
                                max_new_tokens=max_new_tokens, key=key, sampling=sampling, stop_token=stop_token,
                                mesh=mesh, rules=rules)
        tokens, ends = np.asarray(tokens), np.asarray(ends)
        new += [tokens[i, prompt.shape[1]:ends[i]] for i in range(len(rows))]
    return new
