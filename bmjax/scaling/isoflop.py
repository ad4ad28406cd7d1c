"""Chinchilla's approaches 1 and 2 (Hoffmann et al. 2022, section 3): the compute-optimal model size read off
the runs themselves, with no loss law assumed.

Runs are first grouped into compute levels: sorted by C, a level starts at its smallest C and takes every run
within `width` decades of it (an IsoFLOP sweep's budgets, which differ by a factor of 2 or more, each become one
level even when each run's counted C differs slightly from its budget).

Approach 1, the loss envelope over compute. Hoffmann et al. took, at each FLOP count, the run whose training
curve was lowest. With one final loss per run, the envelope is the lowest-loss run of each compute level, kept
where it improves on every cheaper level's (the frontier descends). Its N and D against C give

    log N_opt = a log C + log k_N,      log D_opt = b log C + log k_D        (least squares).

Approach 2, IsoFLOP profiles. Within a level of at least 3 model sizes, the loss is fitted by a parabola in log N,

    L ≈ p2 (log N)^2 + p1 log N + p0,      log N_opt = -p1 / (2 p2),

kept when it opens upwards (p2 > 0) and its minimum lies inside the sizes the level tried (an extrapolated
minimum says nothing about the data). With C the level's geometric-mean compute, D_opt = C / (6 N_opt), and
a, b follow by the same regressions. Since D_opt = C / (6 N_opt), b = 1 - a exactly in both approaches.

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

DEFAULT_LEVEL_WIDTH = 0.1  # decades of compute per level


def compute_levels(c, width: float = DEFAULT_LEVEL_WIDTH) -> list[np.ndarray]:
    """Indices of the runs in each compute level, cheapest level first."""
    log_c = np.log10(np.asarray(c, dtype=np.float64))
    order = np.argsort(log_c, kind="stable")
    levels, current, start = [], [], None
    for i in order:
        if current and log_c[i] > start + width:
            levels.append(np.array(current))
            current = []
        if not current:
            start = log_c[i]
        current.append(i)
    if current:
        levels.append(np.array(current))
    return levels


@dataclasses.dataclass(frozen=True)
class EnvelopeFit:
    """Approach 1: the runs on the loss envelope and the allocation regressed on them."""
    frontier: np.ndarray  # indices of the envelope's runs, cheapest first
    allocation: Allocation


def fit_envelope(points: Points, width: float = DEFAULT_LEVEL_WIDTH) -> EnvelopeFit:
    frontier, best_so_far = [], np.inf
    for level in compute_levels(points.c, width):
        best = level[np.argmin(points.loss[level])]
        if points.loss[best] < best_so_far:
            frontier.append(best)
            best_so_far = points.loss[best]
    frontier = np.array(frontier, dtype=int)
    if len(frontier) < 2:
        raise NotEnoughPoints(f"approach 1 needs the envelope to hold at least 2 compute levels; it holds "
                              f"{len(frontier)} (levels are {width} decades of compute wide)")
    allocation = regress_allocation(points.c[frontier], points.n[frontier], points.d[frontier])
    return EnvelopeFit(frontier, allocation)


@dataclasses.dataclass(frozen=True)
class IsoFlopProfile:
    """One compute level's parabola in log N."""
    runs: np.ndarray  # indices of its runs
    c: float  # the level's geometric-mean compute
    coeffs: np.ndarray  # (p2, p1, p0): L ≈ p2 x^2 + p1 x + p0 with x = log N
    n_opt: float | None  # the parabola's minimum, None when it is unusable (see module docstring)


@dataclasses.dataclass(frozen=True)
class IsoFlopFit:
    """Approach 2: every level's profile and the allocation regressed on the usable minima."""
    profiles: list[IsoFlopProfile]
    allocation: Allocation

    @property
    def minima(self) -> tuple[np.ndarray, np.ndarray]:
        used = [p for p in self.profiles if p.n_opt is not None]
        return np.array([p.c for p in used]), np.array([p.n_opt for p in used])


def isoflop_profiles(points: Points, width: float = DEFAULT_LEVEL_WIDTH,
                     window: float | None = None) -> list[IsoFlopProfile]:
    profiles = []
    for level in compute_levels(points.c, width):
        if window is not None:
            best = level[np.argmin(points.loss[level])]
            level = level[np.abs(np.log10(points.n[level] / points.n[best])) <= window * (1 + 1e-9)]
        log_n = np.log(points.n[level])
        if len(np.unique(log_n)) < 3:
            continue
        coeffs = np.polyfit(log_n, points.loss[level], 2)
        n_opt = None
        if coeffs[0] > 0:
            x_opt = -coeffs[1] / (2 * coeffs[0])
            if log_n.min() <= x_opt <= log_n.max():
                n_opt = float(np.exp(x_opt))
        c = float(np.exp(np.mean(np.log(points.c[level]))))
        profiles.append(IsoFlopProfile(level, c, coeffs, n_opt))
    return profiles


def fit_isoflop(points: Points, width: float = DEFAULT_LEVEL_WIDTH, window: float | None = None) -> IsoFlopFit:
    profiles = isoflop_profiles(points, width, window)
    used = [p for p in profiles if p.n_opt is not None]
    if len(used) < 2:
        within = "" if window is None else f" within {window:g} decades of N of its lowest loss"
        raise NotEnoughPoints(f"approach 2 needs at least 2 compute levels with 3 or more model sizes{within} and "
                              f"a minimum inside them; found {len(used)} of {len(profiles)} levels with 3+ sizes "
                              f"(levels are {width} decades of compute wide)")
    c = np.array([p.c for p in used])
    n_opt = np.array([p.n_opt for p in used])
    return IsoFlopFit(profiles, regress_allocation(c, n_opt, c / (6.0 * n_opt)))
