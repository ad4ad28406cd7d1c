"""A real IsoFLOP sweep on a 2-core CPU (experiments/small_scaling): byte-level one-layer GPTs of eight widths, from
~10K to ~155K parameters in all (3K to 112K non-embedding), at three budgets of 6e11, 1.5e12 and 4e12 counted
training FLOPs (the C of summary.json: D times the per-token FLOPs of bmjax.models.flops, embeddings' output
projection and attention included), on the builtin corpus (~31M bytes of Python's standard library).

Each budget trains the five widths centred on its expected optimum (from the previous sweep's fit), and the two
widths nearest that optimum a second time with train.seed=1, so the table shows seed noise where the minimum is
read: 3 x (5 + 2) = 21 runs, about 22 minutes on a quiet 2-core CPU. Each run is scored once, at its end, on one
pass over the held-out files (1% of the files by name hash, ~225K bytes).

    python -m bmjax.cli.sweep --config configs/sweeps/small_scaling.py --workdir runs/small_scaling
    bash experiments/small_scaling/run.sh            (the sweep, the fits, the tables and plots)

`runlocal` keeps two tiny runs of ~20 steps: a smoke test of the same path.
"""
from bmjax.defaults import base_config, parse_arg
from bmjax.scaling.sweep import axis, budget_steps, product

WIDTHS = (16, 24, 32, 40, 48, 64, 80, 96)  # d_model of a one-layer GPT with 2 heads
# budget (counted FLOPs): (the five widths trained, the two trained again with seed 1)
BUDGETS = {
    6e11: ((16, 24, 32, 40, 48), (32, 40)),
    1.5e12: ((24, 32, 40, 48, 64), (40, 48)),
    4e12: ((40, 48, 64, 80, 96), (48, 64)),
}
LR = 3e-3
LOCAL_BUDGETS = {5e10: ((64, 80), ())}  # 23 and 16 steps of 32 x 128 tokens


def get_config(arg: str = ""):
    local = parse_arg(arg, runlocal=False)["runlocal"]
    c = base_config()
    c.model.name = "gpt"
    c.model.vocab_size = 320  # 259 byte-level ids, rounded up to a multiple of 64
    c.model.max_len = 128
    c.model.num_layers = 1
    c.model.num_heads = 2
    c.data.source = "builtin"
    c.data.tokenizer = "byte"
    c.data.eval_fraction = 0.01
    c.data.seq_len = 128
    c.data.batch_size = 32
    c.optim.schedule = "cosine"
    c.optim.lr = LR
    c.optim.min_lr = LR / 10
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
    runs = []
    for budget, (widths, replicated) in (LOCAL_BUDGETS if local else BUDGETS).items():
        for seed, seed_widths in ((0, widths), (1, replicated)):
            for width in seed_widths:
                config = get_config(arg)
                config.model.d_model = width
                warmup = max(1, budget_steps(config, "budget.flops", budget) // 20)  # 5% of the run
                runs += product(axis("budget.flops", [budget]), [{"model.d_model": width, "train.seed": seed,
                                                                  "optim.warmup_steps": warmup}])
    return runs
