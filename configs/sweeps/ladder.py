"""The closed loop's ladder (experiments/ladder): byte-level GPTs on the builtin corpus (~31M bytes of Python's
standard library), one warmup-stable-decay run per size and seed trained to the largest budget, and a 20% 1-sqrt
cooldown branched from it at every smaller budget (bmjax/scaling/sweep.py's `ladder.flops`), so each size pays
for one run and short cooldowns instead of one run per budget.

Sizes are the shapes `bmjax-scaling plan` itself builds (bmjax/scaling/plan.py's rule with each scale's `rule`:
aspect ratio d_model / num_layers = 16, head size 8, or 4 and at least 2 layers at scale=centred), for a series
of total parameter counts, so the forecast run that `plan` picks later belongs to the same family. Budgets are counted training FLOPs (summary.json's C), the
same five for every size, spanning 30x. Every run is scored once, at its end, on one pass over the held-out
files (1% by name hash).

    python -m bmjax.cli.sweep --config configs/sweeps/ladder.py:scale=session --workdir runs/ladder --dry_run
    bash experiments/ladder/run.sh [full|session|centred]       (the sweep, the fits, the forecast runs, the tables)

scale=full (the design, ~90 min on a quiet 2-core CPU): 6 sizes from ~6K to ~250K parameters, budgets 1e11 ..
3e12, every size with seeds 0 and 1; the forecast at C* = 3e13. scale=session (what one shared session can
afford): 5 sizes from ~4.5K to ~70K, budgets 1e10 .. 3e11, seed 1 again on the middle size; C* = 3e12.
scale=centred (experiments/ladder/README.md's second design): 6 two-layer sizes from 2.3K to 40K, budgets 1.5e10
.. 4.5e11, seed 1 again on the 4th size, one warmup of 10 steps for every run (plan's command inherits it);
C* = 4.5e12. `runlocal`: two sizes, two budgets of a few steps: a smoke test of the same path.
`forecast=PLAN.json` (with the scale): instead of the ladder, the forecast runs from `bmjax-scaling plan --json`'s
output (`forecast_runs`).
"""
import numpy as np

from bmjax.defaults import base_config, parse_arg
from bmjax.scaling.plan import ShapeRule, nearest_shape
from bmjax.scaling.sweep import budget_steps

LR = 3e-3
SCALES = {  # total-parameter targets of the sizes, FLOP budgets, (seed, indices of the sizes it trains), C*,
    # plan's shape rule, the warmup (None: 10% of the steps of a size's smallest budget), the forecast's neighbours
    # (multiples of N_opt trained at the same C; at scale=centred none: plan's run alone takes ~17 min at load 30)
    "full": dict(sizes=np.geomspace(6e3, 2.5e5, 6), budgets=np.geomspace(1e11, 3e12, 5),
                 seeds=((0, range(6)), (1, range(6))), forecast=3e13, rule=ShapeRule(16, 8), warmup=None,
                 neighbours=(0.5, 2.0)),
    "session": dict(sizes=np.geomspace(4.5e3, 7e4, 5), budgets=np.geomspace(1e10, 3e11, 5),
                    seeds=((0, range(5)), (1, (2,))), forecast=3e12, rule=ShapeRule(16, 8), warmup=None,
                    neighbours=(0.5, 2.0)),
    # The design of experiments/ladder/README.md's "centred ladder": 2-layer shapes of head size 4 from 2.3K to
    # 40K parameters around the optima of budgets 1.5e10 .. 4.5e11; one warmup of 10 steps for every run.
    "centred": dict(sizes=(2.3e3, 5.3e3, 9.2e3, 1.4e4, 2.5e4, 4e4), budgets=np.geomspace(1.5e10, 4.5e11, 5),
                    seeds=((0, range(6)), (1, (3,))), forecast=4.5e12, rule=ShapeRule(16, 4, min_layers=2),
                    warmup=10, neighbours=()),
    "runlocal": dict(sizes=(1e4, 2.5e4), budgets=(1e10, 3e10), seeds=((0, range(2)),), forecast=1e11,
                     rule=ShapeRule(16, 8), warmup=None, neighbours=(0.5, 2.0)),
}


