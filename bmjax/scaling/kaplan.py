"""Kaplan et al. 2020, "Scaling Laws for Neural Language Models": power laws without an irreducible term.

    L(N)    = (N_c / N)^α_N                      loss of a model of N (non-embedding) parameters, data unlimited
    L(D)    = (D_c / D)^α_D                      loss after D tokens, model unlimited
    L(N, D) = [(N_c / N)^(α_N / α_D) + D_c / D]^α_D     (their equation 1.5)
    L(C)    = (C_c / C)^α_C                      loss on the compute frontier

L(N), L(D) and L(C) are straight lines in log-log space, fitted by least squares of log L on log N (log D,
log C): log L = α log X_c - α log X. Each is fitted to the runs that the other resources do not limit: the
lowest loss at each model size for L(N), at each token count for L(D), and the loss envelope over compute levels
(see bmjax.scaling.isoflop) for L(C).

A one-variable law is refused (with the reason, instead of numbers) when the data cannot identify it: L(N)
when no model size was trained at 2 or more token counts (in an IsoFLOP sweep each N has one D per budget only
by accident, and the lowest loss per N then mixes N's effect with D's), L(D) likewise, and any fit whose
exponent comes out negative (loss growing with the resource).

L(N, D) is fitted to every run by least squares on log L (scipy's trust-region least_squares, from a few starts,
the best kept) in the parameters (log N_c, log D_c, α_N, α_D).

Its compute-optimal allocation: with D = C / (6N), minimising the bracket p = α_N / α_D,
N_c^p N^-p + 6 D_c N / C, over N gives N^(p+1) = p N_c^p C / (6 D_c), so

    N_opt = k_N C^a,   a = α_D / (α_N + α_D),   k_N = (p N_c^p / (6 D_c))^(1/(p+1)),
    D_opt = C / (6 N_opt) = k_D C^b,   b = α_N / (α_N + α_D),   k_D = 1 / (6 k_N).
"""
import dataclasses
import itertools

import numpy as np
from scipy.optimize import least_squares

from bmjax.scaling.allocation import Allocation
from bmjax.scaling.isoflop import DEFAULT_LEVEL_WIDTH, fit_envelope
from bmjax.scaling.points import NotEnoughPoints, Points


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    """L(X) = (X_c / X)^alpha."""
    x_c: float
    alpha: float

    def __call__(self, x):
        return (self.x_c / np.asarray(x, dtype=np.float64)) ** self.alpha


