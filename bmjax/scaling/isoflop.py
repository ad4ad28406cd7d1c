"""Chinchilla's approaches 1 and 2 (Hoffmann et al. 2022, section 3): the compute-optimal model size read off
the runs themselves, with no loss law assumed.

Runs are first grouped into compute levels. Where the runs carry their declared FLOP budgets (a bmjax-sweep
results.csv), a level is one budget and its C is that budget. Otherwise, sorted by C, a level starts at its
smallest C and takes every run within `width` decades of it, and its C is the geometric mean of its runs' C.

Approach 1, the loss envelope over compute. Hoffmann et al. took, at each FLOP count, the run whose training
curve was lowest. With one final loss per run, the envelope is the lowest-loss run of each compute level, kept
where it improves on every cheaper level's (the frontier descends). Its N and D against C give

    log N_opt = a log C + log k_N,      log D_opt = b log C + log k_D        (least squares).

Approach 2, IsoFLOP profiles. Within a level of at least 3 model sizes, the loss is fitted by a parabola in log N,

    L ≈ p2 (log N)^2 + p1 log N + p0,      log N_opt = -p1 / (2 p2),

kept when it opens upwards (p2 > 0) and its minimum lies inside the sizes the level tried (an extrapolated
minimum says nothing about the data). D_opt is read off the level's own runs at N_opt (log D is regressed on
log N within the level, a straight line: D = C / (6N) for 6ND compute, nearly so for counted FLOPs), so the C
in both regressions is the C of the data, and b = 1 - a only where C = 6 N D. Approach 2 needs 3 usable levels:
a straight line through 2 minima always fits.

Each fit keeps a per-level table (C, runs, distinct sizes, the chosen N and D, kept or why not) for its report.

The parabola is the profile's second-order expansion around its minimum. A sweep whose sizes run far past the
minimum on one side (a profile that rises steeply and nearly linearly in log N there) pulls a parabola fitted to
all of them off the minimum, or turns it over. `window` (decades of N) fits each level on the sizes within that
distance of its lowest-loss run only; None fits all of them, as Hoffmann et al. did with sizes chosen around
each budget's optimum.
"""
import dataclasses

import numpy as np

from bmjax.scaling.allocation import Allocation, regress_allocation
from bmjax.scaling.points import NotEnoughPoints, Points

DEFAULT_LEVEL_WIDTH = 0.1  # decades of compute per level, where the runs carry no budgets
MIN_ISOFLOP_LEVELS = 3


@dataclasses.dataclass(frozen=True)
class Level:
    runs: np.ndarray  # indices of its runs
    c: float  # its compute: the declared budget, or the geometric mean of its runs' C


def compute_levels(points: Points, width: float = DEFAULT_LEVEL_WIDTH) -> list[Level]:
    """The runs' compute levels, cheapest first: by declared budget where known, else by C (module docstring)."""
    if points.budget is not None:
        return [Level(np.flatnonzero(points.budget == b), float(b)) for b in np.unique(points.budget)]
    log_c = np.log10(points.c)
    order = np.argsort(log_c, kind="stable")
    groups, current, start = [], [], None
    for i in order:
        if current and log_c[i] > start + width:
            groups.append(np.array(current))
            current = []
        if not current:
            start = log_c[i]
        current.append(i)
    if current:
        groups.append(np.array(current))
    return [Level(g, float(np.exp(np.mean(np.log(points.c[g]))))) for g in groups]


def describe_levels(points: Points, width: float = DEFAULT_LEVEL_WIDTH) -> str:
    """How the levels were formed, for the fit's report."""
    if points.budget is not None:
        return f"by declared budget ({points.columns.get('levels') or 'budget'})"
    return f"by C, {width:g} decades wide (the runs carry no declared budgets)"


def _level_row(level: Level, points: Points) -> dict:
    return {"C": level.c, "runs": int(len(level.runs)), "sizes": int(len(np.unique(points.n[level.runs])))}


@dataclasses.dataclass(frozen=True)
class EnvelopeFit:
    """Approach 1: the runs on the loss envelope and the allocation regressed on them."""
    frontier: np.ndarray  # indices of the envelope's runs, cheapest first
    allocation: Allocation
    levels: list  # one dict per level: C, runs, sizes, N, D, loss of its best run, status


