"""A real IsoFLOP sweep on a 2-core CPU (experiments/small_scaling): byte-level GPTs of ten sizes, from ~7K to
~3.2M non-embedding parameters, each trained at three budgets C = 6 N D of 5e11, 1e12 and 3e12 FLOPs (30 runs),
on the builtin corpus (~31M bytes of Python's standard library; the smallest model at 3e12 reads it ~2.2 times).

Each run is scored once, at its end, on one pass over the held-out files (1% of the files by name hash,
~225K bytes). At these budgets the compute-optimal size is ~10K-50K parameters: the sizes below 100K bracket the
IsoFLOP minima, the larger ones (to 3.2M, which trains 6 to 39 steps) are the profiles' right arms. About 40
minutes on a 2-core CPU.

    python -m bmjax.scaling.sweep_cli --config configs/sweeps/small_scaling.py --workdir runs/small_scaling
    bash experiments/small_scaling/run.sh            (the sweep and both fits)

`runlocal` keeps two tiny runs of ~20 steps: a smoke test of the same path.
"""
from bmjax.defaults import base_config, parse_arg
from bmjax.scaling.sweep import axis, budget_steps, product

# name: (d_model, num_layers, num_heads, lr)
SIZES = {
    "7k": (24, 1, 2, 3e-3),
    "12k": (32, 1, 2, 3e-3),
    "28k": (48, 1, 2, 3e-3),
    "50k": (64, 1, 2, 3e-3),
    "78k": (80, 1, 2, 3e-3),
    "224k": (96, 2, 3, 3e-3),
    "397k": (128, 2, 4, 2e-3),
    "793k": (128, 4, 4, 2e-3),
    "1.6m": (256, 2, 4, 1e-3),
    "3.2m": (256, 4, 4, 1e-3),
}
BUDGETS = (5e11, 1e12, 3e12)
LOCAL_SIZES = {"50k": SIZES["50k"], "78k": SIZES["78k"]}
LOCAL_BUDGET = 2.5e10  # 20 and 13 steps of 32 x 128 tokens


def get_config(arg: str = ""):
    local = parse_arg(arg, runlocal=False)["runlocal"]
    c = base_config()
    c.model.name = "gpt"
    c.model.vocab_size = 320  # 259 byte-level ids, rounded up to a multiple of 64
    c.model.max_len = 128
    c.data.source = "builtin"
    c.data.tokenizer = "byte"
    c.data.eval_fraction = 0.01
    c.data.seq_len = 128
    c.data.batch_size = 32
    c.optim.schedule = "cosine"
    c.optim.b2 = 0.99
    c.train.steps_per_call = 1 if local else 10  # fewer host round trips for these tiny steps
    c.train.log_every = 5 if local else 100
    c.train.eval_every = 1_000_000  # only at the end: the runs are compared at their budget
    c.train.eval_steps = 0  # the whole held-out split
    c.train.ckpt_every = 5 if local else 1000
    c.train.sample_tokens = 0
    c.train.progress = False
    return c


def get_sweep(arg: str = ""):
    local = "runlocal" in arg.split(",")
    sizes, budgets = (LOCAL_SIZES, (LOCAL_BUDGET,)) if local else (SIZES, BUDGETS)
    runs = []
    for budget in budgets:
        for d_model, layers, heads, lr in sizes.values():
            overrides = {"model.d_model": d_model, "model.num_layers": layers, "model.num_heads": heads,
                         "optim.lr": lr, "optim.min_lr": round(lr / 10, 12)}
            config = get_config(arg)
            for key, value in overrides.items():
                section, name = key.split(".")
                config[section][name] = value
            warmup = max(1, budget_steps(config, "budget.flops", budget) // 20)  # 5% of the run
            runs += product(axis("budget.flops", [budget]), [dict(overrides, **{"optim.warmup_steps": warmup})])
    return runs
