"""From a fitted law and a FLOP budget to the run to launch: `bmjax-scaling plan`.

The fit's allocation gives the compute-optimal N_opt, D_opt at the budget C (bmjax/scaling/allocation.py). The
plan turns them into a GPT of the base config's vocabulary and context:

- the shape rule: depth from the aspect ratio R = d_model / num_layers (at N_opt a block holds 12 d^2
  parameters, so L = (N_opt / (12 R^2))^(1/3), rounded, and at least the rule's min_layers); over that depth and
  one layer either side (never fewer than min_layers), and widths
  that are multiples of the head size H (num_heads = d_model / H): of the shapes whose parameter count lies
  within 10% of N_opt the one whose d_model / num_layers is nearest R (in log), or, where none does, the shape
  whose count is nearest N_opt;
- the parameters are counted as the fit counted them (bmjax.models.flops.param_counts of the built config):
  total for Chinchilla's law (as `fit --runs` reads N_total), non-embedding for Kaplan's;
- train.steps = D_opt / (batch_size x seq_len), rounded to the nearest step (at least one);
- the forecast: the fitted law's loss at the planned run's own N and D (the run that will be trained, not the
  continuous optimum), with the bootstrap's 95% interval where it ran, and the run's counted training FLOPs
  (summary.json's C).
"""
import dataclasses
import math

import numpy as np

from bmjax.errors import ConfigError
from bmjax.scaling import allocation as allocation_lib
from bmjax.scaling import sweep as sweep_lib

# The parameters a law's N counts (as bmjax-scaling fit --runs reads them).
DEFAULT_CONFIG = "configs/gpt/gpt2.py"

CONVENTION = {"chinchilla": "total", "kaplan": "non_embedding"}


COUNT_TOLERANCE = 0.1  # a shape within this relative distance of N_opt counts as hitting it


@dataclasses.dataclass(frozen=True)
class ShapeRule:
    aspect_ratio: float = 64.0  # d_model / num_layers (GPT-2 124M: 768 / 12)
    head_dim: int = 64  # num_heads = d_model / head_dim
    min_layers: int = 1  # a family kept off 1-layer models (which cannot compose attention heads)


def load_base_config(config_arg: str):
    """The config of `path.py[:arg]` (a bmjax-train config file)."""
    import pathlib

    path, _, arg = config_arg.partition(":")
    if not pathlib.Path(path).is_file():
        raise ConfigError("--config", f"config file {path!r} does not exist")
    from bmjax import data as data_lib

    # model.vocab_size resolved as the trainer resolves it (the tokenizer's where unset): the plan's counts and
    # the command it prints train the same model.
    return data_lib.with_model_vocab_size(sweep_lib.load_module(path).get_config(arg))


def shape_overrides(layers: int, width: int, rule: ShapeRule) -> dict:
    return {"model.num_layers": layers, "model.d_model": width, "model.num_heads": width // rule.head_dim}


def count_params(config, convention: str) -> int:
    """The config's parameters as bmjax counts them (the model exactly as built), in `convention`."""
    from bmjax import data as data_lib
    from bmjax.models import flops, model_config

    # An unset model.vocab_size counts as the trainer resolves it (the tokenizer's), so N is the run's.
    return int(flops.param_counts(model_config(data_lib.with_model_vocab_size(config).model))[convention])


def with_overrides(config, overrides: dict):
    config = config.copy_and_resolve_references()
    for key, value in overrides.items():
        sweep_lib.set_key(config, key, value)
    return config


def nearest_shape(base_config, n_target: float, convention: str, rule: ShapeRule) -> tuple[dict, int]:
    """(shape overrides, their parameter count): the shape rule of the module docstring."""
    depth = max(rule.min_layers, round((n_target / (12 * rule.aspect_ratio ** 2)) ** (1 / 3)))
    best = None
    for layers in range(max(rule.min_layers, depth - 1), depth + 2):
        multiple = 1
        while True:
            overrides = shape_overrides(layers, multiple * rule.head_dim, rule)
            n = count_params(with_overrides(base_config, overrides), convention)
            distance = abs(math.log(n / n_target))
            aspect = abs(math.log(multiple * rule.head_dim / layers / rule.aspect_ratio))
            key = (0.0, aspect) if distance <= math.log1p(COUNT_TOLERANCE) else (1.0, distance)
            if best is None or key < best[0]:
                best = (key, overrides, n)
            if n > n_target:  # counts grow with width: the next one is only farther
                break
            multiple += 1
    return best[1], best[2]


def plan_run(result, law_name: str, c: float, base_config, rule: ShapeRule, batch_size=None, seq_len=None) -> dict:
    """The plan at budget `c` from a fit (bmjax.scaling.fit.FitResult): the optimum, the shape, the overrides of
    the run to launch and its forecast. Raises ConfigError when the base config cannot take them."""
    from bmjax import validate

    allocation = result.allocation
    n_opt, d_opt = float(allocation.n_opt(c)), float(allocation.d_opt(c))
    convention = CONVENTION[law_name]
    data = {}
    if batch_size is not None:
        data["data.batch_size"] = batch_size
    if seq_len is not None:
        data["data.seq_len"] = seq_len
        if int(base_config.model.max_len) < seq_len:
            data["model.max_len"] = seq_len
    base = with_overrides(base_config, data)
    shape, n = nearest_shape(base, n_opt, convention, rule)
    tokens_per_step = int(base.data.batch_size) * int(base.data.seq_len)
    steps = max(1, round(d_opt / tokens_per_step))
    overrides = {**shape, **data, "train.steps": steps}
    if base.optim.decay_steps is not None:  # a config that fixes the schedule's length: end it with the run
        overrides["optim.decay_steps"] = steps
    config = with_overrides(base_config, overrides)
    for check in (validate.check_choices, validate.check_ranges, validate.check_steps, validate.check_shapes):
        check(config)
    d = steps * tokens_per_step
    out = {"C": float(c), "decades_past_data": max(0.0, float(np.log10(c / result.report["max_C"]))),
           "N_opt": n_opt, "D_opt": d_opt, "N_convention": convention, "shape_rule": dataclasses.asdict(rule),
           "N": n, "D": d, "steps": steps, "counted_C": d * sweep_lib.counted_flops_per_token(config),
           "overrides": overrides, "compute": result.report["compute"]}
    samples = result.samples or []
    if samples:
        out["ci"] = {"N_opt": allocation_lib._interval([float(al.n_opt(c)) for al, _ in samples]),
                     "D_opt": allocation_lib._interval([float(al.d_opt(c)) for al, _ in samples])}
    if result.law is not None:
        out["loss_at_optimum"] = float(result.law(n_opt, d_opt))
        out["loss"] = float(result.law(n, d))
        if samples:
            out["ci"]["loss"] = allocation_lib._interval([float(law(n, d)) for _, law in samples])
    return out


def train_command(config_arg: str, workdir: str, overrides: dict) -> list[str]:
    """The bmjax-train command line of a plan."""
    return ["bmjax-train", "--config", config_arg, "--workdir", workdir,
            *(f"--config.{key}={sweep_lib.format_value(value)}" for key, value in overrides.items())]
