"""μP transfer: a learning-rate grid at several widths, both parametrisations, a few seeds; writes results.json
(report.py makes the tables and transfer.png). `run.sh` runs it; README.md says what it shows.

μP's own hyperparameter besides the rate, the readout's output multiplier (model.mup_output_mult), is tuned at the
base width first: `--widths 64 --parametrizations mup --output_mults 1,2,4,... --results base_tuning.json` is the
(lr x output multiplier) grid of the base model; the transfer grid then runs μP at the best one (--output_mults X).

Every run: a byte-level GPT (configs/gpt/tiny.py's vocabulary, `--layers` blocks, 4 heads, d_model = the width;
μP's base width is the smallest), AdamW through bmjax.train.optim.make_optimizer (warmup then cosine to lr/10,
weight decay 0.1, clip 1.0), `--steps` steps of random windows of the builtin corpus's training files, then the
mean loss over fixed windows of its held-out files (the same for every run). One compile per width and
parametrisation: the learning rate enters as a factor on the updates of a lr = 1 optimizer, which is the same
AdamW update (the schedule, the clip-free Adam direction and the decoupled decay all scale with lr).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

os.environ.setdefault("PJRT_NPROC", "64")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from bmjax.data import sources  # noqa: E402
from bmjax.defaults import base_config  # noqa: E402
from bmjax.models import build_model  # noqa: E402
from bmjax.train import optim  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
VOCAB = 320


def corpus(eval_fraction=0.1, limit=8_000_000):
    """(train bytes, held-out bytes) as int32 token arrays: the builtin corpus split by file as bmjax splits it."""
    train, held = [], []
    for rel, text in sources.builtin_documents():
        (held if sources.is_builtin_eval_file(rel, eval_fraction) else train).append(text)
    def enc(docs):
        return np.frombuffer("\n".join(docs).encode("utf-8")[:limit], np.uint8).astype(np.int32)
    return enc(train), enc(held)


def windows(tokens, rng, count, seq_len):
    starts = rng.integers(0, len(tokens) - seq_len - 1, count)
    return np.stack([tokens[s:s + seq_len + 1] for s in starts])


def model_config(width, parametrization, args, output_mult=1.0):
    c = base_config()
    c.model.vocab_size = VOCAB
    c.model.d_model = width
    c.model.num_layers = args.layers
    c.model.num_heads = 4
    c.model.max_len = args.seq_len
    c.model.parametrization = parametrization
    if parametrization == "mup":
        c.model.mup_base_width = args.base_width
        c.model.mup_output_mult = output_mult
    c.optim.lr, c.optim.min_lr = 1.0, 0.1  # scaled by the run's learning rate (see the docstring)
    c.optim.warmup_steps = args.warmup
    c.optim.weight_decay = 0.1
    c.optim.b2 = 0.99
    c.optim.grad_clip = 1.0
    return c


def trainer(c, steps):
    model = build_model(c.model, rngs=nnx.Rngs(0))
    graphdef, _ = nnx.split(model, nnx.Param)
    tx, _ = optim.make_optimizer(c.optim, steps, c.model)

    def loss_fn(params, batch):
        logits = nnx.merge(graphdef, params)(batch[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()

    @jax.jit
    def init(seed):
        params = nnx.state(build_model(c.model, rngs=nnx.Rngs(jax.random.key(seed))), nnx.Param)
        return params, tx.init(params)

    @jax.jit
    def train_step(params, opt_state, batch, lr):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        updates = jax.tree.map(lambda u: u * lr, updates)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def eval_loss(params, batches):
        return jnp.mean(jax.lax.map(lambda b: loss_fn(params, b), batches))

    return init, train_step, eval_loss


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--widths", default="64,128,256,512")
    p.add_argument("--lrs", default="0.001,0.002,0.004,0.008,0.016,0.032")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--seq_len", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--base_width", type=int, default=64)
    p.add_argument("--parametrizations", default="standard,mup")
    p.add_argument("--output_mults", default="1", help="μP runs' model.mup_output_mult values")
    p.add_argument("--results", default=str(HERE / "results.json"))
    args = p.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    lrs = [float(x) for x in args.lrs.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    train_tokens, held_tokens = corpus()
    held = jnp.asarray(windows(held_tokens, np.random.default_rng(12345), 32 * args.batch, args.seq_len)
                       .reshape(32, args.batch, -1))
    runs = []
    output_mults = [float(x) for x in args.output_mults.split(",")]
    cells = [(parametrization, output_mult, width) for parametrization in args.parametrizations.split(",")
             for output_mult in (output_mults if parametrization == "mup" else [1.0]) for width in widths]
    for parametrization, output_mult, width in cells:
        c = model_config(width, parametrization, args, output_mult)
        init, train_step, eval_loss = trainer(c, args.steps)
        for seed in seeds:
            data = windows(train_tokens, np.random.default_rng(seed), args.steps * args.batch, args.seq_len)
            data = data.reshape(args.steps, args.batch, -1)
            for lr in lrs:
                start = time.time()
                params, opt_state = init(seed)
                for batch in data:
                    params, opt_state, loss = train_step(params, opt_state, jnp.asarray(batch), lr)
                final = float(eval_loss(params, held))
                runs.append(dict(parametrization=parametrization, output_mult=output_mult, width=width,
                                 seed=seed, lr=lr,
                                 eval_loss=final if np.isfinite(final) else None, train_loss=float(loss),
                                 seconds=round(time.time() - start, 1)))
                print(json.dumps(runs[-1]), flush=True)
    settings = {k: v for k, v in vars(args).items() if k != "results"}
    pathlib.Path(args.results).write_text(json.dumps({"settings": settings, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
