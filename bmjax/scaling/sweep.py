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

Branching sweeps (a ladder: OLMo's and Hägele et al. 2024's cooldowns from one stable run). An override dict that
holds `ladder.flops` or `ladder.tokens`, a list of budgets, stands for one run per budget trained as one
warmup-stable-decay parent and cooldown branches (the config's optim.schedule must be "wsd"):

- the parent is the largest budget's run (train.steps = T_max; its cooldown is its own last
  optim.cooldown_fraction), with `train.ckpt_steps` keeping a checkpoint at every branch point;
- each smaller budget's run T_k branches from the parent (train.branch_from=PARENT@s_k) at s_k, the step its
  own cooldown starts, T_k - round(cooldown_fraction T_k) (bmjax.train.optim.cooldown_start; rounded down to a
  whole train.steps_per_call), and trains to train.steps = T_k: bit for bit the run trained straight to T_k.

`load_sweep` lists parents before their branches (dependency order); results.csv gets one row per budget with
its `parent` (the parent run's name; empty for a parent or an independent run) and `branch_step`. `cost` gives
the steps and counted FLOPs trained, against the same grid trained as independent runs.
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
LADDER_KEYS = {"ladder.tokens": "budget.tokens", "ladder.flops": "budget.flops"}  # -> each budget's own key
# parent and branch_step come last so that results.csv files written before ladders existed keep their columns' places.
RESULT_COLUMNS = ("run", "overrides", "budget_flops", "budget_tokens", "N", "N_total", "D", "C", "final_eval_loss",
                  "best_eval_loss", "bits_per_byte", "wall_time", "status", "parent", "branch_step")


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
    flops_per_step: float = 0.0  # counted training FLOPs of one step
    parent: str | None = None  # a branch: its parent run's name (train.branch_from is added at launch)
    branch_step: int | None = None  # a branch: the parent's step it starts from


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
    overrides, ladders = expand_ladders([{key.removeprefix("config."): value for key, value in run.items()}
                                         for run in sweep])
    names = run_names(overrides)
    runs = []
    for i, (run_overrides, run_name, ladder) in enumerate(builtins.zip(overrides, names, ladders)):
        config = module.get_config(arg)
        try:
            args = resolve(config, run_overrides, name)
            per_step = counted_flops_per_token(config) * int(config.data.batch_size) * int(config.data.seq_len)
            runs.append(Run(i, run_name, run_overrides, args, int(config.train.steps), per_step))
            if ladder is not None:
                runs[-1] = link_branch(runs, ladder, config)
        except ConfigError as e:
            raise ConfigError(f"run {i} ({run_name}): {e.key}", e.message) from None
    return Sweep(name, config_arg, runs)


def expand_ladders(overrides: list[dict]) -> tuple[list[dict], list]:
    """Each override dict with a ladder key becomes one dict per budget, the largest (the parent) first, then the
    others from the smallest up; returns them with, per dict, None (an independent run) or (its ladder's first
    index, whether it is the parent)."""
    expanded, ladders = [], []
    for run in overrides:
        keys = [key for key in LADDER_KEYS if key in run]
        if not keys:
            expanded.append(run)
            ladders.append(None)
            continue
        if len(keys) > 1 or any(key in run for key in BUDGET_KEYS):
            raise ConfigError(keys[0], "give one ladder (ladder.tokens or ladder.flops) and no budget.* beside it")
        budgets = run[keys[0]]
        if not (isinstance(budgets, (list, tuple)) and budgets):
            raise ConfigError(keys[0], f"must be a non-empty list of budgets, got {budgets!r}")
        if len(set(budgets)) < len(budgets):
            raise ConfigError(keys[0], f"lists a budget twice: {list(budgets)}")
        rest = {k: v for k, v in run.items() if k != keys[0]}
        first = len(expanded)
        ordered = sorted(budgets, reverse=True)
        for j, budget in enumerate(ordered[:1] + ordered[:0:-1]):
            expanded.append({**rest, LADDER_KEYS[keys[0]]: budget})
            ladders.append((first, j == 0))
    return expanded, ladders


def link_branch(runs: list, ladder: tuple, config) -> Run:
    """The newest run of `runs` as its ladder makes it: the parent keeps a checkpoint at each branch point (set as
    its branches are linked), a branch starts at its own cooldown's first step."""
    first, is_parent = ladder
    run = runs[-1]
    if config.optim.schedule != "wsd":
        raise ConfigError("optim.schedule", f"a ladder needs warmup-stable-decay (wsd) runs; got "
                                            f"{config.optim.schedule!r}")
    if is_parent:
        return dataclasses.replace(run, args={**run.args, "train.ckpt_steps": ()})
    parent = runs[first]
    step = branch_step(config)
    if step < 1:
        raise ConfigError("ladder", f"the budget of {run.name} is {run.steps} steps: its cooldown starts at step 0, "
                                    "so it has no stable part to branch from")
    ckpt_steps = tuple(sorted({*parent.args["train.ckpt_steps"], step}))
    runs[first] = dataclasses.replace(parent, args={**parent.args, "train.ckpt_steps": ckpt_steps})
    return dataclasses.replace(run, parent=parent.name, branch_step=step)


def branch_step(config) -> int:
    """The branch point of a run of train.steps T: its cooldown's first step (bmjax.train.optim.cooldown_start,
    which scaling/ may not import: tests/test_sweep_branching.py pins the two together), rounded down to a whole
    call of train.steps_per_call (the trainer checkpoints between calls)."""
    steps = int(config.train.steps)
    end = int(config.optim.decay_steps or steps)
    start = max(int(config.optim.warmup_steps), end - round(float(config.optim.cooldown_fraction) * end))
    k = int(config.train.steps_per_call)
    return k * (min(start, steps - 1) // k)


def cost(sweep: Sweep) -> dict:
    """Steps and counted FLOPs the sweep trains (a branch trains only its steps past the branch point) and the same
    grid trained as independent runs."""
    trained = [run.steps - (run.branch_step or 0) for run in sweep.runs]
    return {"steps": sum(trained), "flops": sum(s * run.flops_per_step for s, run in builtins.zip(trained, sweep.runs)),
            "independent_steps": sum(run.steps for run in sweep.runs),
            "independent_flops": sum(run.steps * run.flops_per_step for run in sweep.runs)}


def describe_cost(sweep: Sweep) -> str:
    c = cost(sweep)
    return (f"{len(sweep.runs)} runs, {c['steps']} steps ({c['flops']:.3g} counted FLOPs) trained; as independent "
            f"runs {c['independent_steps']} steps ({c['independent_flops']:.3g} FLOPs), "
            f"{c['independent_flops'] / c['flops']:.2f}x")


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
    from bmjax import data as data_lib
    from bmjax.data.mlm import max_predictions
    from bmjax.models import flops, model_config

    seq_len = int(config.data.seq_len)
    # An unset model.vocab_size counts as the trainer resolves it (the tokenizer's), so C is the run's.
    model = data_lib.with_model_vocab_size(config).model
    return flops.train_flops_per_token(model_config(model), seq_len,
                                       flops.output_fraction(config.data.task, seq_len, max_predictions(seq_len)))


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
        row.update(run=run.name, overrides=json.dumps(run.overrides, default=str), parent=run.parent,
                   branch_step=run.branch_step,
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
