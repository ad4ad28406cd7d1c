"""AdamW with a weight-decay mask, a warmup-then-decay (or warmup-stable-decay) schedule, and global-norm gradient
clipping; under μP (model.parametrization=mup) the hidden weights' updates are scaled by base_width/width
(bmjax/models/mup.py)."""
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bmjax.models import mup

# Leaves whose names end in one of these are never decayed: biases and norm scales (and, unless
# optim.decay_embeddings, embedding tables). Decided by name, not rank: with model.scan_layers every leaf gains a
# leading layer axis, so a stacked bias is 2-D.
NO_DECAY_SUFFIXES = ("bias", "scale")
EMBEDDING_SUFFIX = "embedding"


COOLDOWN_SHAPES = {  # g(t) for t in [0, 1] of the cooldown: 1 at its first step, 0 where it reaches min_lr
    "linear": lambda t: 1.0 - t,
    "sqrt": lambda t: 1.0 - jnp.sqrt(t),  # Hägele et al. (2024)'s 1-sqrt cooldown
    "cosine": lambda t: 0.5 * (1.0 + jnp.cos(jnp.pi * t)),
}


def schedule(optim_cfg, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `lr` over `warmup_steps`, then one of:

    cosine, linear  decay to `min_lr` at `decay_steps` (unset: the run's `total_steps`);
    constant        `lr` to the end;
    wsd             warmup-stable-decay: `lr` (stable) until the cooldown start S, then
                    lr(s) = min_lr + (lr - min_lr) * g((s - S) / (E - S)) for S <= s <= E, where E = decay_steps
                    (unset: total_steps), S = max(warmup_steps, E - round(cooldown_fraction * E)) and g is
                    COOLDOWN_SHAPES[cooldown_shape]: sqrt is g(t) = 1 - sqrt(t), linear 1 - t, cosine
                    (1 + cos(pi t)) / 2. Step S still trains at `lr`; the last update (step E - 1) at just above
                    min_lr. Before S nothing depends on the run's length, so a run branched from a stable one
                    at a step before both cooldowns trains as the straight run would.

    After the decay ends the rate stays at `min_lr` (the floor), never 0 unless min_lr is 0.
    """
    warmup = int(optim_cfg.warmup_steps)
    decay_steps = int(optim_cfg.decay_steps or total_steps)
    lr, min_lr = float(optim_cfg.lr), float(optim_cfg.min_lr)
    if optim_cfg.schedule == "cosine":
        # optax's cosine needs decay_steps > warmup; if not, the rate drops to min_lr one step after the warmup.
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(decay_steps, warmup + 1), end_value=min_lr)
    warm = optax.linear_schedule(0.0, lr, max(warmup, 1))
    if optim_cfg.schedule == "wsd":
        start = cooldown_start(optim_cfg, total_steps)
        return optax.join_schedules([warm, optax.constant_schedule(lr),
                                     _cooldown(lr, min_lr, max(decay_steps - start, 1), optim_cfg.cooldown_shape)],
                                    [min(warmup, start), start])
    if optim_cfg.schedule == "linear":
        after = optax.linear_schedule(lr, min_lr, max(decay_steps - warmup, 1))
    else:  # constant
        after = optax.constant_schedule(lr)
    return optax.join_schedules([warm, after], [warmup])


def cooldown_start(optim_cfg, total_steps: int) -> int:
    """The wsd schedule's first cooldown step S (see `schedule`): the one place the run's length enters it."""
    end = int(optim_cfg.decay_steps or total_steps)
    return max(int(optim_cfg.warmup_steps), end - round(float(optim_cfg.cooldown_fraction) * end))


def _cooldown(lr: float, min_lr: float, steps: int, shape: str) -> optax.Schedule:
    """`lr` at count 0 down to `min_lr` at count `steps` along COOLDOWN_SHAPES[shape], then `min_lr`."""
    g = COOLDOWN_SHAPES[shape]

    def rate(count):
        t = jnp.clip(jnp.asarray(count, jnp.float32) / steps, 0.0, 1.0)
        return min_lr + (lr - min_lr) * g(t)

    return rate


def schedule_warnings(optim_cfg, total_steps: int) -> list[str]:
    """Start-up lines for a schedule that does not do what the run's length suggests: a warmup that never ends,
    a decay that ends before or after the last step (optim.decay_steps set apart from train.steps), or a wsd
    cooldown cut short by the warmup."""
    if optim_cfg.schedule == "constant" and not optim_cfg.warmup_steps:
        return []
    lines = []
    warmup = int(optim_cfg.warmup_steps)
    if warmup >= total_steps:
        lines.append(f"optim.warmup_steps={warmup} >= the run's {total_steps} steps (train.steps): the learning "
                     f"rate never reaches optim.lr={optim_cfg.lr} and never decays")
    decay = optim_cfg.decay_steps
    if optim_cfg.schedule != "constant" and decay is not None and int(decay) != total_steps:
        ends = ("stays at optim.min_lr for the last " f"{total_steps - int(decay)} steps" if decay < total_steps
                else f"ends the run {int(decay) - total_steps} steps before its decay is done")
        lines.append(f"optim.decay_steps={int(decay)} is set apart from the run's {total_steps} steps "
                     f"(train.steps): the learning rate {ends}; unset optim.decay_steps to follow train.steps")
    end = int(decay or total_steps)
    planned = round(float(optim_cfg.cooldown_fraction) * end)
    if optim_cfg.schedule == "wsd" and warmup < total_steps and cooldown_start(optim_cfg, total_steps) > end - planned:
        lines.append(f"optim.warmup_steps={warmup} runs into the last optim.cooldown_fraction="
                     f"{optim_cfg.cooldown_fraction} of the schedule's {end} steps: the cooldown starts when the "
                     f"warmup ends and lasts {end - warmup} steps instead of {planned}")
    return lines


def _leaf_names(path) -> list[str]:
    """A parameter's path as names: ["blocks", "0", "attn", "query", "kernel"]."""
    keys = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
    return [k for k in keys if k not in ("value", "raw_value")]


def _is_weight_matrix(names: list[str], decay_embeddings: bool) -> bool:
    """A linear layer's kernel (or, with decay_embeddings, an embedding table): not a bias or norm parameter."""
    no_decay = NO_DECAY_SUFFIXES if decay_embeddings else NO_DECAY_SUFFIXES + (EMBEDDING_SUFFIX,)
    in_norm = any("norm" in k or k.startswith("ln_") for k in names[:-1])
    return not (names[-1].endswith(no_decay) or in_norm)


def decay_mask(params: nnx.State, decay_embeddings: bool = False):
    """True for the leaves weight decay applies to: the weight matrices of linear layers (kernels), and the
    embedding tables if `decay_embeddings`; never biases or norm parameters.

    minGPT left embeddings out; nanoGPT decays every tensor of 2 or more dimensions and BERT's reference code
    everything but biases and LayerNorms, embeddings included in both (decay_embeddings=True).
    """
    return jax.tree_util.tree_map_with_path(lambda path, _: _is_weight_matrix(_leaf_names(path), decay_embeddings),
                                            params)


def mup_hidden_mask(params: nnx.State):
    """True for μP's hidden weights: the kernels `decay_mask` selects, less the readouts' (mup.READOUTS)."""

    def hidden(path, _):
        names = _leaf_names(path)
        return _is_weight_matrix(names, decay_embeddings=False) and not any(n in mup.READOUTS for n in names)

    return jax.tree_util.tree_map_with_path(hidden, params)


def make_optimizer(optim_cfg, total_steps: int,
                   model_cfg=None) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """clip_by_global_norm(grad_clip) (if > 0), then AdamW with `decay_mask`; returns (optimizer, schedule).

    With a μP `model_cfg` (model.parametrization=mup): Adam's direction of the hidden weights (`mup_hidden_mask`)
    is multiplied by base_width/width before the decoupled weight decay is added and the learning rate applied,
    so the decay's per-step shrink lr·weight_decay is the same at every width (bmjax/models/mup.py says why).
    """
    lr = schedule(optim_cfg, total_steps)
    decay_embeddings = bool(optim_cfg.decay_embeddings)
    parts = []
    if optim_cfg.grad_clip:
        parts.append(optax.clip_by_global_norm(float(optim_cfg.grad_clip)))
    adam = dict(b1=float(optim_cfg.b1), b2=float(optim_cfg.b2), eps=float(optim_cfg.eps))
    weight_decay = float(optim_cfg.weight_decay)
    mask = lambda params: decay_mask(params, decay_embeddings)  # noqa: E731
    if model_cfg is not None and mup.is_mup(model_cfg):
        # optax.adamw's own chain, with μP's per-parameter learning-rate factor after scale_by_adam.
        parts += [optax.scale_by_adam(**adam),
                  optax.masked(optax.scale(mup.hidden_lr_mult(model_cfg)), mup_hidden_mask),
                  optax.add_decayed_weights(weight_decay, mask),
                  optax.scale_by_learning_rate(lr)]
    else:
        parts.append(optax.adamw(lr, **adam, weight_decay=weight_decay, mask=mask))
    return optax.chain(*parts), lr
