"""μP's coordinate check (Yang et al. 2021, Tensor Programs V, and the `mup` package's README): train a GPT a few
Adam steps at several widths and record, before each step t = 1..T, every layer's output size per coordinate
(its RMS over batch, positions and features). Under μP each curve is flat in width; under the standard
parametrisation the layers after an update grow with width (the logits fastest), which is what makes its best
learning rate shrink as the model widens.

    python tools/mup_coord_check.py [--widths 64,128,256,512,1024] [--steps 5] [--out experiments/mup]

writes coord_check.json and coord_check.png (one panel per parametrisation and step, RMS against width) into
--out. Layers: the embeddings' sum, each block's attention and MLP outputs and the block's output (the residual
stream), and the logits. The batches are windows of the builtin corpus (byte tokens), the same for every width.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("PJRT_NPROC", "64")  # NOTES.md: fake CPU devices deadlock without it

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from bmjax.data import sources  # noqa: E402
from bmjax.defaults import base_config  # noqa: E402
from bmjax.models import build_model  # noqa: E402
from bmjax.train import optim  # noqa: E402

VOCAB = 320  # byte ids (259) rounded up to a multiple of 64, as configs/gpt/tiny.py


def config(width: int, parametrization: str, *, base_width: int, num_layers: int, num_heads: int, seq_len: int,
           lr: float):
    """A byte-level GPT of d_model `width` with a constant learning rate `lr` and no warmup, weight decay or clip
    (so nothing but the parametrisation decides how updates scale)."""
    c = base_config()
    c.model.vocab_size = VOCAB
    c.model.d_model = width
    c.model.num_layers = num_layers
    c.model.num_heads = num_heads
    c.model.max_len = seq_len
    c.model.parametrization = parametrization
    if parametrization == "mup":
        c.model.mup_base_width = base_width
    c.optim.lr = lr
    c.optim.schedule = "constant"
    c.optim.warmup_steps = 0
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 0.0
    return c


def corpus_batches(steps: int, batch_size: int, seq_len: int, seed: int = 0) -> np.ndarray:
    """[steps, batch, seq_len + 1] int32 windows of the builtin corpus's bytes (the first ~2 MB of its files)."""
    text, size = [], 0
    for _, doc in sources.builtin_documents():
        text.append(doc)
        size += len(doc)
        if size > 2_000_000:
            break
    tokens = np.frombuffer("".join(text).encode("utf-8"), np.uint8).astype(np.int32)
    starts = np.random.default_rng(seed).integers(0, len(tokens) - seq_len - 1, (steps, batch_size))
    return np.stack([[tokens[s:s + seq_len + 1] for s in row] for row in starts])


def _rms(x) -> jax.Array:
    return jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32))))


def layer_outputs(model, ids) -> dict[str, jax.Array]:
    """Each layer's output RMS for input ids [B, L], from the model's own modules in GPT.__call__'s order."""
    positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
    x = model.wte(ids)
    if model.cfg.position == "learned":
        x = x + model.wpe(positions)
    out = {"embedding": _rms(x)}
    for i, block in enumerate(model.blocks):
        out[f"block{i}.attn"] = _rms(block.attn(block.ln_1(x), positions=positions))
        out[f"block{i}.mlp"] = _rms(block.mlp(block.ln_2(x + block.attn(block.ln_1(x), positions=positions))))
        x = block(x, positions=positions)
        out[f"block{i}.out"] = _rms(x)
    out["logits"] = _rms(model.logits_from_hidden(model.ln_f(x)))
    return out


def run_width(c, batches: np.ndarray, seed: int = 0) -> list[dict[str, float]]:
    """Adam steps on `batches` ([T, B, L + 1]); element t-1: every layer's output RMS before step t."""
    model = build_model(c.model, rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model, nnx.Param)
    tx, _ = optim.make_optimizer(c.optim, len(batches), c.model)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        inputs, targets = batch[:, :-1], batch[:, 1:]
        sizes = layer_outputs(nnx.merge(graphdef, params), inputs)

        def loss_fn(params):
            logits = nnx.merge(graphdef, params)(inputs)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, sizes

    rows = []
    for batch in batches:
        params, opt_state, sizes = step(params, opt_state, jnp.asarray(batch))
        rows.append({k: float(v) for k, v in sizes.items()})
    return rows


def coord_check(widths, *, steps: int = 5, base_width: int = 64, num_layers: int = 2, num_heads: int = 4,
                seq_len: int = 64, batch_size: int = 8, lr: float = 1e-2, seed: int = 0) -> dict:
    """{parametrization: {width: [per-step {layer: RMS}]}} for both parametrisations, the same batches for all."""
    batches = corpus_batches(steps, batch_size, seq_len, seed)
    result = {}
    for parametrization in ("standard", "mup"):
        result[parametrization] = {}
        for width in widths:
            c = config(width, parametrization, base_width=base_width, num_layers=num_layers, num_heads=num_heads,
                       seq_len=seq_len, lr=lr)
            result[parametrization][width] = run_width(c, batches, seed)
    return result


def plot(result: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["standard"].values())[0][0].keys()
    steps = len(list(result["standard"].values())[0])
    fig, axes = plt.subplots(2, steps, figsize=(3.2 * steps, 6.4), sharey="row", squeeze=False)
    for row, parametrization in enumerate(("standard", "mup")):
        widths = sorted(result[parametrization])
        for t in range(steps):
            ax = axes[row][t]
            for name in names:
                ax.plot(widths, [result[parametrization][w][t][name] for w in widths], marker=".", label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{parametrization}, t={t + 1}")
            ax.set_xlabel("d_model")
            if t == 0:
                ax.set_ylabel("output RMS")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="64,128,256,512,1024")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--base_width", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--out", default="experiments/mup")
    args = parser.parse_args(argv)
    try:
        widths = [int(w) for w in args.widths.split(",")]
    except ValueError:
        print(f"error: --widths: expected comma-separated integers, got {args.widths!r}", file=sys.stderr)
        return 2
    if any(w <= 0 or w % 4 for w in widths):
        print(f"error: --widths: each must be a positive multiple of 4 (the heads), got {args.widths!r}",
              file=sys.stderr)
        return 2
    result = coord_check(widths, steps=args.steps, base_width=args.base_width, lr=args.lr)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "coord_check.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out / "coord_check.png")
    for parametrization, by_width in result.items():
        for width, rows in sorted(by_width.items()):
            print(parametrization, width, " ".join(f"{k}={v:.3g}" for k, v in rows[-1].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