def scale_of(arg: str) -> str:
    args = parse_arg(arg, scale="full", runlocal=False, forecast="")
    scale = "runlocal" if args["runlocal"] else args["scale"]
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r}: expected one of {', '.join(SCALES)}")
    return scale


def get_config(arg: str = ""):
    local = scale_of(arg) == "runlocal"
    c = base_config()
    c.model.name = "gpt"
    c.model.vocab_size = 320  # 259 byte-level ids, rounded up to a multiple of 64
    c.model.max_len = 128
    c.model.d_model, c.model.num_layers, c.model.num_heads = 32, 2, 4  # each run's shape comes from the sweep
    c.data.source = "builtin"
    c.data.tokenizer = "byte"
    c.data.eval_fraction = 0.01
    c.data.seq_len = 128
    c.data.batch_size = 32
    c.optim.schedule = "wsd"
    c.optim.cooldown_fraction = 0.2
    c.optim.cooldown_shape = "sqrt"  # Hägele et al. (2024)'s 1-sqrt
    c.optim.lr = LR
    c.optim.min_lr = LR / 10
    c.optim.b2 = 0.99
    if SCALES[scale_of(arg)]["warmup"] is not None:  # one warmup for every run: plan's command inherits it
        c.optim.warmup_steps = SCALES[scale_of(arg)]["warmup"]
    c.train.steps_per_call = 1  # branch points fall on any step
    c.train.log_every = 5 if local else 50
    c.train.eval_every = 1_000_000  # only at the end: the runs are compared at their budget
    c.train.eval_steps = 0  # the whole held-out split
    c.train.ckpt_every = 5 if local else 100
    c.train.sample_tokens = 0
    c.train.progress = False
    return c


def shapes(arg: str = "") -> list[dict]:
    """The ladder's sizes: plan's shape for each total-parameter target."""
    scale = SCALES[scale_of(arg)]
    return [nearest_shape(get_config(arg), n, "total", scale["rule"])[0] for n in scale["sizes"]]


def budgets(arg: str = "") -> list[float]:
    return [float(f"{b:.3g}") for b in SCALES[scale_of(arg)]["budgets"]]


def warmup_overrides(shape: dict, arg: str = "") -> dict:
    """A size's warmup, the same for all its budgets (a branch must share its parent's). Scales with a warmup of
    their own leave it to the base config (no override: plan's printed command is the forecast run verbatim);
    the others take 10% of the steps of the smallest budget at that size, the forecast runs too."""
    if SCALES[scale_of(arg)]["warmup"] is not None:
        return {}
    config = get_config(arg)
    for key, value in shape.items():
        config.model[key.removeprefix("model.")] = value
    return {"optim.warmup_steps": max(1, budget_steps(config, "budget.flops", min(budgets(arg))) // 10)}


def forecast_runs(arg: str, plan_file: str) -> list[dict]:
    """The forecast: the run `bmjax-scaling plan --json` wrote to `plan_file` (its overrides as they are: N_opt's
    shape, D_opt tokens), and the family's shapes at the scale's neighbours (N_opt / 2 and 2 N_opt) trained at the
    same counted FLOPs;
    every one with the ladder's warmup rule and seed 0 (the base config's)."""
    import json

    plan = json.loads(open(plan_file).read())
    shape_keys = ("model.num_layers", "model.d_model", "model.num_heads")
    center = {key: plan["overrides"][key] for key in shape_keys}
    runs = [{**plan["overrides"], "train.seed": 0, **warmup_overrides(center, arg)}]
    for factor in SCALES[scale_of(arg)]["neighbours"]:
        shape = nearest_shape(get_config(arg), factor * plan["N_opt"], "total", SCALES[scale_of(arg)]["rule"])[0]
        if shape != center:
            runs.append({**shape, "train.seed": 0, **warmup_overrides(shape, arg),
                         "budget.flops": float(f"{plan['counted_C']:.4g}")})
    return runs


def get_sweep(arg: str = ""):
    plan_file = parse_arg(arg, scale="full", runlocal=False, forecast="")["forecast"]
    if plan_file:
        return forecast_runs(arg, plan_file)
    runs = []
    for seed, indices in SCALES[scale_of(arg)]["seeds"]:
        for i in indices:
            shape = shapes(arg)[i]
            runs.append({**shape, "train.seed": seed, **warmup_overrides(shape, arg), "ladder.flops": budgets(arg)})
    return runs
