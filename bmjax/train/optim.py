"""AdamW with a weight-decay mask, a warmup-then-decay schedule, and global-norm gradient clipping."""
import jax
import optax
from flax import nnx

# Parameters whose names end in one of these are never decayed: biases, norm scales and embeddings
# (GPT-2/nanoGPT decay only the matrices of linear layers).
NO_DECAY_SUFFIXES = ("bias", "scale", "embedding")


def schedule(optim_cfg, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `lr`, then cosine or linear decay to `min_lr` at `decay_steps`, or constant."""
    warmup = int(optim_cfg.warmup_steps)
    decay_steps = int(optim_cfg.decay_steps or total_steps)
    lr, min_lr = float(optim_cfg.lr), float(optim_cfg.min_lr)
    warm = optax.linear_schedule(0.0, lr, max(warmup, 1))
    span = max(decay_steps - warmup, 1)
    if optim_cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(lr, span, alpha=min_lr / lr if lr else 0.0)
    elif optim_cfg.schedule == "linear":
        after = optax.linear_schedule(lr, min_lr, span)
    else:  # constant
        after = optax.constant_schedule(lr)
    return optax.join_schedules([warm, after], [warmup])


def decay_mask(params: nnx.State):
    """True for the leaves weight decay applies to: everything but biases, norms and embeddings."""

    def decays(path, _):
        keys = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
        keys = [k for k in keys if k not in ("value", "raw_value")]
        name = keys[-1]
        in_norm = any("norm" in k or k.startswith("ln_") for k in keys[:-1])
        return not (name.endswith(NO_DECAY_SUFFIXES) or in_norm)

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(optim_cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    lr = schedule(optim_cfg, total_steps)
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
            mask=decay_mask,
        ))
    return optax.chain(*parts), lr
