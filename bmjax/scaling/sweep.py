"""Sweeps: one config file, a list of overrides, one run (and one workdir) per override dict.

A sweep file is a config file with a second function, big_vision style:

    from bmjax.scaling.sweep import axis, product, zip

    def get_config(arg=""):          # the base config every run starts from
        ...
    def get_sweep(arg=""):           # a list of {dotted key: value}, one dict per run
        return product(axis("model.d_model", [64, 128]), axis("budget.flops", [1e13, 1e14]))

Token budgets. Besides config keys, a run's overrides may hold `budget.tokens` (D) or `budget.flops` (C in
counted training FLOPs: the C of the run's summary.json, D times the per-token FLOPs the trainer counts,
bmjax.models.flops.train_flops_per_token, so every run of one budget does the same real work; 6 N D with either
parameter count would give small models up to ~3x more). The budget becomes `train.steps` = the nearest whole
number of steps (at least one), so a run's counted C lands within half a step of it, and `optim.decay_steps`
the same, so a cosine ends where the run ends. `results.csv` carries each run's declared budget
(`budget_flops`, `budget_tokens`): `bmjax-scaling fit --runs` groups IsoFLOP levels by it.

Every run also gets `train.eval_steps=0` (one pass over the whole held-out set, the same for every run) unless
its overrides set it, `wandb.group` = the sweep's name and `wandb.tags` = its overrides as "key=value".
"""
import builtins
import csv
import dataclasses
import importlib.util
import inspect
import itertools
import json
import math
import pathlib
import re

from bmjax import workdir as workdir_lib
from bmjax.errors import ConfigError

BUDGET_KEYS = ("budget.tokens", "budget.flops")
RESULT_COLUMNS = ("run", "overrides", "budget_flops", "budget_tokens", "N", "N_total", "D", "C", "final_eval_loss",
                  "best_eval_loss", "bits_per_byte", "wall_time", "status")


def axis(key: str, values) -> list[dict]:
    """One swept key: [{key: v} for v in values]."""
    return [{key: value} for value in values]


def product(*axes: list[dict]) -> list[dict]:
    """Every combination: one dict per element of the Cartesian product, later axes varying fastest."""
    runs = []
    for combination in itertools.product(*axes):
        merged = {}
        for part in combination:
            merged.update(part)
        runs.append(merged)
    return runs


def zip(*axes: list[dict]) -> list[dict]:  # noqa: A001 (big_vision's name; builtins.zip is used below)
    """Element-wise: the i-th run merges the i-th dict of every axis; the axes must be equally long."""
    lengths = {len(a) for a in axes}
    if len(lengths) > 1:
        raise ValueError(f"zip: axes of different lengths {sorted(lengths)}")
    return [dict(kv for part in parts for kv in part.items()) for parts in builtins.zip(*axes)]


@dataclasses.dataclass(frozen=True)
class Run:
    index: int
    name: str  # its workdir's name, from its overrides
    overrides: dict  # as the sweep file gave them (budget keys included)
    args: dict  # the --config.KEY=VALUE overrides bmjax-train gets (budgets resolved, sweep defaults added)
    steps: int  # train.steps the run will train


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    config_arg: str  # what --config takes: path[:arg]
    runs: list


def load_module(path: str):
    spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_sweep(config_arg: str) -> Sweep:
    """Reads a sweep file (`path.py[:arg]`) and resolves every run; raises ConfigError on a bad override."""
    path, _, arg = config_arg.partition(":")
    if not pathlib.Path(path).is_file():
        raise ConfigError("--config", f"sweep file {path!r} does not exist")
    module = load_module(path)
    for function in ("get_config", "get_sweep"):
        if not hasattr(module, function):
            raise ConfigError("--config", f"{path} has no {function}(); a sweep file defines both")
    sweep = module.get_sweep(arg) if inspect.signature(module.get_sweep).parameters else module.get_sweep()
    if not sweep:
        raise ConfigError("--config", f"{path}: get_sweep() returned no runs")
    name = pathlib.Path(path).stem + (f"-{re.sub(r'[^A-Za-z0-9]+', '-', arg)}" if arg else "")
    overrides = [{key.removeprefix("config."): value for key, value in run.items()} for run in sweep]
    names = run_names(overrides)
    runs = []
    for i, (run_overrides, run_name) in enumerate(builtins.zip(overrides, names)):
        config = module.get_config(arg)
        try:
            args = resolve(config, run_overrides, name)
        except ConfigError as e:
            raise ConfigError(f"run {i} ({run_name}): {e.key}", e.message) from None
        runs.append(Run(i, run_name, run_overrides, args, int(config.train.steps)))
    return Sweep(name, config_arg, runs)


