"""Why is a wider μP model not better in the transfer experiment? One small run pair per hypothesis (issue 22),
with run.py's settings (one-layer byte-level GPT, 4 heads, base width 64, 100 steps of 16 x 32 tokens, AdamW
with warmup + cosine, the same held-out windows); writes hypotheses.json, which report.py tabulates.

    python experiments/mup/hypotheses.py          # ~25 minutes on 2 very busy CPU cores (load ~30), one seed

Each variant is μP or the standard parametrisation at one width and learning rate with one piece changed. Pieces
that are config keys are set as such (model.mup_output_mult, model.tie_embeddings); the others are diagnostic
swaps of one μP rule for the standard one, applied only inside this script while the variant's model is traced:
  readout_standard   the readout multiplier 1 instead of mup_output_mult * base/width (standard's logit scale)
  readout_mup        (standard runs) the readout multiplier base/width, μP's, on a standard model
  attention_standard the attention logits scaled 1/sqrt(d_head) instead of sqrt(base head)/d_head
  zero_query         the query kernels zero-initialised (Tensor Programs V's GPT recipe)
  zero_readout       the (untied) readout kernel zero-initialised (Tensor Programs V's GPT recipe)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import run as transfer  # experiments/mup/run.py: the model, data and training step
from bmjax.models import mup
from bmjax.train import optim

HERE = pathlib.Path(__file__).resolve().parent

# (hypothesis, label, parametrization, width, lr, steps, model overrides, swaps). α = model.mup_output_mult: 1
# unless set; 4 with lr 2e-3 is base_tuning.json's best pair.
BEST = 8e-3  # the untuned base's best rate (model.mup_output_mult = 1, the first transfer grid's d=64 optimum)
VARIANTS = [
    ("reference", "μP d=64", "mup", 64, BEST, 100, {}, ()),
    ("reference", "μP d=512", "mup", 512, BEST, 100, {}, ()),
    ("reference", "standard d=512, lr 1e-3", "standard", 512, 1e-3, 100, {}, ()),
    ("readout multiplier", "μP d=512, readout multiplier 1", "mup", 512, BEST, 100, {}, ("readout_standard",)),
    ("readout multiplier", "standard d=512, lr 1e-3, readout multiplier 1/8", "standard", 512, 1e-3, 100, {},
     ("readout_mup",)),
    ("run length", "μP d=64, 300 steps", "mup", 64, BEST, 300, {}, ()),
    ("run length", "μP d=512, 300 steps", "mup", 512, BEST, 300, {}, ()),
    ("run length", "μP d=64, 300 steps, α 4, lr 2e-3", "mup", 64, 2e-3, 300, {"mup_output_mult": 4.0}, ()),
    ("run length", "μP d=512, 300 steps, α 4, lr 2e-3", "mup", 512, 2e-3, 300, {"mup_output_mult": 4.0}, ()),
    ("tied embedding", "μP d=64, untied", "mup", 64, BEST, 100, {"tie_embeddings": False}, ()),
    ("tied embedding", "μP d=512, untied", "mup", 512, BEST, 100, {"tie_embeddings": False}, ()),
    ("zero init (TP5 GPT)", "μP d=64, untied, zero readout + zero query", "mup", 64, BEST, 100,
     {"tie_embeddings": False}, ("zero_readout", "zero_query")),
    ("zero init (TP5 GPT)", "μP d=512, untied, zero readout + zero query", "mup", 512, BEST, 100,
     {"tie_embeddings": False}, ("zero_readout", "zero_query")),
    ("zero init (TP5 GPT)", "μP d=64, zero query", "mup", 64, BEST, 100, {}, ("zero_query",)),
    ("zero init (TP5 GPT)", "μP d=512, zero query", "mup", 512, BEST, 100, {}, ("zero_query",)),
    ("attention scale", "μP d=512, attention 1/sqrt(d_head)", "mup", 512, BEST, 100, {}, ("attention_standard",)),
]


@contextlib.contextmanager
def swapped(swaps):
    """The μP helpers with the named rules swapped, restored afterwards."""
    saved = dict(readout=mup.readout_multiplier, attention=mup.attention_scale)
    if "readout_standard" in swaps:
        mup.readout_multiplier = lambda cfg: None
    if "readout_mup" in swaps:
        mup.readout_multiplier = lambda cfg: 64 / cfg.d_model
    if "attention_standard" in swaps:
        mup.attention_scale = lambda cfg: None
    try:
        yield
    finally:
        mup.readout_multiplier, mup.attention_scale = saved["readout"], saved["attention"]


def zeroed(params, swaps):
    """The initial parameters with the zero-initialised kernels of `swaps` set to zero."""
    def zero(path, x):
        names = optim._leaf_names(path)
        hit = (("zero_query" in swaps and "query" in names) or ("zero_readout" in swaps and "lm_head" in names))
        return jnp.zeros_like(x) if hit and names[-1] == "kernel" else x
    return jax.tree_util.tree_map_with_path(zero, params)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="0")
    p.add_argument("--only", default="", help="comma-separated hypotheses to run (default: all)")
    p.add_argument("--out", default=str(HERE / "hypotheses.json"))
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    only = set(filter(None, args.only.split(",")))
    settings = argparse.Namespace(layers=1, seq_len=32, batch=16, base_width=64, warmup=10)
    train_tokens, held_tokens = transfer.corpus()
    held = jnp.asarray(transfer.windows(held_tokens, np.random.default_rng(12345), 32 * settings.batch,
                                        settings.seq_len).reshape(32, settings.batch, -1))
    rows = []
    for hypothesis, label, parametrization, width, lr, steps, model, swaps in VARIANTS:
        if only and hypothesis not in only:
            continue
        start = time.time()
        c = transfer.model_config(width, parametrization, settings)
        c.model.update(model)
        losses = []
        with swapped(swaps):
            init, train_step, eval_loss = transfer.trainer(c, steps)
            for seed in seeds:
                data = transfer.windows(train_tokens, np.random.default_rng(seed), steps * settings.batch,
                                        settings.seq_len).reshape(steps, settings.batch, -1)
                params, opt_state = init(seed)
                params = zeroed(params, swaps)
                for batch in data:
                    params, opt_state, _ = train_step(params, opt_state, jnp.asarray(batch), lr)
                losses.append(float(eval_loss(params, held)))
        rows.append(dict(hypothesis=hypothesis, label=label, parametrization=parametrization, width=width, lr=lr,
                         steps=steps, model=model, swaps=list(swaps), eval_losses=losses,
                         mean=float(np.mean(losses)), seconds=round(time.time() - start, 1)))
        print(json.dumps(rows[-1]), flush=True)
        pathlib.Path(args.out).write_text(json.dumps({"seeds": seeds, "rows": rows}, indent=1) + "\n")  # so far


if __name__ == "__main__":
    main()
