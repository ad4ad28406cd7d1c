"""μP's one tuning run (issue 22): a learning-rate sweep of the base-width model of configs/sweeps/small_scaling.py
(byte-level one-layer GPT, 2 heads, builtin corpus) under model.parametrization=mup, at one FLOP budget. Its best
rate is the one base learning rate every width of a μP sweep inherits (configs/sweeps/mup_sweep.py).

    bmjax-sweep --config configs/sweeps/mup_base_lr.py:base_width=32,budget=1.5e12 --workdir runs/mup_base_lr
    (results.csv: final_eval_loss by optim.lr)

Arguments: base_width (model.d_model = model.mup_base_width of every run; default 32, the middle of small_scaling's
widths), budget (counted training FLOPs; default 1.5e12, small_scaling's middle budget). Seven rates, a factor of 2
apart around small_scaling's 3e-3, each with min_lr = lr / 10 and a 5% warmup as small_scaling's runs.
output_mult_grid: every rate at each of OUTPUT_MULTS (model.mup_output_mult, the readout multiplier μP tunes at the
base width with the rate; experiments/mup/README.md measures what it is worth), 35 runs; then
pass the best pair to mup_sweep.py (lr=, output_mult=). `runlocal`: two tiny runs of the same path.
"""
import pathlib

from bmjax.defaults import parse_arg
from bmjax.scaling.sweep import axis, budget_steps, load_module, product, zip

SMALL_SCALING = load_module(str(pathlib.Path(__file__).with_name("small_scaling.py")))
LRS = (7.5e-4, 1.5e-3, 3e-3, 6e-3, 1.2e-2, 2.4e-2, 4.8e-2)
OUTPUT_MULTS = (1.0, 2.0, 4.0, 8.0, 16.0)


def _args(arg: str) -> dict:
    return parse_arg(arg, base_width=32, budget=1.5e12, output_mult_grid=False, runlocal=False)


def get_config(arg: str = ""):
    args = _args(arg)
    c = SMALL_SCALING.get_config("runlocal" if args["runlocal"] else "")
    c.model.d_model = args["base_width"]
    c.model.parametrization = "mup"
    c.model.mup_base_width = args["base_width"]
    return c


def get_sweep(arg: str = ""):
    args = _args(arg)
    lrs, budget = (LRS[2:4], 5e10) if args["runlocal"] else (LRS, args["budget"])
    warmup = max(1, budget_steps(get_config(arg), "budget.flops", budget) // 20)  # 5% of the run
    rates = zip(axis("optim.lr", list(lrs)), axis("optim.min_lr", [lr / 10 for lr in lrs]))
    output_mults = axis("model.mup_output_mult", list(OUTPUT_MULTS) if args["output_mult_grid"] else [1.0])
    return product(axis("budget.flops", [budget]), axis("optim.warmup_steps", [warmup]), output_mults, rates)