def resolve(config, overrides: dict, sweep_name: str) -> dict:
    """The bmjax-train overrides of one run: its own, budgets turned into steps, the sweep's defaults.

    Applies them to `config` (the sweep file's, locked) to check keys, types and values; raises ConfigError."""
    from bmjax import validate

    args = {"train.eval_steps": 0}
    args.update({k: v for k, v in overrides.items() if k not in BUDGET_KEYS})
    args["wandb.group"] = sweep_name
    args["wandb.tags"] = tuple(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in overrides.items())
    for key, value in args.items():
        set_key(config, key, value)
    budgets = [k for k in BUDGET_KEYS if k in overrides]
    if len(budgets) > 1:
        raise ConfigError("budget", "give budget.tokens or budget.flops, not both")
    if budgets:
        steps = budget_steps(config, budgets[0], overrides[budgets[0]])
        for key in ("train.steps", "optim.decay_steps"):
            args[key] = steps
            set_key(config, key, steps)
    for check in (validate.check_choices, validate.check_ranges, validate.check_steps, validate.check_task,
                  validate.check_shapes):
        check(config)
    return args


def budget_steps(config, key: str, value) -> int:
    """train.steps for a token (D) or FLOP budget (counted C, see the module docstring): the nearest whole
    number of steps.

    Not rounded to whole calls of train.steps_per_call: the trainer runs the steps left in one shorter call, and a
    short run (a large model at a small budget) rounded up to a whole call of 10 would read up to 10x its
    budget's tokens and leave its compute level."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(key, f"must be a positive number, got {value!r}")
    tokens = value
    if key == "budget.flops":
        tokens = value / counted_flops_per_token(config)
    return max(1, round(tokens / (int(config.data.batch_size) * int(config.data.seq_len))))


def counted_flops_per_token(config) -> float:
    """The training FLOPs per token the trainer counts for this config (its summary's C is D times this)."""
    from bmjax.models import flops, model_config
    from bmjax.train import tasks

    return flops.train_flops_per_token(model_config(config.model), int(config.data.seq_len),
                                       tasks.output_fraction(config))


def set_key(config, dotted: str, value):
    """config[dotted] = value on a locked ConfigDict; an unknown key or a value of the wrong type is a
    ConfigError naming the key."""
    *parents, leaf = dotted.split(".")
    node = config
    for i, part in enumerate(parents):
        if part not in node or not hasattr(node[part], "keys"):
            raise ConfigError(dotted, f"unknown config key {'.'.join(parents[:i + 1])!r}")
        node = node[part]
    if leaf not in node:
        raise ConfigError(dotted, "unknown config key")
    try:
        node[leaf] = tuple(value) if isinstance(value, list) else value
    except (TypeError, ValueError) as e:
        raise ConfigError(dotted, f"cannot take {value!r}: {e}") from None


def format_value(value) -> str:
    """A value as bmjax-train's --config.KEY=VALUE parses it back (floats exactly)."""
    if isinstance(value, (tuple, list)):
        return repr(tuple(value))
    return repr(value) if isinstance(value, float) else str(value)


def run_names(overrides: list[dict]) -> list[str]:
    """Workdir names from overrides: "d_model=64,flops=1e+13" (the last part of each key, or the whole key
    where two keys of the sweep share it); the same overrides always give the same name."""
    keys = {k for run in overrides for k in run}
    leaves = [k.split(".")[-1] for k in keys]
    short = {k: k.split(".")[-1] if leaves.count(k.split(".")[-1]) == 1 else k for k in keys}

    def show(value):
        text = f"{value:g}" if isinstance(value, float) else str(value)
        return re.sub(r"[^A-Za-z0-9.+=_-]+", "_", text).strip("_")

    names = [",".join(f"{short[k]}={show(v)}" for k, v in run.items()) or "base" for run in overrides]
    if len(set(names)) < len(names):
        raise ConfigError("get_sweep", "two runs have the same overrides")
    return names


def write_results(sweep: Sweep, workdir: pathlib.Path) -> int:
    """(Re)builds workdir/results.csv from the runs' summary.json files (runs without one are left out);
    returns the number of rows."""
    rows = []
    for run in sweep.runs:
        summary = workdir_lib.read_summary(workdir / run.name)
        if summary is None:
            continue
        row = {column: summary.get(column) for column in RESULT_COLUMNS}
        row.update(run=run.name, overrides=json.dumps(run.overrides, default=str),
                   budget_flops=run.overrides.get("budget.flops"), budget_tokens=run.overrides.get("budget.tokens"))
        row.update({k: v for k, v in summary.items() if k.startswith("eval/")})  # eval sets': fit any of them
        rows.append(row)
    eval_columns = sorted({k for row in rows for k in row if k.startswith("eval/")})
    tmp = workdir / "results.csv.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS + tuple(eval_columns))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(workdir / "results.csv")
    return len(rows)
