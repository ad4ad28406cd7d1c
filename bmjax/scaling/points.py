"""Training runs as points for a scaling-law fit: parameters N, tokens D, compute C, final loss L per run, and,
where the sweep declared one, the run's FLOP budget (its IsoFLOP level).

The convention, in one place: Chinchilla's laws count all parameters (embeddings included, as Hoffmann et al.'s
model sizes do); Kaplan's count non-embedding parameters. C is the training compute the runs report: from a
`bmjax-sweep` results.csv the counted FLOPs of each run's summary.json (D times bmjax.models.flops' per-token
FLOPs), the unit its `budget.flops` is met in; from any other CSV its FLOP column, or C = 6 N D when it gives
tokens only (and D = C / (6 N) when it gives FLOPs only). IsoFLOP levels are the declared budgets where the CSV
has them (results.csv's `budget_flops`), never a C recomputed from N and D.
"""
import csv
import dataclasses
import os

import numpy as np

from bmjax.errors import ConfigError

# bmjax-sweep's results.csv: which column holds what, per law.
RUNS_FILE = "results.csv"
RUNS_PARAMS_COL = {"chinchilla": "N_total", "kaplan": "N"}
RUNS_TOKENS_COL = "D"
RUNS_FLOPS_COL = "C"
RUNS_LOSS_COL = "final_eval_loss"
RUNS_BUDGET_COL = "budget_flops"


@dataclasses.dataclass(frozen=True)
class Points:
    n: np.ndarray  # parameters
    d: np.ndarray  # training tokens
    c: np.ndarray  # training FLOPs
    loss: np.ndarray
    budget: np.ndarray | None = None  # each run's declared FLOP budget (its IsoFLOP level), where known
    columns: dict = dataclasses.field(default_factory=dict, compare=False)  # what N, D, C, levels were read from

    def __len__(self) -> int:
        return len(self.loss)

    def subset(self, index) -> "Points":
        budget = None if self.budget is None else self.budget[index]
        return Points(self.n[index], self.d[index], self.c[index], self.loss[index], budget, self.columns)


