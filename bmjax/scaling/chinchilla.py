"""Chinchilla's approach 3 (Hoffmann et al. 2022), fitted the way its replication did (Besiroglu et al. 2024,
"Chinchilla Scaling: A replication attempt").

The law: the loss of a model of N parameters trained on D tokens is

    L(N, D) = E + A / N^α + B / D^β.

It is fitted in log space with A = e^a, B = e^b, E = e^e, where log L(N, D) = LSE(a - α log N, b - β log D, e)
(LSE: log-sum-exp), by minimising over θ = (a, b, e, α, β) the SUM over runs i of

    Huber_δ(LSE(a - α log N_i, b - β log D_i, e) - log L_i),   δ = 1e-3,
    Huber_δ(r) = r^2 / 2 if |r| <= δ else δ (|r| - δ/2),

(`objective="huber"`, the default, Besiroglu et al.'s notebook: E 1.817236, A 477.842, B 2143.86, α 0.347313,
β 0.367183 on their 240 points) or the sum of |LSE(...) - log L_i| (`objective="lad"`, least absolute
deviation: what their published E 1.82, A 482.01, B 2085.43, α 0.3478, β 0.3658 are in effect, a Huber
*likelihood* whose fitted scale, ~4.7e-6, puts every residual on the linear arm; minimised here as the sum of
Huber_δ(r) / δ with δ = 1e-7, |r| to within 5e-8 per run),
with L-BFGS from every point of the grid α, β ∈ {0, 0.5, ..., 2}, e ∈ {-1, -0.5, ..., 1}, a, b ∈ {0, 5, ..., 25}
(4,500 starts), keeping the lowest. Hoffmann et al. averaged the Huber loss instead of summing it; the objective
is then ~1e-5 and an optimiser whose stopping test is absolute for small values (SciPy's L-BFGS-B default) stops
near its start. bmjax.scaling.multistart's test is relative (see there).

Confidence intervals: the fit is repeated on B bootstrap resamples of the runs (drawn with replacement; a
resample is a weight per run, its count, so all resamples are fitted together in one batch) and each quantity's
2.5th and 97.5th percentiles are reported. A resample starts from the full fit's optimum and from the grid points
whose full fits ended lowest (8 starts in all by default, not the 4,500: near the full optimum a resample's
optimum is found from there, and the full grid would cost 200 times the full fit).

Compute-optimal allocation under C = κ N^γ D (bmjax.scaling.allocation.ComputeModel; κ = 6, γ = 1 is
C = 6 N D): minimising L(N, C / (κ N^γ)) over N gives

    N_opt(C) = k_N C^a,   a = β / (α + γβ),   k_N = (α A / (γ β B κ^β))^(1 / (α + γβ)),
    D_opt(C) = C / (κ N_opt^γ) = k_D C^(1 - γa),   k_D = 1 / (κ k_N^γ);

with C = 6 N D, a = β / (α + β) and b = α / (α + β).
"""
import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from bmjax.scaling.allocation import SIX_ND, Allocation, ComputeModel
from bmjax.scaling.multistart import minimize_from_starts
from bmjax.scaling.points import NotEnoughPoints, Points, resample_indices

HUBER_DELTA = 1e-3
OBJECTIVES = ("huber", "lad")
LAD_DELTA = 1e-7  # |r| as Huber_δ(r) / δ: smooth for L-BFGS, within δ/2 of |r|
GRID = {  # the replication's starting grid, in the order of θ = (a, b, e, α, β)
    "a": np.arange(0.0, 30.0, 5.0),
    "b": np.arange(0.0, 30.0, 5.0),
    "e": np.arange(-1.0, 1.5, 0.5),
    "alpha": np.arange(0.0, 2.5, 0.5),
    "beta": np.arange(0.0, 2.5, 0.5),
}
PARAMETER_NAMES = ("E", "A", "B", "alpha", "beta", "a", "b")


def grid_starts() -> np.ndarray:
    """The 6 * 6 * 5 * 5 * 5 = 4,500 starting points, rows of (a, b, e, α, β)."""
    return np.array(list(itertools.product(*GRID.values())), dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class ChinchillaLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta."""
    E: float
    A: float
    B: float
    alpha: float
    beta: float

    @classmethod
    def from_theta(cls, theta) -> "ChinchillaLaw":
        a, b, e, alpha, beta = (float(v) for v in theta)
        return cls(np.exp(e), np.exp(a), np.exp(b), alpha, beta)

    def __call__(self, n, d):
        n, d = np.asarray(n, dtype=np.float64), np.asarray(d, dtype=np.float64)
        return self.E + self.A / n ** self.alpha + self.B / d ** self.beta

    def allocation(self, compute: ComputeModel = SIX_ND) -> Allocation:
        total = self.alpha + compute.gamma * self.beta
        a = self.beta / total
        k_n = (self.alpha * self.A / (compute.gamma * self.beta * self.B * compute.kappa ** self.beta)) ** (1 / total)
        return Allocation(a, 1.0 - compute.gamma * a, k_n, 1.0 / (compute.kappa * k_n ** compute.gamma))

    def values(self, compute: ComputeModel = SIX_ND) -> dict:
        """E, A, B, alpha, beta and the allocation's exponents a, b."""
        allocation = self.allocation(compute)
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta,
                "a": allocation.a, "b": allocation.b}


