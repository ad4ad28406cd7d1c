"""Another sweep file's runs under μP with one base learning rate (issue 22 item 5): every run gets
model.parametrization=mup, model.mup_base_width and the base rate (from configs/sweeps/mup_base_lr.py), in place of
the per-size rates the wrapped sweep sets by hand. The wrapped file is not changed; its own arguments pass through.

    bmjax-sweep --config configs/sweeps/mup_sweep.py:sweep=small_scaling,base_width=32,lr=6e-3 --workdir runs/mup_iso
    bmjax-sweep --config configs/sweeps/mup_sweep.py:sweep=chinchilla_isoflop,base_width=256,lr=3e-3,train=T.txt,...

Arguments: sweep (a file name in configs/sweeps/, without .py), base_width (a width every run's num_heads divides),
lr (the base learning rate; min_lr keeps the wrapped config's, or a run's own, min_lr / lr ratio); optional
output_mult (model.mup_output_mult, the base model's readout multiplier, tuned with the rate by mup_base_lr.py's
output_mult_grid; default 1.0); the rest go to the wrapped file.
"""
import pathlib

from bmjax.errors import ConfigError
from bmjax.scaling.sweep import load_module

OWN = ("sweep", "base_width", "lr")
OPTIONAL = {"output_mult": "1.0"}


def _split(arg: str) -> tuple[dict, str]:
    """(this file's arguments, the wrapped file's argument string)."""
    own, rest = dict(OPTIONAL), []
    for part in filter(None, (p.strip() for p in arg.split(","))):
        name, _, value = part.partition("=")
        (own.__setitem__(name, value) if name in OWN or name in OPTIONAL else rest.append(part))
    missing = [name for name in OWN if name not in own]
    if missing:
        raise ConfigError("--config", f"configs/sweeps/mup_sweep.py needs {', '.join(f'{m}=' for m in missing)} "
                                      f"(e.g. sweep=small_scaling,base_width=32,lr=6e-3)")
    return own, ",".join(rest)


def _wrapped(own: dict):
    path = pathlib.Path(__file__).with_name(f"{own['sweep']}.py")
    if not path.is_file() or path.name == pathlib.Path(__file__).name:
        raise ConfigError("--config", f"sweep={own['sweep']!r}: no sweep file {path}")
    return load_module(str(path))


def get_config(arg: str = ""):
    own, rest = _split(arg)
    c = _wrapped(own).get_config(rest)
    lr = float(own["lr"])
    c.optim.min_lr = c.optim.min_lr * lr / c.optim.lr if c.optim.lr else 0.0
    c.optim.lr = lr
    c.model.parametrization = "mup"
    c.model.mup_base_width = int(own["base_width"])
    c.model.mup_output_mult = float(own["output_mult"])
    return c


def get_sweep(arg: str = ""):
    """The wrapped runs with their learning-rate overrides (per-size rates) replaced by the one base rate; a run's
    min_lr keeps its own ratio to its lr."""
    own, rest = _split(arg)
    base = get_config(arg)
    runs = []
    for run in _wrapped(own).get_sweep(rest):
        run = {key.removeprefix("config."): value for key, value in run.items()}
        if "optim.lr" in run:
            ratio = (run["optim.min_lr"] / run["optim.lr"] if "optim.min_lr" in run
                     else base.optim.min_lr / base.optim.lr)
            run["optim.lr"] = base.optim.lr
            run["optim.min_lr"] = round(base.optim.lr * ratio, 12)
        runs.append(run)
    return runs
