"""Synthetic training runs drawn from known scaling laws, for the fit tests."""
import csv

import numpy as np

from bmjax.scaling.points import make_points

# A Chinchilla law with alpha != beta, so that a = beta / (alpha + beta) = 0.4688 is not 1/2.
TRUE_CHINCHILLA = {"E": 1.7, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.30}


def isoflop_runs(law=TRUE_CHINCHILLA, budgets=(1e18, 3e18, 1e19, 3e19, 1e20), sizes_per_budget=9,
                 noise=0.002, seed=0):
    """An IsoFLOP sweep: per budget, model sizes spread over 1.5 decades around the law's optimum, D = C / 6N;
    losses with multiplicative log-normal noise of relative size `noise`."""
    rng = np.random.default_rng(seed)
    total = law["alpha"] + law["beta"]
    g = (law["alpha"] * law["A"] / (law["beta"] * law["B"])) ** (1 / total)
    n, c = [], []
    for budget in budgets:
        n_opt = g * (budget / 6) ** (law["beta"] / total)
        n.extend(n_opt * np.geomspace(0.18, 5.6, sizes_per_budget))
        c.extend([budget] * sizes_per_budget)
    n, c = np.array(n), np.array(c)
    d = c / (6 * n)
    loss = law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]
    return make_points(n, loss * np.exp(noise * rng.standard_normal(len(n))), flops=c)


TRUE_KAPLAN = {"n_c": 8.8e13, "d_c": 5.4e13, "alpha_n": 0.076, "alpha_d": 0.095}


def kaplan_runs(law=TRUE_KAPLAN, noise=0.003, seed=0):
    """A 7 x 7 grid of N in [1e6, 1e9] and D in [1e8, 1e11] with Kaplan's L(N, D) and log-normal noise."""
    rng = np.random.default_rng(seed)
    n, d = (g.ravel() for g in np.meshgrid(np.geomspace(1e6, 1e9, 7), np.geomspace(1e8, 1e11, 7)))
    p = law["alpha_n"] / law["alpha_d"]
    loss = ((law["n_c"] / n) ** p + law["d_c"] / d) ** law["alpha_d"]
    return make_points(n, loss * np.exp(noise * rng.standard_normal(len(n))), tokens=d)


def write_csv(path, points, *, flops=True, extra_rows=()):
    """The points as a CSV with columns params, tokens or flops, loss."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["params", "flops" if flops else "tokens", "loss"])
        for n, d, c, l in zip(points.n, points.d, points.c, points.loss):
            w.writerow([repr(float(n)), repr(float(c if flops else d)), repr(float(l))])
        for row in extra_rows:
            w.writerow(row)
    return path
