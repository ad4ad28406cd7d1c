"""The centred ladder's pieces (experiments/ladder/README.md): its forecast run is `bmjax-scaling plan`'s printed
command verbatim, warmup included; plan's --min_layers keeps the family off 1-layer shapes; fit --min_tokens fits
exactly the runs trained on at least that many tokens."""
import json
import types

import numpy as np
import pytest

from bmjax.cli.scaling import main
from bmjax.scaling import allocation as allocation_lib
from bmjax.scaling import plan as plan_lib
from bmjax.scaling import sweep as sweep_lib
from cli_runs import REPO
from scaling_data import isoflop_runs, write_csv

LADDER = str(REPO / "configs/sweeps/ladder.py")
SECTIONS = ("model", "data", "optim", "train")


def command_config(command: list[str]):
    """The config a printed bmjax-train command trains: its file with its --config.KEY=VALUE overrides."""
    config = plan_lib.load_base_config(command[command.index("--config") + 1])
    for arg in command:
        if arg.startswith("--config."):
            key, value = arg.removeprefix("--config.").split("=", 1)
            section, leaf = key.split(".")
            sweep_lib.set_key(config, key, type(config[section][leaf])(value))
    return config


def stub_fit(n_opt: float, d_opt: float, c: float):
    """A fit whose allocation puts N_opt, D_opt at budget c (plan_run reads only these fields without a law)."""
    allocation = allocation_lib.Allocation(a=0.5, b=0.5, k_n=n_opt / c ** 0.5, k_d=d_opt / c ** 0.5)
    return types.SimpleNamespace(allocation=allocation, law=None, samples=None,
                                 report={"max_C": c / 10, "compute": "C = 6 N D"})


def test_the_centred_forecast_run_is_plans_command_verbatim(tmp_path):
    arg = "scale=centred"
    module = sweep_lib.load_module(LADDER)
    scale = module.SCALES["centred"]
    c_star = scale["forecast"]
    plan = plan_lib.plan_run(stub_fit(4e4, 1.44e7, c_star), "chinchilla", c_star,
                             plan_lib.load_base_config(f"{LADDER}:{arg}"), scale["rule"])
    command = plan_lib.train_command(f"{LADDER}:{arg}", str(tmp_path / "forecast"), plan["overrides"])
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    center, *neighbours = module.forecast_runs(arg, str(plan_file))
    forecast = module.get_config(arg)
    sweep_lib.resolve(forecast, center, "forecast")
    planned = command_config(command)
    for section in SECTIONS:
        assert forecast[section].to_dict() == planned[section].to_dict(), section
    # ... and its warmup is every ladder run's: the ladder sets none of its own
    assert planned.optim.warmup_steps == scale["warmup"] == 10
    ladder = sweep_lib.load_sweep(f"{LADDER}:{arg}")
    assert all("optim.warmup_steps" not in run.args for run in ladder.runs)
    assert neighbours == [] and center["model.num_layers"] >= 2


def test_the_session_forecast_keeps_its_per_size_warmup(tmp_path):
    """scale=session's rule (10% of the steps of a size's smallest budget) stays as its committed results ran."""
    module = sweep_lib.load_module(LADDER)
    plan = plan_lib.plan_run(stub_fit(3.4e4, 1.09e7, 3e12), "chinchilla", 3e12,
                             plan_lib.load_base_config(f"{LADDER}:scale=session"), module.SCALES["session"]["rule"])
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    center, *neighbours = module.forecast_runs("scale=session", str(plan_file))
    assert len(neighbours) == 2 and all(run["optim.warmup_steps"] >= 1 for run in neighbours)
    assert (center["model.num_layers"], center["model.d_model"]) == (3, 24)  # the session's planned shape
    assert center["optim.warmup_steps"] == 1 and center["train.steps"] == round(1.09e7 / 4096)


@pytest.mark.parametrize("min_layers, layers", [(1, {1}), (2, {2, 3})])
def test_min_layers_keeps_plans_shape_off_one_layer(min_layers, layers):
    # 1e4 parameters: the aspect-ratio rule's depth is 1 (1 x 16, 10,480, aspect 16 exactly)
    base = plan_lib.load_base_config(f"{LADDER}:scale=centred")
    shape, n = plan_lib.nearest_shape(base, 1e4, "total", plan_lib.ShapeRule(16, 4, min_layers=min_layers))
    assert shape["model.num_layers"] in layers and abs(n / 1e4 - 1) <= plan_lib.COUNT_TOLERANCE


FIT = ["--params_col", "params", "--flops_col", "flops", "--loss_col", "loss", "--law", "chinchilla",
       "--start_stride", "45", "--json"]


def test_min_tokens_fits_exactly_the_runs_of_at_least_that_many_tokens(tmp_path, capsys):
    points = isoflop_runs()
    floor = float(np.quantile(points.d, 0.3))
    kept = points.subset(np.flatnonzero(points.d >= floor))
    assert 0 < len(kept) < len(points)
    fits = []
    for csv, extra in ((write_csv(tmp_path / "all.csv", points), ["--min_tokens", repr(floor)]),
                       (write_csv(tmp_path / "kept.csv", kept), []), (tmp_path / "all.csv", [])):
        assert main(["fit", "--csv", str(csv), *FIT, *extra]) == 0
        fits.append(json.loads(capsys.readouterr().out))
    filtered, by_hand, everything = fits
    for key in ("E", "A", "B", "alpha", "beta"):
        assert filtered[key] == by_hand[key], key
    assert filtered["alpha"] != everything["alpha"]  # the floor changed what was fitted
