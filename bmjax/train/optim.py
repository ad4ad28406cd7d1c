"""AdamW with a weight-decay mask, a warmup-then-decay schedule, and global-norm gradient clipping."""
import jax
import optax
from flax import nnx

# Leaves whose names end in one of these are never decayed: biases and norm scales (and, unless
# optim.decay_embeddings, embedding tables). Decided by name, not rank: with model.scan_layers every leaf gains a
# leading layer axis, so a stacked bias is 2-D.
NO_DECAY_SUFFIXES = ("bias", "scale")
EMBEDDING_SUFFIX = "embedding"


def schedule(optim_cfg, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `lr`, then cosine or linear decay to `min_lr` at `decay_steps`, or constant.

    After `decay_steps` the rate stays at `min_lr` (the floor), never 0 unless min_lr is 0.
    """
    warmup = int(optim_cfg.warmup_steps)
    decay_steps = int(optim_cfg.decay_steps or total_steps)
    lr, min_lr = float(optim_cfg.lr), float(optim_cfg.min_lr)
    if optim_cfg.schedule == "cosine":
        # optax's cosine needs decay_steps > warmup; if not, the rate drops to min_lr one step after the warmup.
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(decay_steps, warmup + 1), end_value=min_lr)
    warm = optax.linear_schedule(0.0, lr, max(warmup, 1))
    if optim_cfg.schedule == "linear":
        after = optax.linear_schedule(lr, min_lr, max(decay_steps - warmup, 1))
    else:  # constant
        after = optax.constant_schedule(lr)
    return optax.join_schedules([warm, after], [warmup])


def schedule_warnings(optim_cfg, total_steps: int) -> list[str]:
    """Start-up lines for a schedule that does not do what the run's length suggests: a warmup that never ends,
    or a decay that ends before or after the last step (optim.decay_steps set apart from train.steps)."""
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
    return lines


def decay_mask(params: nnx.State, decay_embeddings: bool = False):
    """True for the leaves weight decay applies to: the weight matrices of linear layers (kernels), and the
    embedding tables if `decay_embeddings`; never biases or norm parameters.

    minGPT left embeddings out; nanoGPT decays every tensor of 2 or more dimensions and BERT's reference code
    everything but biases and LayerNorms, embeddings included in both (decay_embeddings=True).
    """
    no_decay = NO_DECAY_SUFFIXES if decay_embeddings else NO_DECAY_SUFFIXES + (EMBEDDING_SUFFIX,)

    def decays(path, _):
        keys = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
        keys = [k for k in keys if k not in ("value", "raw_value")]
        name = keys[-1]
        in_norm = any("norm" in k or k.startswith("ln_") for k in keys[:-1])
        return not (name.endswith(no_decay) or in_norm)

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(optim_cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """clip_by_global_norm(grad_clip) (if > 0), then AdamW with `decay_mask`; returns (optimizer, schedule)."""
    lr = schedule(optim_cfg, total_steps)
    decay_embeddings = bool(optim_cfg.decay_embeddings)
    parts = []
    if optim_cfg.grad_clip:
        parts.append(optax.clip_by_global_norm(float(optim_cfg.grad_clip)))
    parts.append(
        optax.adamw(
            lr,
            b1=float(optim_cfg.b1),
            b2=float(optim_cfg.b2),
            eps=float(optim_cfg.eps),
            weight_decay=float(optim_cfg.weight_decay),
            mask=lambda params: decay_mask(params, decay_embeddings),
        ))
    return optax.chain(*parts), lr
