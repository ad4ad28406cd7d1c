"""Tasks: how a model and a batch become a loss and metrics.

A task's `loss(model, batch, rngs)` returns `(loss, metrics)` where every metric is a `(sum, count)` pair, so
averages over micro-batches, devices and eval batches stay exact (a mean of means would not be).

The loss is a sum of terms, each a mean: loss = sum over `loss_terms` of sum_t / count_t (lm: one term, the
token mean; mlm: the MLM token mean plus the NSP example mean). A term's count depends on the batch alone
(`loss_counts`), so gradient accumulation can divide every micro-batch's sums by the whole batch's counts
before differentiating and get the big batch's gradient exactly (see step.accumulate_gradients).

Eval may report more than training (`eval_metrics`), and metrics that are not averages, such as F1, are
computed from summed counts at the end of an eval pass (`finalize`).

- lm: next-token cross-entropy (GPT); packed batches carry segment_ids and positions (see lm_loss). Eval
  batches with "target_bytes" (each target's UTF-8 bytes) also report bits_per_byte: the scored targets'
  nats / ln 2 over their bytes, summed like every metric, so exact over any number of batches and processes.
- mlm: BERT pretraining, masked-LM cross-entropy over the selected tokens + next-sentence cross-entropy;
  metrics mlm_loss, mlm_accuracy, nsp_loss, nsp_accuracy; the reported loss is mlm_loss + nsp_loss, each
  averaged over the whole batch (batches from bmjax/data/mlm.py).
- classification: cross-entropy of the sequence label; metrics accuracy, and on eval F1 (binary F1 of
  label 1 with two labels, macro F1 otherwise) (batches from bmjax/data/classification.py).
"""
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bmjax.parallel import vocab_parallel


def finalize(metrics: dict) -> dict:
    """(sum, count) pairs -> averages (floats)."""
    return {k: float(s) / max(float(c), 1.0) for k, (s, c) in metrics.items()}


def example_counts(batch):
    """The default `loss_counts`: the loss is a mean over the batch's examples (rows)."""
    return {"loss": jnp.asarray(jax.tree.leaves(batch)[0].shape[0], jnp.float32)}


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    loss: Callable  # (model, batch, rngs) -> (scalar loss, {name: (sum, count)})
    batch_keys: tuple[str, ...]  # the arrays a batch of this task holds
    loss_counts: Callable = example_counts  # batch -> {term: count}: the counts of the loss terms' metrics
    loss_terms: tuple[str, ...] = ("loss",)  # loss = sum over these metrics of sum / count
    eval_metrics: Callable | None = None  # (model, batch) -> {name: (sum, count)}; default: loss's metrics
    finalize: Callable = finalize  # summed eval metrics -> {name: float}


def weighted_mean(values, weights):
    total = jnp.sum(weights)
    return jnp.sum(values * weights) / jnp.maximum(total, 1.0), total


def lm_token_weights(batch):
    """The weight of each target token: `weights` (1 when absent), 0 on packing's padding (segment id 0)."""
    weights = batch.get("weights", jnp.ones(batch["targets"].shape, jnp.float32))
    if "segment_ids" in batch:
        weights = weights * (batch["segment_ids"] != 0)
    return weights


def lm_counts(batch):
    return {"loss": jnp.sum(lm_token_weights(batch))}


def lm_loss(model, batch, rngs):
    """Next-token cross-entropy, averaged over the scored target tokens.

    A packed batch (data.packing=segments) also holds `segment_ids` (0 = padding, 1, 2, ... = the documents of a
    row) and `positions` (restarting at 0 in each document): attention stays within a document, positions
    restart, and a token is scored iff its segment id is not 0. `weights`, when present, scale the tokens too.
    """
    segment_ids = batch.get("segment_ids")
    logits = model(batch["inputs"], positions=batch.get("positions"), segment_ids=segment_ids, rngs=rngs)
    # Vocabulary-parallel when the mesh shards the vocabulary (tensor > 1): the full logits are never gathered.
    ce = vocab_parallel.cross_entropy(logits, batch["targets"])
    loss, count = weighted_mean(ce, lm_token_weights(batch))
    return loss, {"loss": (loss * count, count)}


def lm_eval(model, batch):
    """lm_loss's metrics, and bits_per_byte where the batch carries each target's bytes ("target_bytes")."""
    _, metrics = lm_loss(model, batch, None)
    if "target_bytes" in batch:
        scored_bytes = jnp.sum(batch["target_bytes"] * lm_token_weights(batch))
        metrics["bits_per_byte"] = (metrics["loss"][0] / np.log(2.0), scored_bytes)
    return metrics


def _bert_outputs(model, batch, rngs, **kwargs):
    """The BERT model on a batch; packed rows also carry `segment_ids` and `positions`."""
    return model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                 positions=batch.get("positions"), segment_ids=batch.get("segment_ids"), rngs=rngs, **kwargs)


def mlm_counts(batch):
    """The loss terms' counts: the selected tokens (MLM) and the examples (NSP)."""
    examples = jnp.asarray(batch["nsp_labels"].shape[0], jnp.float32)
    return {"mlm_loss": jnp.sum(batch["mlm_weights"].astype(jnp.float32)), "nsp_loss": examples}