def fit_envelope(points: Points, width: float = DEFAULT_LEVEL_WIDTH) -> EnvelopeFit:
    frontier, c_front, rows, best_so_far = [], [], [], np.inf
    for level in compute_levels(points, width):
        best = level.runs[np.argmin(points.loss[level.runs])]
        row = dict(_level_row(level, points), N=float(points.n[best]), D=float(points.d[best]),
                   loss=float(points.loss[best]))
        if points.loss[best] < best_so_far:
            frontier.append(best)
            c_front.append(level.c)
            best_so_far = points.loss[best]
            row["status"] = "kept"
        else:
            row["status"] = "not below a cheaper level's best loss"
        rows.append(row)
    frontier = np.array(frontier, dtype=int)
    if len(frontier) < 2:
        raise NotEnoughPoints(f"approach 1 needs the envelope to hold at least 2 compute levels; it holds "
                              f"{len(frontier)} of {len(rows)} levels (formed {describe_levels(points, width)})")
    allocation = regress_allocation(np.array(c_front), points.n[frontier], points.d[frontier])
    return EnvelopeFit(frontier, allocation, rows)


@dataclasses.dataclass(frozen=True)
class IsoFlopProfile:
    """One compute level's parabola in log N."""
    runs: np.ndarray  # indices of its runs (within the window)
    c: float  # the level's compute
    coeffs: np.ndarray | None  # (p2, p1, p0): L ≈ p2 x^2 + p1 x + p0 with x = log N; None with < 3 sizes
    n_opt: float | None  # the parabola's minimum, None when it is unusable (see module docstring)
    d_opt: float | None  # the level's D at n_opt
    status: str  # "kept" or why not


@dataclasses.dataclass(frozen=True)
class IsoFlopFit:
    """Approach 2: every level's profile and the allocation regressed on the usable minima."""
    profiles: list[IsoFlopProfile]
    allocation: Allocation

    @property
    def minima(self) -> tuple[np.ndarray, np.ndarray]:
        used = [p for p in self.profiles if p.n_opt is not None]
        return np.array([p.c for p in used]), np.array([p.n_opt for p in used])

    def levels(self, points: Points) -> list[dict]:
        return [{"C": p.c, "runs": int(len(p.runs)), "sizes": int(len(np.unique(points.n[p.runs]))),
                 "N": p.n_opt, "D": p.d_opt, "status": p.status} for p in self.profiles]


def isoflop_profiles(points: Points, width: float = DEFAULT_LEVEL_WIDTH,
                     window: float | None = None) -> list[IsoFlopProfile]:
    profiles = []
    for level in compute_levels(points, width):
        runs = level.runs
        if window is not None:
            best = runs[np.argmin(points.loss[runs])]
            runs = runs[np.abs(np.log10(points.n[runs] / points.n[best])) <= window * (1 + 1e-9)]
        log_n = np.log(points.n[runs])
        if len(np.unique(log_n)) < 3:
            within = "" if window is None else f" within {window:g} decades of its lowest loss"
            profiles.append(IsoFlopProfile(runs, level.c, None, None, None,
                                           f"{len(np.unique(log_n))} size(s){within}; a parabola needs 3"))
            continue
        coeffs = np.polyfit(log_n, points.loss[runs], 2)
        n_opt = d_opt = None
        if not coeffs[0] > 0:
            status = "the parabola opens downwards"
        else:
            x_opt = -coeffs[1] / (2 * coeffs[0])
            if log_n.min() <= x_opt <= log_n.max():
                n_opt = float(np.exp(x_opt))
                d_opt = float(np.exp(np.polyval(np.polyfit(log_n, np.log(points.d[runs]), 1), x_opt)))
                status = "kept"
            else:
                status = "its minimum lies outside the sizes tried"
        profiles.append(IsoFlopProfile(runs, level.c, coeffs, n_opt, d_opt, status))
    return profiles


def fit_isoflop(points: Points, width: float = DEFAULT_LEVEL_WIDTH, window: float | None = None) -> IsoFlopFit:
    profiles = isoflop_profiles(points, width, window)
    used = [p for p in profiles if p.n_opt is not None]
    if len(used) < MIN_ISOFLOP_LEVELS:
        reasons = "; ".join(f"C={p.c:.3g}: {p.status}" for p in profiles if p.n_opt is None)
        raise NotEnoughPoints(f"approach 2 needs at least {MIN_ISOFLOP_LEVELS} compute levels with an IsoFLOP "
                              f"minimum inside their sizes; {len(used)} of {len(profiles)} levels (formed "
                              f"{describe_levels(points, width)}) have one" + (f" ({reasons})" if reasons else ""))
    c = np.array([p.c for p in used])
    return IsoFlopFit(profiles, regress_allocation(c, np.array([p.n_opt for p in used]),
                                                   np.array([p.d_opt for p in used])))
