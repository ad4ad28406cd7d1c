"""Training runs as points for a scaling-law fit: parameters N, tokens D, compute C and final loss L per run.

Read from any CSV (named columns) or from a sweep's `results.csv` (written by `bmjax-sweep`). Compute and tokens
are tied by the usual approximation C = 6 N D: given tokens, C = 6 N D; given FLOPs, D = C / (6 N).
"""
import csv
import dataclasses
import os

import numpy as np

from bmjax.errors import ConfigError

# bmjax-sweep's results.csv: which column holds what, per law. Chinchilla counts all parameters (embeddings
# included, as Hoffmann et al. did); Kaplan counts non-embedding parameters.
RUNS_FILE = "results.csv"
RUNS_PARAMS_COL = {"chinchilla": "N_total", "kaplan": "N"}
RUNS_TOKENS_COL = "D"
RUNS_LOSS_COL = "final_eval_loss"


@dataclasses.dataclass(frozen=True)
class Points:
    n: np.ndarray  # parameters
    d: np.ndarray  # training tokens
    c: np.ndarray  # training FLOPs
    loss: np.ndarray

    def __len__(self) -> int:
        return len(self.loss)

    def subset(self, index) -> "Points":
        return Points(self.n[index], self.d[index], self.c[index], self.loss[index])


def make_points(n, loss, *, tokens=None, flops=None) -> Points:
    """Points from N, L and either D (tokens) or C (FLOPs); the other follows from C = 6 N D."""
    n = np.asarray(n, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if (tokens is None) == (flops is None):
        raise ValueError("give exactly one of tokens and flops")
    if tokens is not None:
        d = np.asarray(tokens, dtype=np.float64)
        c = 6.0 * n * d
    else:
        c = np.asarray(flops, dtype=np.float64)
        d = c / (6.0 * n)
    return Points(n, d, c, loss)


def drop_highest_loss(points: Points, k: int) -> Points:
    """All but the k runs of highest loss (the Chinchilla replication drops 5 outliers, all at D/N < 0.41)."""
    if k <= 0:
        return points
    keep = np.sort(np.argsort(points.loss, kind="stable")[: max(len(points) - k, 0)])
    return points.subset(keep)


def read_csv(path: str, params_col: str, loss_col: str, *, tokens_col: str | None = None,
             flops_col: str | None = None, flag: str = "--csv", only_finished: bool = False) -> Points:
    """Points from a CSV file's named columns; ConfigError (naming the flag or column) on bad input."""
    if not os.path.isfile(path):
        raise ConfigError(flag, f"file {path!r} does not exist")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
        header = list(rows[0].keys()) if rows else []
    if only_finished:
        if rows and "status" not in header:
            raise ConfigError(flag, f"{path!r} has no column 'status'")
        rows = [row for row in rows if row["status"] == "finished"]
    named = {"--params-col": params_col, "--loss-col": loss_col}
    named["--tokens-col" if tokens_col is not None else "--flops-col"] = tokens_col or flops_col
    columns = {}
    for option, name in named.items():
        if rows and name not in header:
            raise ConfigError(option, f"column {name!r} is not in {path!r} (columns: {', '.join(header)})")
        try:
            columns[option] = np.array([float(row[name]) for row in rows], dtype=np.float64)
        except ValueError as e:
            raise ConfigError(option, f"column {name!r} holds a value that is not a number ({e})") from None
    for option, values in columns.items():
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            raise ConfigError(option, f"column {named[option]!r} must be positive and finite; "
                                      f"row {int(np.argmax(bad)) + 1} holds {values[bad][0]!r}")
    extra = {"tokens": columns["--tokens-col"]} if tokens_col is not None else {"flops": columns["--flops-col"]}
    return make_points(columns["--params-col"], columns["--loss-col"], **extra)


def read_runs(directory: str, law: str, *, params_col: str | None = None, tokens_col: str | None = None,
              flops_col: str | None = None, loss_col: str | None = None) -> Points:
    """Points from DIR/results.csv of `bmjax-sweep`: its finished runs only; each column overridable."""
    if not os.path.isdir(directory):
        raise ConfigError("--runs", f"directory {directory!r} does not exist")
    if tokens_col is None and flops_col is None:
        tokens_col = RUNS_TOKENS_COL
    return read_csv(os.path.join(directory, RUNS_FILE), params_col or RUNS_PARAMS_COL[law],
                    loss_col or RUNS_LOSS_COL, tokens_col=tokens_col, flops_col=flops_col, flag="--runs",
                    only_finished=True)


class NotEnoughPoints(ValueError):
    """The data cannot determine the fit asked for (too few runs, levels or sizes)."""