def mlm_loss(model, batch, rngs):
    """BERT pretraining: mean CE over the selected (mlm_weights) tokens + mean NSP CE over the examples.

    Two terms with their own counts (loss_terms mlm_loss and nsp_loss); there is no "loss" metric, as
    summing per-batch losses would weigh the MLM means by examples: step.py and `mlm_finalize` add it.
    """
    # The MLM head scores only the selected positions ([B, P, vocab]), as BERT does.
    out = _bert_outputs(model, batch, rngs, mlm_positions=batch["mlm_positions"])
    weights = batch["mlm_weights"].astype(jnp.float32)
    targets = batch["mlm_targets"]
    ce = vocab_parallel.cross_entropy(out.mlm_logits, targets)  # as lm_loss: vocabulary-parallel when sharded
    mlm_mean, selected = weighted_mean(ce, weights)
    mlm_hits = jnp.sum((jnp.argmax(out.mlm_logits, axis=-1) == targets) * weights)
    nsp_labels = batch["nsp_labels"]
    nsp_ce = optax.softmax_cross_entropy_with_integer_labels(out.nsp_logits.astype(jnp.float32), nsp_labels)
    examples = jnp.asarray(nsp_ce.shape[0], jnp.float32)
    nsp_hits = jnp.sum(jnp.argmax(out.nsp_logits, axis=-1) == nsp_labels).astype(jnp.float32)
    loss = mlm_mean + jnp.mean(nsp_ce)
    return loss, {
        "mlm_loss": (mlm_mean * selected, selected),
        "mlm_accuracy": (mlm_hits, selected),
        "nsp_loss": (jnp.sum(nsp_ce), examples),
        "nsp_accuracy": (nsp_hits, examples),
    }


def mlm_finalize(metrics: dict) -> dict:
    averages = finalize(metrics)
    return dict(averages, loss=averages["mlm_loss"] + averages["nsp_loss"])


def _example_weights(batch):
    """1 per real example; eval batches padded to full size carry 0 on the padding rows."""
    return batch.get("weights", jnp.ones(batch["labels"].shape, jnp.float32)).astype(jnp.float32)


def classification_counts(batch):
    return {"loss": jnp.sum(_example_weights(batch))}


def _classification_metrics(logits, batch):
    labels, weights = batch["labels"], _example_weights(batch)
    loss, count = weighted_mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels), weights)
    hits = jnp.sum((jnp.argmax(logits, axis=-1) == labels) * weights)
    return loss, {"loss": (loss * count, count), "accuracy": (hits, count)}


def classification_loss(model, batch, rngs):
    """Cross-entropy of the label predicted from the pooled [CLS] vector."""
    return _classification_metrics(_bert_outputs(model, batch, rngs).logits.astype(jnp.float32), batch)


def classification_eval(model, batch):
    """Loss and accuracy, plus per-class [tp, fp, fn] counts (`confusion`, [3, num_labels]) for F1."""
    logits = _bert_outputs(model, batch, None).logits.astype(jnp.float32)
    _, metrics = _classification_metrics(logits, batch)
    num_labels = logits.shape[-1]
    weights = _example_weights(batch)[:, None]
    predicted = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_labels) * weights
    actual = jax.nn.one_hot(batch["labels"], num_labels) * weights
    tp = jnp.sum(predicted * actual, axis=0)
    confusion = jnp.stack([tp, jnp.sum(predicted, axis=0) - tp, jnp.sum(actual, axis=0) - tp])
    metrics["confusion"] = (confusion, metrics["accuracy"][1])
    return metrics


def f1_score(confusion) -> float:
    """F1 from summed [tp, fp, fn] per class: of label 1 with two labels; else the mean over the labels that
    occur (as truth or prediction), which is scikit-learn's macro F1."""
    tp, fp, fn = np.asarray(confusion, dtype=np.float64)
    denominator = 2 * tp + fp + fn
    if len(tp) == 2:
        return float(2 * tp[1] / denominator[1]) if denominator[1] > 0 else 0.0
    present = denominator > 0
    return float(np.mean(2 * tp[present] / denominator[present])) if present.any() else 0.0


def classification_finalize(metrics: dict) -> dict:
    metrics = dict(metrics)
    confusion, _ = metrics.pop("confusion")
    return dict(finalize(metrics), f1=f1_score(confusion))


BERT_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
TASKS = {
    "lm": Task("lm", lm_loss, ("inputs", "targets"), lm_counts, eval_metrics=lm_eval),
    "mlm": Task("mlm", mlm_loss, BERT_INPUTS + ("mlm_positions", "mlm_targets", "mlm_weights", "nsp_labels"),
                mlm_counts, loss_terms=("mlm_loss", "nsp_loss"), finalize=mlm_finalize),
    "classification": Task("classification", classification_loss, BERT_INPUTS + ("labels", "weights"),
                           classification_counts, eval_metrics=classification_eval,
                           finalize=classification_finalize),
}


def get_task(name: str) -> Task:
    return TASKS[name]
