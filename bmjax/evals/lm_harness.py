"""EleutherAI's lm-evaluation-harness over a bmjax GPT: an `lm_eval.api.model.LM` whose three requests run on the
model with jitted, fixed-shape batches.

    lm = BmjaxLM(model, tokenizer, batch_size=16)
    results = lm_eval.simple_evaluate(model=lm, tasks=["hellaswag"], task_manager=lm_eval.tasks.TaskManager())

- `loglikelihood((context, continuation))`: log p(continuation | context) and whether greedy decoding would give
  it. The pair is tokenised as the harness's Hugging Face model does it: context + continuation together, the
  continuation's tokens being those after the context's own encoding (a trailing space of the context moves to
  the continuation first); an empty context is the prefix token (the tokenizer's end of text, or id 0). The
  sequence keeps its last max_len + 1 tokens: inputs all but the last, targets all but the first, and the
  continuation's tokens are the last targets.
- `loglikelihood_rolling((text,))`: the log-likelihood of the whole text, every token scored once, in windows
  of the model's context (the harness's get_rolling_token_windows, each window's context as long as it can be).
- `generate_until((context, {"until", "max_gen_toks", ...}))`: greedy continuation with the KV cache
  (bmjax/models/generate.py), cut before the first stop string; it stops early at the tokenizer's end of text.
  `do_sample` / `temperature` > 0 are refused: the harness's tasks ask for greedy text.

Scoring batches are left-padded: row b's tokens are right-aligned, with segment id 1 on real tokens and 0 on
padding (attention never reaches the padding) and positions counting from its first real token, so a row scores
as it would alone. Requests run longest first, `batch_size` rows at a time, each batch padded to a power-of-two
length (at most max_len) so a handful of shapes compile.

Given the run's mesh and logical-axis rules (bmjax-eval passes them), the parameters are laid out as they trained
and every scoring batch is sharded over the mesh's data axes (data x fsdp; `batch_size` rounded up to a multiple
of them, the extra rows scoring nothing), its forward pass traced in the mesh's layout as the trainer's eval step
is; generation runs its batches sharded over the same axes (bmjax/models/generate.py: prompts, tokens and the KV
cache split by rows, a short batch's rows repeated up to a multiple of those axes and the repeats dropped).
Without a mesh the model stays where it is (one device).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from lm_eval.api.model import LM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from bmjax.models.generate import Sampling, generate_each
from bmjax.parallel import context
from bmjax.parallel import mesh as mesh_lib
from bmjax.parallel import rules as rules_lib


class BmjaxLM(LM):
    def __init__(self, model, tokenizer, batch_size: int = 16, mesh=None, rules=None):
        super().__init__()
        self.tokenizer = tokenizer
        self.max_length = int(model.cfg.max_len)
        eos = tokenizer.eos_id
        self.prefix_token = int(eos if eos is not None else (getattr(tokenizer, "bos_id", None) or 0))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        score = lambda params, rest, *batch: _score(nnx.merge(graphdef, params, rest), *batch)  # noqa: E731
        self.batch_size, self._rows = int(batch_size), None
        self._mesh, self._rules = mesh, None
        if mesh is not None:
            rules = rules_lib.DEFAULT_RULES if rules is None else rules
            self._rules = rules
            params = jax.device_put(params, rules_lib.state_shardings(params, mesh, rules))
            rest = jax.device_put(rest, rules_lib.state_shardings(rest, mesh, rules))
            ways = mesh_lib.data_parallel_size(mesh)
            self.batch_size = -(-self.batch_size // ways) * ways
            self._rows = NamedSharding(mesh, rules_lib.logical_to_spec(("batch", None), rules, mesh))
            score = context.within(score, mesh, rules)
            model = nnx.merge(graphdef, params, rest)
        self.model, self._params, self._rest = model, params, rest
        self._score = jax.jit(score)
        self.scored_tokens = 0  # tokens run through the model by the scoring requests (for tokens/s)
        self.scoring_seconds = 0.0
        self.generated_tokens = 0  # new tokens of generate_until's prompts (for its tokens/s)
        self.generation_seconds = 0.0

    # -- tokenisation ---------------------------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        return [int(i) for i in self.tokenizer.encode(text)] if text else []

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids), the continuation's as they come out of encoding both together."""
        if not context:
            return [self.prefix_token], self._encode(continuation)
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self._encode(context + continuation)
        context_ids = self._encode(context)
        return context_ids, whole[len(context_ids):]

    # -- scoring --------------------------------------------------------------------------------------------
    def _score_pairs(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum of the continuation's log-probabilities, all greedy) of each (context ids, continuation ids)."""
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        sequences = [(context + continuation)[-(self.max_length + 1):] for context, continuation in pairs]
        order = sorted(range(len(pairs)), key=lambda i: -len(sequences[i]))
        for first in range(0, len(order), self.batch_size):
            rows = order[first:first + self.batch_size]
            width = _bucket(max(len(sequences[i]) - 1 for i in rows), self.max_length)
            inputs = np.zeros((self.batch_size, width), np.int32)
            targets = np.zeros((self.batch_size, width), np.int32)
            scored = np.zeros((self.batch_size, width), np.float32)  # 1 on the continuation's targets
            segments = np.zeros((self.batch_size, width), np.int32)
            positions = np.zeros((self.batch_size, width), np.int32)
            for row, i in enumerate(rows):
                seq, count = sequences[i], len(pairs[i][1])
                n = len(seq) - 1
                inputs[row, width - n:], targets[row, width - n:] = seq[:-1], seq[1:]
                scored[row, width - count:] = 1.0
                segments[row, width - n:] = 1
                positions[row, width - n:] = np.arange(n)
            start = time.perf_counter()
            batch = (inputs, targets, scored, segments, positions)
            if self._rows is not None:  # rows over the mesh's data axes
                batch = jax.device_put(batch, self._rows)
            logprob, greedy = jax.device_get(self._score(self._params, self._rest, *batch))
            self.scoring_seconds += time.perf_counter() - start
            self.scored_tokens += int(segments.sum())
            for row, i in enumerate(rows):
                results[i] = (float(logprob[row]), bool(greedy[row]))
        return results

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        pairs = [self._encode_pair(*request.args) for request in requests]
        for (context, continuation), request in zip(pairs, requests):
            if not continuation:
                raise ValueError(f"the continuation of {request.args!r} encodes to no tokens")
        return self._score_pairs(pairs)

    def loglikelihood_rolling(self, requests) -> list[float]:
        windows, owners = [], []
        for index, request in enumerate(requests):
            (text,) = request.args
            for pair in get_rolling_token_windows(self._encode(text), self.prefix_token, self.max_length, 1):
                windows.append(make_disjoint_window(pair))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._score_pairs(windows)):
            totals[owner] += logprob
        return totals

    # -- generation -----------------------------------------------------------------------------------------
    def generate_until(self, requests) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            _, kwargs = request.args
            kwargs = dict(kwargs or {})
            if kwargs.get("do_sample") or float(kwargs.get("temperature", 0.0) or 0.0) > 0:
                raise ValueError(f"generate_until here is greedy; the task asks for sampling ({kwargs})")
            until = kwargs.get("until", [])
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.get("max_gen_toks", 256))
            groups.setdefault((tuple(until), max_new), []).append(index)
        for (until, max_new), indices in groups.items():
            max_new = max(1, min(max_new, self.max_length - 1))
            keep = self.max_length - max_new  # the prompt's last tokens that fit beside the new ones
            prompts = [(self._encode(requests[i].args[0]) or [self.prefix_token])[-keep:] for i in indices]
            start = time.perf_counter()
            news = generate_each(self.model, prompts, max_new_tokens=max_new, key=jax.random.key(0),
                                 sampling=Sampling(temperature=0.0), stop_token=self.tokenizer.eos_id,
                                 batch_size=self.batch_size, mesh=self._mesh, rules=self._rules)
            self.generation_seconds += time.perf_counter() - start
            self.generated_tokens += sum(len(new) for new in news)
            for i, new in zip(indices, news):
                new = new[:-1] if self.tokenizer.eos_id is not None and len(new) and new[-1] == self.tokenizer.eos_id \
                    else new
                results[i] = _cut(self.tokenizer.decode(new), until)
        return results


def _score(model, inputs, targets, scored, segment_ids, positions):
    """Per row: the sum of log p(target) over the scored targets, and whether each was the argmax."""
    logits = model(inputs, positions=positions, segment_ids=segment_ids).astype(jnp.float32)
    logprobs = jax.nn.log_softmax(logits, axis=-1)
    target_logprob = jnp.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]
    hits = jnp.argmax(logits, axis=-1) == targets
    return jnp.sum(target_logprob * scored, axis=-1), jnp.all(hits | (scored == 0), axis=-1)


def _bucket(length: int, max_length: int) -> int:
    """The next power of two at or above `length`, at most max_length: few shapes to compile."""
    return min(max_length, 1 << max(0, int(length) - 1).bit_length())


def _cut(text: str, until) -> str:
    """`text` up to the first of the stop strings."""
    for stop in until:
        if stop and stop in text:
            text = text[:text.index(stop)]
    return text
