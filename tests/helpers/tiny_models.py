"""Tiny GPT and BERT configs (pretraining and fine-tuning) with synthetic batches whose loss falls visibly in
ten steps, and the train state they start from: what the sharding and rematerialisation tests train and trace."""
import jax
import numpy as np

from bmjax.defaults import base_config
from bmjax.parallel import mesh as mesh_lib
from bmjax.train import optim, setup
from helpers.compile import FAST_COMPILE

STEPS = 10


def gpt_config(**model):
    c = base_config()
    c.model.update(dict(name="gpt", vocab_size=64, d_model=32, num_layers=2, num_heads=4, max_len=16), **model)
    c.data.seq_len = 16
    c.data.batch_size = 16
    c.optim.update(lr=1e-2, min_lr=1e-3, warmup_steps=2, weight_decay=0.1)
    c.train.steps = STEPS
    return c


def lm_batches(config, steps=STEPS, seed=0):
    """Token streams with structure (a noisy affine recurrence), so the loss falls visibly in ten steps."""
    rng = np.random.default_rng(seed)
    b, length, vocab = config.data.batch_size, config.data.seq_len, config.model.vocab_size
    out = []
    for _ in range(steps):
        tokens = np.empty((b, length + 1), np.int64)
        tokens[:, 0] = rng.integers(0, vocab, b)
        for i in range(length):
            noise = rng.random(b) < 0.2
            tokens[:, i + 1] = np.where(noise, rng.integers(0, vocab, b), (5 * tokens[:, i] + 3) % vocab)
        out.append({"inputs": tokens[:, :-1].astype(np.int32), "targets": tokens[:, 1:].astype(np.int32)})
    return out


def bert_config(**model):
    c = gpt_config()
    c.model.update(dict(name="bert", vocab_size=64, d_model=32, num_layers=1, num_heads=4, d_ff=64, max_len=16,
                        dropout=0.0, heads="pretraining"), **model)
    c.data.task = "mlm"
    return c


def mlm_batches(config, steps=STEPS, seed=0, predictions=5):
    """BERT pretraining batches: tokens from a skewed (Zipf) distribution, so masked-token loss falls fast from
    the uniform one; 5 positions per row (a count no mesh axis divides) masked (id 1) and predicted, rows padded
    to different lengths, two segments, random next-sentence labels."""
    rng = np.random.default_rng(seed)
    b, length, vocab = config.data.batch_size, config.data.seq_len, config.model.vocab_size
    zipf = 1.0 / np.arange(1, vocab + 1)
    out = []
    for _ in range(steps):
        ids = rng.choice(vocab, size=(b, length), p=zipf / zipf.sum())
        lengths = rng.integers(length // 2, length + 1, b)
        positions = np.sort(np.stack([rng.choice(n, predictions, replace=False) for n in lengths]), axis=1)
        real = np.arange(length)[None] < lengths[:, None]
        masked = np.where(real, ids, 0)
        np.put_along_axis(masked, positions, 1, axis=1)
        out.append({
            "input_ids": masked.astype(np.int32),
            "token_type_ids": np.broadcast_to(np.arange(length) >= length // 2, (b, length)).astype(np.int32),
            "attention_mask": real.astype(np.int32),
            "mlm_positions": positions.astype(np.int32),
            "mlm_targets": np.take_along_axis(ids, positions, axis=1).astype(np.int32),
            "mlm_weights": np.ones((b, predictions), np.float32),
            "nsp_labels": rng.integers(0, 2, b).astype(np.int32),
        })
    return out


def finetune_config():
    c = bert_config(heads="classification", num_labels=3)
    c.data.task = "classification"
    return c


def classification_batches(config, steps=STEPS, seed=0):
    """Fine-tuning batches: the first token (where [CLS] stands) names the label, so the loss falls within ten
    steps; rows padded to different lengths, the last two rows weighted 0 (eval padding)."""
    rng = np.random.default_rng(seed)
    b, length, vocab = config.data.batch_size, config.data.seq_len, config.model.vocab_size
    out = []
    for _ in range(steps):
        labels = rng.integers(0, config.model.num_labels, b)
        ids = rng.integers(2, vocab, (b, length))
        ids[:, 0] = 2 + labels
        lengths = rng.integers(length // 2, length + 1, b)
        real = np.arange(length)[None] < lengths[:, None]
        out.append({
            "input_ids": np.where(real, ids, 0).astype(np.int32),
            "token_type_ids": np.zeros((b, length), np.int32),
            "attention_mask": real.astype(np.int32),
            "labels": labels.astype(np.int32),
            "weights": (np.arange(b) < b - 2).astype(np.float32),
        })
    return out


def initial_state(config):
    """The train state every mesh starts from, initialised once on one device."""
    mesh = mesh_lib.single_device_mesh()
    tx, _ = optim.make_optimizer(config.optim, STEPS)
    _, _, _, init = setup.create_state(config, mesh, tx)
    return jax.device_get(init.lower(0).compile(compiler_options=FAST_COMPILE)())  # on the host: no donation
