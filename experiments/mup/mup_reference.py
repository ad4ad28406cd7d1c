"""Reads μP's per-parameter table off Microsoft's `mup` package (the PyTorch reference) for a GPT built like
bmjax's (pre-LayerNorm, learned positions, biases, GELU MLP, tied or untied readout) and writes it to
mup_reference.json, which tests/test_mup.py compares with bmjax's table (no torch or mup needed there).

    /work/main/.venv/bin/pip install --no-deps --target /tmp/mup_pkg mup     # mup 1.0.0; torch from the venv
    PYTHONPATH=/tmp/mup_pkg python experiments/mup/mup_reference.py

The model follows the package's README: MuReadout (untied) or MuSharedReadout (tied to the token embedding),
set_base_shapes against the base width (a second width marks which dimensions grow), then every weight
re-initialised with mup.init.normal_ at std 0.02 (GPT-2's residual projections 0.02/sqrt(2 L)), biases zero,
and MuAdamW's parameter groups. Per parameter it records: the init std measured, the learning rate and weight
decay of its MuAdamW group relative to the base ones, and so the per-step decay shrink lr * weight_decay
relative to the base one; plus the readout's multiplier. The attention scale is not part of the package (its
examples and the paper's Definition 4.1 use attn_mult / d_head), so it is not read here.
"""
from __future__ import annotations

import json
import math
import pathlib

import mup
import torch
from torch import nn

HERE = pathlib.Path(__file__).resolve().parent
VOCAB, LAYERS, HEADS, MAX_LEN, STD = 320, 1, 4, 32, 0.02
BASE, DELTA, WIDTH = 64, 128, 256  # m = WIDTH / BASE = 4


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.query, self.key, self.value, self.out = (nn.Linear(d, d) for _ in range(4))
        self.fc_in, self.fc_out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)


class GPT(nn.Module):
    def __init__(self, d, tied):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VOCAB, d), nn.Embedding(MAX_LEN, d)
        self.blocks = nn.ModuleList([Block(d) for _ in range(LAYERS)])
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = (mup.MuSharedReadout(self.wte.weight, bias=False) if tied
                        else mup.MuReadout(d, VOCAB, bias=False))


# torch names -> bmjax's (tests/test_mup.py's flat names)
def bmjax_name(name: str) -> str:
    name = name.replace("weight", "kernel") if name.split(".")[-2] in (
        "query", "key", "value", "out", "fc_in", "fc_out", "lm_head") else name
    name = name.replace("wte.weight", "wte.embedding").replace("wpe.weight", "wpe.embedding")
    name = name.replace("ln_1.weight", "ln_1.scale").replace("ln_2.weight", "ln_2.scale")
    name = name.replace("ln_f.weight", "ln_f.scale")
    for attn in ("query", "key", "value", "out"):
        name = name.replace(f".{attn}.", f".attn.{attn}.")
    for mlp in ("fc_in", "fc_out"):
        name = name.replace(f".{mlp}.", f".mlp.{mlp}.")
    return name


def table(tied: bool) -> dict:
    torch.manual_seed(0)
    model = GPT(WIDTH, tied)
    mup.set_base_shapes(model, GPT(BASE, tied), delta=GPT(DELTA, tied))
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            nn.init.zeros_(p)
        elif p.dim() == 1:
            nn.init.ones_(p)
        else:
            residual = name.endswith(("out.weight", "fc_out.weight"))
            mup.init.normal_(p, std=STD / math.sqrt(2 * LAYERS) if residual else STD)
    lr, wd = 1e-2, 0.1
    opt = mup.MuAdamW(model.parameters(), lr=lr, weight_decay=wd)
    group = {id(p): g for g in opt.param_groups for p in g["params"]}
    rows = {}
    for name, p in model.named_parameters():
        g = group[id(p)]
        rows[bmjax_name(name)] = dict(
            init_std=round(float(p.detach().std()), 5) if p.dim() > 1 else None,
            lr_factor=g["lr"] / lr, weight_decay_factor=g["weight_decay"] / wd,
            decay_shrink_factor=g["lr"] * g["weight_decay"] / (lr * wd), ninf=p.infshape.ninf())
    readout = model.lm_head
    return dict(params=rows, readout_multiplier=readout.output_mult / readout.width_mult())


def main():
    out = dict(package=f"mup {getattr(mup, '__version__', '1.0.0')}", base_width=BASE, width=WIDTH,
               init_std=STD, layers=LAYERS, tied=table(True), untied=table(False))
    (HERE / "mup_reference.json").write_text(json.dumps(out, indent=1) + "\n")
    for kind in ("tied", "untied"):
        print(kind, "readout multiplier", out[kind]["readout_multiplier"])
        for name, row in out[kind]["params"].items():
            print(f"  {name:32s} {row}")


if __name__ == "__main__":
    main()