@functools.lru_cache(maxsize=None)
def huber_objective(delta: float = HUBER_DELTA, scale: float = 1.0):
    """θ, (log N, log D, log L, weights) -> scale Σ_i w_i Huber_δ(LSE(a - α log N_i, b - β log D_i, e) - log L_i)."""

    def objective(theta, data):
        log_n, log_d, log_l, weights = data
        a, b, e, alpha, beta = theta[0], theta[1], theta[2], theta[3], theta[4]
        terms = jnp.stack([a - alpha * log_n, b - beta * log_d, jnp.broadcast_to(e, log_n.shape)])
        r = jax.nn.logsumexp(terms, axis=0) - log_l
        size = jnp.abs(r)
        huber = jnp.where(size <= delta, 0.5 * r * r, delta * (size - 0.5 * delta))
        return scale * jnp.sum(weights * huber)

    return objective


def objective_function(objective: str = "huber", delta: float = HUBER_DELTA):
    """The fit's objective: the summed Huber loss, or (lad) the summed absolute residuals."""
    if objective == "lad":
        return huber_objective(LAD_DELTA, 1.0 / LAD_DELTA)
    if objective != "huber":
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return huber_objective(delta)


def _data(points: Points, weights=None):
    weights = np.ones(len(points)) if weights is None else weights
    return np.log(points.n), np.log(points.d), np.log(points.loss), weights


@dataclasses.dataclass(frozen=True)
class ChinchillaFit:
    law: ChinchillaLaw
    theta: np.ndarray  # (a, b, e, α, β) at the optimum
    objective: float  # the summed Huber loss there
    grad_norm: float  # the objective's gradient norm there
    start: np.ndarray  # the grid point the best run started from
    steps: int  # its L-BFGS iterations
    n_points: int
    ranked_starts: np.ndarray  # every start, best final objective first (bootstrap starts from the head)


def fit_chinchilla(points: Points, *, starts=None, objective: str = "huber",
                   delta: float = HUBER_DELTA) -> ChinchillaFit:
    """Approach 3 on all the points, from `starts` (default: the 4,500-point grid)."""
    if len(points) < 5:
        raise NotEnoughPoints(f"L(N, D) = E + A/N^alpha + B/D^beta has 5 parameters; got {len(points)} points")
    starts = grid_starts() if starts is None else np.asarray(starts, dtype=np.float64)
    result = minimize_from_starts(objective_function(objective, delta), starts, _data(points))
    values = np.where(np.isfinite(result.values), result.values, np.inf)
    order = np.argsort(values, kind="stable")
    best = order[0]
    return ChinchillaFit(ChinchillaLaw.from_theta(result.params[best]), result.params[best],
                         float(result.values[best]), float(result.grad_norms[best]), starts[best],
                         int(result.steps[best]), len(points), starts[order])


@dataclasses.dataclass(frozen=True)
class Bootstrap:
    samples: dict  # name -> [B] values of E, A, B, alpha, beta, a, b, one per resample
    ci: dict  # name -> (2.5th, 97.5th percentile)
    laws: list  # the resamples' fitted laws


def bootstrap_chinchilla(points: Points, fit: ChinchillaFit, resamples: int, *, seed: int = 0,
                         grid_starts_per_resample: int = 7, objective: str = "huber", delta: float = HUBER_DELTA,
                         compute: ComputeModel = SIX_ND) -> Bootstrap:
    """Percentile intervals from `resamples` refits on runs drawn with replacement (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n = len(points)
    counts = np.stack([np.bincount(resample_indices(rng, points), minlength=n) for _ in range(resamples)]).astype(float)
    starts = np.concatenate([fit.theta[None], fit.ranked_starts[:grid_starts_per_resample]])
    k = len(starts)
    log_n, log_d, log_l, _ = _data(points)
    tile = lambda x: np.broadcast_to(x, (resamples * k, n))  # noqa: E731
    data = (tile(log_n), tile(log_d), tile(log_l), np.repeat(counts, k, axis=0))
    result = minimize_from_starts(objective_function(objective, delta), np.tile(starts, (resamples, 1)), data,
                                  batched_data=True)
    values = np.where(np.isfinite(result.values), result.values, np.inf).reshape(resamples, k)
    best = result.params.reshape(resamples, k, -1)[np.arange(resamples), np.argmin(values, axis=1)]
    laws = [ChinchillaLaw.from_theta(theta) for theta in best]
    values = [law.values(compute) for law in laws]
    samples = {name: np.array([v[name] for v in values]) for name in PARAMETER_NAMES}
    ci = {name: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for name, v in samples.items()}
    return Bootstrap(samples, ci, laws)