def make_points(n, loss, *, tokens=None, flops=None, budget=None, columns=None) -> Points:
    """Points from N, L and D (tokens), C (FLOPs) or both; a missing one follows from C = 6 N D."""
    n = np.asarray(n, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if tokens is None and flops is None:
        raise ValueError("give tokens, flops or both")
    d = None if tokens is None else np.asarray(tokens, dtype=np.float64)
    c = None if flops is None else np.asarray(flops, dtype=np.float64)
    if c is None:
        c = 6.0 * n * d
    if d is None:
        d = c / (6.0 * n)
    budget = None if budget is None else np.asarray(budget, dtype=np.float64)
    return Points(n, d, c, loss, budget, dict(columns or {}))


def drop_highest_loss(points: Points, k: int) -> Points:
    """All but the k runs of highest loss (the Chinchilla replication drops 5 outliers, all at D/N < 0.41)."""
    if k <= 0:
        return points
    keep = np.sort(np.argsort(points.loss, kind="stable")[: max(len(points) - k, 0)])
    return points.subset(keep)


def drop_fewer_tokens(points: Points, min_tokens: float) -> Points:
    """The runs trained on at least min_tokens tokens: at a fixed batch, a run of a few steps is still in the
    optimizer's transient, a regime the law's B / D^beta does not describe (experiments/ladder/README.md)."""
    if min_tokens <= 0:
        return points
    return points.subset(np.flatnonzero(points.d >= min_tokens))


def _numbers(rows, name: str, option: str, path: str) -> np.ndarray:
    """A column as floats; a value that is not a number is a ConfigError naming its row."""
    values = []
    for i, row in enumerate(rows):
        try:
            values.append(float(row[name]))
        except (TypeError, ValueError):
            raise ConfigError(option, f"column {name!r} of {path!r}, row {i + 1} (line {row['__line__']}), holds "
                                      f"{row[name]!r}, not a number") from None
    return np.array(values, dtype=np.float64)


def read_csv(path: str, params_col: str, loss_col: str, *, tokens_col: str | None = None,
             flops_col: str | None = None, budget_col: str | None = None, flag: str = "--csv",
             only_finished: bool = False) -> Points:
    """Points from a CSV file's named columns; ConfigError (naming the flag, column and row) on bad input.

    `budget_col`: a column of declared FLOP budgets, used as the IsoFLOP levels when every row has one."""
    if not os.path.isfile(path):
        raise ConfigError(flag, f"file {path!r} does not exist")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [dict(row, __line__=reader.line_num) for row in reader]
        header = list(reader.fieldnames or [])
    if only_finished:
        if rows and "status" not in header:
            raise ConfigError(flag, f"{path!r} has no column 'status'")
        statuses = sorted({row["status"] for row in rows})
        counts = ", ".join(f"{sum(row['status'] == st for row in rows)} {st}" for st in statuses) or "no rows"
        rows = [row for row in rows if row["status"] == "finished"]
        if not rows:
            raise ConfigError(flag, f"{path!r} holds no finished runs yet ({counts}); nothing to fit")
    if not rows:
        raise ConfigError(flag, f"{path!r} has no rows")
    named = {"--params_col": params_col, "--loss_col": loss_col}
    if tokens_col is not None:
        named["--tokens_col"] = tokens_col
    if flops_col is not None:
        named["--flops_col"] = flops_col
    for option, name in named.items():
        if name not in header:
            raise ConfigError(option, f"column {name!r} is not in {path!r} (columns: {', '.join(header)})")
    columns = {option: _numbers(rows, name, option, path) for option, name in named.items()}
    for option, values in columns.items():
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            row = int(np.argmax(bad))
            raise ConfigError(option, f"column {named[option]!r} must be positive and finite; row {row + 1} (line "
                                      f"{rows[row]['__line__']}) holds {values[row]!r}")
    budget, levels = None, None
    if budget_col is not None and budget_col in header:
        missing = [i + 1 for i, row in enumerate(rows) if row[budget_col] in ("", None)]
        if 0 < len(missing) < len(rows):
            raise ConfigError(flag, f"IsoFLOP levels cannot be grouped: column {budget_col!r} of {path!r} is empty "
                                    f"in row(s) {', '.join(map(str, missing[:5]))}{' ...' if len(missing) > 5 else ''}"
                                    f" and set in the others")
        if not missing:
            budget = _numbers(rows, budget_col, flag, path)
            levels = budget_col
    described = {"N": params_col, "D": tokens_col or f"{flops_col} / (6 {params_col})",
                 "C": flops_col or f"6 {params_col} {tokens_col}", "levels": levels}
    return make_points(columns["--params_col"], columns["--loss_col"], tokens=columns.get("--tokens_col"),
                       flops=columns.get("--flops_col"), budget=budget, columns=described)


def read_runs(directory: str, law: str, *, params_col: str | None = None, tokens_col: str | None = None,
              flops_col: str | None = None, loss_col: str | None = None) -> Points:
    """Points from DIR/results.csv of `bmjax-sweep`: its finished runs only, N per the law (module docstring),
    D and the counted C as the runs report them, levels by declared budget; each column overridable."""
    if not os.path.isdir(directory):
        raise ConfigError("--runs", f"directory {directory!r} does not exist")
    if tokens_col is None and flops_col is None:
        tokens_col, flops_col = RUNS_TOKENS_COL, RUNS_FLOPS_COL
    return read_csv(os.path.join(directory, RUNS_FILE), params_col or RUNS_PARAMS_COL[law],
                    loss_col or RUNS_LOSS_COL, tokens_col=tokens_col, flops_col=flops_col,
                    budget_col=RUNS_BUDGET_COL, flag="--runs", only_finished=True)


def resample_indices(rng, points: "Points") -> np.ndarray:
    """One bootstrap resample, as indices of runs drawn with replacement (every bootstrap here draws these).

    Where the runs carry declared budgets, each budget's runs are drawn within that budget: the sweep's design
    (how many runs each IsoFLOP level holds) stays as it was run, as a stratified bootstrap keeps it. Drawing over
    all runs instead leaves some levels with 2 or 3 runs and others with twice their own: on synthetic IsoFLOP
    sweeps its 95% intervals on a were ~1.75x the spread of a across data sets (tests/test_scaling_bootstrap.py)."""
    if points.budget is None:
        return rng.integers(0, len(points), len(points))
    return np.concatenate([rng.choice(runs, len(runs)) for runs in
                           (np.flatnonzero(points.budget == b) for b in np.unique(points.budget))])


class NotEnoughPoints(ValueError):
    """The data cannot determine the fit asked for (too few runs, levels or sizes)."""
