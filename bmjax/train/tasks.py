"""Tasks: how a model and a batch become a loss and metrics.

A task's `loss(model, batch, rngs)` returns `(loss, metrics)` where every metric is a `(sum, count)` pair, so
averages over micro-batches, devices and eval batches stay exact (a mean of means would not be).
"""
import dataclasses
from typing import Callable

import jax.numpy as jnp
import optax

from bmjax.parallel import vocab_parallel


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    loss: Callable  # (model, batch, rngs) -> (scalar loss, {name: (sum, count)})
    batch_keys: tuple[str, ...]  # the arrays a batch of this task holds


def weighted_mean(values, weights):
    total = jnp.sum(weights)
    return jnp.sum(values * weights) / jnp.maximum(total, 1.0), total


def lm_loss(model, batch, rngs):
    """Next-token cross-entropy, averaged over target tokens (all of them unless the batch has `weights`)."""
    logits = model(batch["inputs"], segment_ids=batch.get("segment_ids"), rngs=rngs)
    # Vocabulary-parallel when the mesh shards the vocabulary (tensor > 1): the full logits are never gathered.
    ce = vocab_parallel.cross_entropy(logits, batch["targets"])
    weights = batch.get("weights", jnp.ones_like(ce))
    loss, count = weighted_mean(ce, weights)
    return loss, {"loss": (loss * count, count)}


TASKS = {
    "lm": Task("lm", lm_loss, ("inputs", "targets")),
}


def get_task(name: str) -> Task:
    return TASKS[name]


def finalize(metrics: dict) -> dict:
    """(sum, count) pairs -> averages."""
    return {k: s / jnp.maximum(c, 1.0) for k, (s, c) in metrics.items()}
