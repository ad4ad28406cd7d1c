"""The maximal-update parametrisation (μP) for Adam(W), after Yang et al. 2021, "Tensor Programs V: Tuning Large
Neural Networks via Zero-Shot Hyperparameter Transfer" (arXiv:2203.03466), Table 3, and Microsoft's `mup` package.

`model.parametrization=mup` with `model.mup_base_width=B`: a model of width n = model.d_model is the base model
of width B with every width-dependent quantity rescaled by the width multiplier m = n / B, so the learning rate,
init scale and multipliers tuned at width B stay optimal at every width. At n = B it is the standard
parametrisation exactly (the same initial parameters for a seed, the same loss curve: tests/test_mup.py).

The table (Table 3's Adam rows in the form the `mup` package implements, with the base-width constants that make
m = 1 the standard model; init_std = model.init_std, lr = optim.lr, α = model.mup_output_mult):

    parameter                       bmjax names                            init std         multiplier  Adam lr
    input weights, all biases,      wte, wpe, token_types (embedding),     init_std         1           lr
    norm scales and biases          *.bias, *.scale, ln_*/norm modules
    output weights (readouts)       lm_head, nsp, classifier kernels;      init_std         α/m         lr
                                    the tied readout wte (GPT, BERT MLM)
    hidden weights                  every other kernel (attn.query/key/    init_std/√m      1           lr/m
                                    value/out, mlp.*, pooler, mlm.dense)
    attention logits                q·k                                    -                √B_h/d_h    -

The same table read off the `mup` package (1.0.0: MuSharedReadout / MuReadout, set_base_shapes, mup.init.normal_,
MuAdamW's groups) for a GPT built like this one is experiments/mup/mup_reference.json, and tests/test_mup.py
compares the two parameter by parameter (init std, learning rate, decay, readout multiplier).

Hidden weights: init variance ∝ 1/fan_in (std · √(B/n)) and Adam learning rate ∝ 1/fan_in (lr · B/n): with Adam
each coordinate of an update is Θ(lr) whatever the width, so a hidden matrix's update ΔW·x sums n such terms and
must carry 1/n to move each activation by Θ(1). Vector-like parameters (one width-sized axis: embeddings, biases,
norm parameters) keep the base learning rate and init. GPT-2's smaller init of the residual-output projections
(init_std/√(2·num_layers)) is kept and gets the same 1/√m.

Output: the readout's input is multiplied by α/m (the paper's Table 3 alternative: multiplier 1/fan_in with the
readout at a width-independent init and learning rate, the `mup` package's MuReadout), not a zero-initialised
readout, so that m = 1 (with α = 1) is the standard model and the readout's initial logits shrink like 1/√m.
α, model.mup_output_mult (the package's output_mult), is a hyperparameter of the base model, tuned at the base
width with the learning rate and carried unchanged to every width; at α = 1 the base model is the standard one,
whose readout multiplier was never tuned (experiments/mup/README.md measures what tuning it changes). The readout
has one finite axis (vocab, labels), so it is vector-like: base learning rate, init_std. GPT-2 ties the readout to
the token embedding; μP treats the shared matrix as the embedding (init_std, base learning rate) and applies the
α/m multiplier on the readout side only (the `mup` package's MuSharedReadout), so the tie stays. BERT's MLM decoder
(tied to wte), its NSP head and a classifier are readouts too.

Attention: μP scales logits by 1/d_head rather than 1/√d_head (query and key become correlated during training,
so q·k grows like d_head, not √d_head). Written as √B_h / d_head with B_h = B / num_heads the base head size, it
equals 1/√d_head at the base head size; num_heads stays fixed as width grows, so d_head = n / num_heads. At
d_head = B_h the attention implementations get no scale at all (their own 1/√d_head, bit for bit).

Weight decay (AdamW's decoupled decay, optim.weight_decay = λ): the μP multiplier 1/m scales the Adam direction
before the decay is added, so each step is θ ← θ − lr·(u/m + λθ) for a hidden matrix: the decay shrinks every
parameter by the factor (1 − lr·λ) per step at every width. Under μP a hidden matrix's Adam update changes its
spectral norm by a width-independent fraction per step; a decay multiplied by lr/m instead would shrink it by
lr·λ/m, vanishing with width, so a λ tuned at the base would not carry over. The `mup` package's MuAdamW does
the same: it divides a hidden group's lr by m and multiplies its weight_decay by m, so PyTorch's decoupled shrink
lr·weight_decay stays the base one (experiments/mup/mup_reference.json). At m = 1 both are optax.adamw exactly.

Depth stays as it is (num_layers is not a μP dimension here). Depth-μP (Yang et al. 2023, "Tensor Programs VI";
Bordelon et al. 2023) would add a 1/√num_layers multiplier on each residual branch (the two residual additions of
gpt.Block and bert.Block) and a depth factor in this table's hidden learning rate.

What the per-parameter learning rates select on: the parameter names of bmjax/train/optim.py's weight-decay mask
(its "kernels" minus READOUTS below). Hidden dimensions are assumed to scale together with d_model (the default
d_ff = 4·d_model or 8/3·d_model does; num_heads fixed).
"""
from __future__ import annotations

import math

PARAMETRIZATIONS = ("standard", "mup")
# Modules whose kernel maps the width to a finite size (vocab, NSP's 2 classes, labels): μP readouts.
READOUTS = ("lm_head", "nsp", "classifier")


def is_mup(cfg) -> bool:
    """cfg: a model config (GPTConfig, BertConfig or the model ConfigDict)."""
    return cfg.parametrization == "mup"


def width_mult(cfg) -> float:
    """m = d_model / mup_base_width under μP; 1 under the standard parametrisation."""
    return cfg.d_model / cfg.mup_base_width if is_mup(cfg) else 1.0


def hidden_init_std(cfg) -> float:
    """The init std of hidden (matrix-like) weights: init_std, times √(base/width) under μP (var ∝ 1/fan_in)."""
    if not is_mup(cfg):
        return cfg.init_std
    return cfg.init_std * math.sqrt(cfg.mup_base_width / cfg.d_model)


def hidden_lr_mult(cfg) -> float:
    """The Adam learning-rate factor of hidden weights: base/width under μP."""
    return 1.0 / width_mult(cfg)


def readout_multiplier(cfg) -> float | None:
    """What the readout's input is multiplied by: mup_output_mult · base/width under μP; None (no multiplication)
    under standard."""
    return cfg.mup_output_mult * cfg.mup_base_width / cfg.d_model if is_mup(cfg) else None


def base_head_dim(cfg) -> float:
    return cfg.mup_base_width / cfg.num_heads


def attention_scale(cfg) -> float | None:
    """The attention logits' scale: None (the implementations' 1/√d_head) under standard and at the base head size;
    √(base head size) / d_head under μP elsewhere."""
    if not is_mup(cfg):
        return None
    head_dim = cfg.d_model // cfg.num_heads
    if head_dim == base_head_dim(cfg):
        return None
    return math.sqrt(base_head_dim(cfg)) / head_dim
