"""Minimise one small differentiable objective from thousands of starting points at once.

A multi-start fit (Chinchilla's approach 3 starts L-BFGS from 4,500 grid points) is thousands of independent
5-parameter problems. SciPy solves them one after another and pays Python's overhead on every iteration of
every start (experiments/chinchilla/README.md times it against this module). Here all starts advance together: one L-BFGS iteration
is a handful of NumPy operations on [starts, P] arrays and one jitted, vmapped JAX call (float64) that evaluates
the objective and its gradient at every start. (`jax.vmap` over optax's L-BFGS was tried first:
its zoom line search, a nest of while-loops over scalars, made 256 starts capped at 300 iterations take longer
on CPU than this loop takes for 256 starts run to convergence.)

The algorithm is L-BFGS (Nocedal and Wright, Algorithm 7.4: the two-loop recursion over the last `memory`
pairs s = x' - x, y = g' - g, with the initial inverse Hessian (s.y / y.y) I) with a backtracking line search
that halves the step until the Armijo condition f(x + t d) <= f(x) + 1e-4 t g.d holds. A pair is stored only
when s.y > 0, which keeps the inverse-Hessian estimate positive definite without a Wolfe line search.

Each start stops when one iteration lowers its objective by at most `ftol * |f|`, when its gradient's norm falls
below `gtol`, or when the line search finds no decrease. The decrease test is relative to |f| alone, unlike
SciPy's default (2.2e-9 * max(|f|, 1)), so a small objective (a sum of Huber losses with delta = 1e-3 is ~1e-3)
does not look converged at its starting point. Stopped starts leave the batch, which is padded to a power of
two so that few shapes are compiled.
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class MultiStartResult(NamedTuple):
    params: np.ndarray  # [starts, P] the point each start stopped at
    values: np.ndarray  # [starts] the objective there
    grad_norms: np.ndarray  # [starts] the gradient's Euclidean norm there
    steps: np.ndarray  # [starts] L-BFGS iterations each start took


_ARMIJO = 1e-4
_MAX_HALVINGS = 40


def minimize_from_starts(objective: Callable, starts, data, *, batched_data: bool = False, max_steps: int = 500,
                         ftol: float = 1e-12, gtol: float = 1e-12, memory: int = 10) -> MultiStartResult:
    """L-BFGS on `objective(params, data) -> scalar` (written in jax.numpy) from every row of `starts` [S, P].

    `data` is a tuple of arrays given to every start or, with `batched_data=True`, a tuple of arrays with a
    leading axis of length S: start i sees row i of each (bootstrap resamples fitted together).
    """
    x = np.array(starts, dtype=np.float64)
    num, dim = x.shape
    data = tuple(np.asarray(d, dtype=np.float64) for d in data)
    evaluate = _batched_value_and_grad(objective, batched_data)
    with jax.enable_x64(True):
        shared = tuple(jnp.asarray(d) for d in data)  # converted once: the same for every call

    def value_and_grad(points, rows):
        # Pad to a power of two (at least 64) so that the shrinking batch compiles a few shapes only.
        size = max(64, 1 << (len(rows) - 1).bit_length())
        pad = np.concatenate([rows, np.full(size - len(rows), rows[0])])
        padded = np.concatenate([points, np.repeat(points[:1], size - len(rows), axis=0)])
        f, g = evaluate(padded, tuple(d[pad] for d in data) if batched_data else shared)
        return f[: len(rows)], g[: len(rows)]

    everyone = np.arange(num)
    f, g = (np.array(v) for v in value_and_grad(x, everyone))
    s_mem = np.zeros((num, memory, dim))
    y_mem = np.zeros((num, memory, dim))
    rho = np.zeros((num, memory))  # 0 marks an empty slot; the newest pair is at index memory - 1
    steps = np.zeros(num, dtype=np.int64)
    active = everyone[np.isfinite(f)]

    for _ in range(max_steps):
        if len(active) == 0:
            break
        xa, fa, ga = x[active], f[active], g[active]
        d = -_two_loop(ga, s_mem[active], y_mem[active], rho[active])
        slope = np.sum(d * ga, axis=1)
        # A non-descent direction (rare, after a poor curvature pair) falls back to steepest descent.
        bad = ~(slope < 0)
        d[bad] = -ga[bad]
        slope[bad] = -np.sum(ga[bad] ** 2, axis=1)
        t = np.ones(len(active))
        first = rho[active, -1] == 0  # no curvature yet: a first step of length at most 1
        t[first] = np.minimum(1.0, 1.0 / np.linalg.norm(d[first], axis=1))
        x_new, f_new, g_new = xa.copy(), fa.copy(), ga.copy()
        pending = np.arange(len(active))
        for _ in range(_MAX_HALVINGS):
            trial = xa[pending] + t[pending, None] * d[pending]
            f_try, g_try = value_and_grad(trial, active[pending])
            ok = np.isfinite(f_try) & (f_try <= fa[pending] + _ARMIJO * t[pending] * slope[pending])
            accepted = pending[ok]
            x_new[accepted], f_new[accepted], g_new[accepted] = trial[ok], f_try[ok], g_try[ok]
            pending = pending[~ok]
            if len(pending) == 0:
                break
            t[pending] *= 0.5
        moved = np.ones(len(active), dtype=bool)
        moved[pending] = False  # the line search found no decrease: the start has stopped
        s, y = x_new - xa, g_new - ga
        sy = np.sum(s * y, axis=1)
        store = moved & (sy > 1e-300)
        rows = active[store]
        s_mem[rows] = np.roll(s_mem[rows], -1, axis=1)
        y_mem[rows] = np.roll(y_mem[rows], -1, axis=1)
        rho[rows] = np.roll(rho[rows], -1, axis=1)
        s_mem[rows, -1], y_mem[rows, -1], rho[rows, -1] = s[store], y[store], 1.0 / sy[store]
        x[active], f[active], g[active] = x_new, f_new, g_new
        steps[active] += moved
        done = ~moved | (fa - f_new <= ftol * np.abs(fa)) | (np.linalg.norm(g_new, axis=1) <= gtol)
        active = active[~done]
    return MultiStartResult(x, f, np.linalg.norm(g, axis=1), steps)


def _two_loop(g, s_mem, y_mem, rho):
    """The L-BFGS direction H g for every start: two passes over its stored pairs (empty slots have rho = 0)."""
    q = g.copy()
    memory = rho.shape[1]
    alphas = np.zeros_like(rho)
    for i in reversed(range(memory)):
        alphas[:, i] = rho[:, i] * np.sum(s_mem[:, i] * q, axis=1)
        q -= alphas[:, i, None] * y_mem[:, i]
    newest_y = y_mem[:, -1]
    yy = np.sum(newest_y * newest_y, axis=1)
    gamma = np.where(rho[:, -1] > 0, 1.0 / np.maximum(rho[:, -1] * yy, 1e-300), 1.0)
    r = gamma[:, None] * q
    for i in range(memory):
        beta = rho[:, i] * np.sum(y_mem[:, i] * r, axis=1)
        r += s_mem[:, i] * (alphas[:, i] - beta)[:, None]
    return r


_COMPILED: dict = {}


def _batched_value_and_grad(objective, batched_data):
    """objective's value and gradient at [S, P] points, in float64, jitted once per objective."""
    key = (objective, batched_data)
    if key not in _COMPILED:
        vg = jax.vmap(jax.value_and_grad(objective), in_axes=(0, 0 if batched_data else None))
        jitted = jax.jit(vg)

        def run(points, data):
            with jax.enable_x64(True):
                f, g = jitted(jnp.asarray(points), tuple(jnp.asarray(d) for d in data))
                return np.array(f), np.array(g)

        _COMPILED[key] = run
    return _COMPILED[key]