def fit_power_law(x, loss, what: str = "points") -> PowerLaw:
    """Least squares of log L on log X."""
    x, loss = np.asarray(x, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    if len(np.unique(x)) < 2:
        raise NotEnoughPoints(f"a power law in {what} needs at least 2 distinct values; got {len(np.unique(x))}")
    slope, intercept = np.polyfit(np.log(x), np.log(loss), 1)
    alpha = -slope
    return PowerLaw(float(np.exp(intercept / alpha)), float(alpha))


def lowest_loss_per_value(x, loss, rtol: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """For each distinct x (values within a relative rtol are one), the lowest loss seen there."""
    order = np.argsort(x, kind="stable")
    xs, ls = [], []
    for i in order:
        if xs and x[i] <= xs[-1] * (1 + rtol):
            ls[-1] = min(ls[-1], loss[i])
        else:
            xs.append(x[i])
            ls.append(loss[i])
    return np.array(xs), np.array(ls)


@dataclasses.dataclass(frozen=True)
class KaplanLaw:
    """L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D."""
    n_c: float
    d_c: float
    alpha_n: float
    alpha_d: float

    def __call__(self, n, d):
        n, d = np.asarray(n, dtype=np.float64), np.asarray(d, dtype=np.float64)
        return ((self.n_c / n) ** (self.alpha_n / self.alpha_d) + self.d_c / d) ** self.alpha_d

    def allocation(self) -> Allocation:
        p = self.alpha_n / self.alpha_d
        k_n = (p * self.n_c ** p / (6.0 * self.d_c)) ** (1.0 / (p + 1.0))
        total = self.alpha_n + self.alpha_d
        return Allocation(self.alpha_d / total, self.alpha_n / total, k_n, 1.0 / (6.0 * k_n))


def _log_law(theta, log_n, log_d):
    log_n_c, log_d_c, alpha_n, alpha_d = theta
    return alpha_d * np.logaddexp((alpha_n / alpha_d) * (log_n_c - log_n), log_d_c - log_d)


# Starts for L(N, D): exponents around Kaplan's (0.076, 0.095) and well away from them, scales over many decades.
_STARTS = list(itertools.product([np.log(1e10), np.log(1e14)], [np.log(1e10), np.log(1e14)],
                                 [0.05, 0.3], [0.05, 0.3]))


def fit_kaplan_nd(points: Points) -> tuple[KaplanLaw, float]:
    """L(N, D) by least squares on log L; returns the law and its sum of squared log residuals."""
    if len(points) < 4:
        raise NotEnoughPoints(f"Kaplan's L(N, D) has 4 parameters; got {len(points)} points")
    log_n, log_d, log_l = np.log(points.n), np.log(points.d), np.log(points.loss)
    best = None
    for start in _STARTS:
        result = least_squares(lambda t: _log_law(t, log_n, log_d) - log_l, start, xtol=1e-14, ftol=1e-14,
                               gtol=1e-14, bounds=([-np.inf, -np.inf, 1e-4, 1e-4], np.inf), max_nfev=5000)
        if best is None or result.cost < best.cost:
            best = result
    log_n_c, log_d_c, alpha_n, alpha_d = best.x
    return KaplanLaw(float(np.exp(log_n_c)), float(np.exp(log_d_c)), float(alpha_n), float(alpha_d)), float(
        2 * best.cost)


@dataclasses.dataclass(frozen=True)
class KaplanFit:
    law: KaplanLaw  # L(N, D) on every run
    squared_error: float  # its sum of squared log-loss residuals
    one_variable: dict  # "L_N", "L_D", "L_C" -> {"X_c": ..., "alpha": ...} or {"refused": why}
    frontier: np.ndarray  # indices of the envelope's runs


def _one_variable(x, other, loss, what: str, other_name: str) -> dict:
    """L(X) on the lowest loss per X, or why the data cannot identify it."""
    xs, _ = lowest_loss_per_value(x, loss)
    repeated = sum(len(lowest_loss_per_value(other[np.isclose(x, v, rtol=1e-3)],
                                             loss[np.isclose(x, v, rtol=1e-3)])[0]) >= 2 for v in xs)
    if repeated == 0:
        return {"refused": f"no {what} was trained at 2 or more values of {other_name}: the lowest loss per "
                           f"{what} mixes {what}'s effect with {other_name}'s"}
    law = fit_power_law(*lowest_loss_per_value(x, loss), what)
    if law.alpha <= 0:
        return {"refused": f"the fitted exponent is {law.alpha:.3g} <= 0 (loss growing with {what})"}
    return {f"{what}_c": law.x_c, f"alpha_{what}": law.alpha}


def fit_kaplan(points: Points, width: float = DEFAULT_LEVEL_WIDTH) -> KaplanFit:
    law, squared_error = fit_kaplan_nd(points)
    frontier = fit_envelope(points, width).frontier
    l_of_c = fit_power_law(points.c[frontier], points.loss[frontier], "C")
    one_variable = {
        "L_N": _one_variable(points.n, points.d, points.loss, "N", "D"),
        "L_D": _one_variable(points.d, points.n, points.loss, "D", "N"),
        "L_C": ({"C_c": l_of_c.x_c, "alpha_C": l_of_c.alpha} if l_of_c.alpha > 0 else
                {"refused": f"the fitted exponent is {l_of_c.alpha:.3g} <= 0 (loss growing with C)"}),
    }
    return KaplanFit(law, squared_error, one_variable, frontier)
