"""Compute-optimal allocation: how a FLOP budget C splits into parameters N and tokens D.

Every Chinchilla-style fit ends in two power laws,

    N_opt(C) = k_N C^a,      D_opt(C) = k_D C^b,

where C is the compute of the runs the fit used. Approaches 1 and 2 read a, b and k_N, k_D off regressions of
log N_opt and log D_opt on log C; approach 3 derives them from the fitted loss law and the runs' relation
between C and (N, D), `ComputeModel`: C = 6 N D where the runs' C is 6 N D (a CSV of tokens), otherwise
C = kappa N^gamma D fitted to their C / D (counted FLOPs per token grow a little slower than 6 N_total at small
sizes, where attention and the output projection weigh more). With C = 6 N D, a + b = 1 and k_N k_D = 1/6.
"""
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Allocation:
    a: float  # N_opt ∝ C^a
    b: float  # D_opt ∝ C^b
    k_n: float  # N_opt = k_n C^a
    k_d: float  # D_opt = k_d C^b

    def n_opt(self, c):
        return self.k_n * np.asarray(c, dtype=np.float64) ** self.a

    def d_opt(self, c):
        return self.k_d * np.asarray(c, dtype=np.float64) ** self.b


@dataclasses.dataclass(frozen=True)
class ComputeModel:
    """C = kappa N^gamma D: training FLOPs from parameters and tokens."""
    kappa: float = 6.0
    gamma: float = 1.0
    max_error: float = 0.0  # its largest relative error on the runs it was fitted to

    def tokens(self, n, c):
        return np.asarray(c, dtype=np.float64) / (self.kappa * np.asarray(n, dtype=np.float64) ** self.gamma)

    def describe(self) -> str:
        if self.kappa == 6.0 and self.gamma == 1.0:
            return "C = 6 N D"
        return (f"C = {self.kappa:.4g} N^{self.gamma:.4f} D (fitted to the runs' C / D; largest error "
                f"{100 * self.max_error:.1f}%)")


SIX_ND = ComputeModel()


def fit_compute_model(n, d, c) -> ComputeModel:
    """6 N D when the runs' C is 6 N D (to rounding), else kappa, gamma by least squares of log(C/D) on log N."""
    n, d, c = (np.asarray(v, dtype=np.float64) for v in (n, d, c))
    if np.all(np.abs(c / (6.0 * n * d) - 1) < 1e-9):
        return SIX_ND
    log_n = np.log(n)
    if len(np.unique(log_n)) < 2:
        kappa, gamma = float(np.exp(np.mean(np.log(c / (d * n))))), 1.0
    else:
        gamma, log_kappa = np.polyfit(log_n, np.log(c / d), 1)
        kappa, gamma = float(np.exp(log_kappa)), float(gamma)
    error = float(np.max(np.abs(kappa * n ** gamma * d / c - 1)))
    return ComputeModel(kappa, gamma, error)


def regress_allocation(c, n_opt, d_opt) -> Allocation:
    """a, b (and k_N, k_D) by least squares of log N_opt and log D_opt on log C."""
    log_c = np.log(np.asarray(c, dtype=np.float64))
    a, log_kn = np.polyfit(log_c, np.log(n_opt), 1)
    b, log_kd = np.polyfit(log_c, np.log(d_opt), 1)
    return Allocation(float(a), float(b), float(np.exp(log_kn)), float(np.exp(log_kd)))


def default_budgets(max_c: float) -> list[float]:
    """The data's largest C and 1, 2 and 3 decades past it."""
    return [float(max_c) * 10.0 ** k for k in range(4)]


def allocation_table(allocation: Allocation, budgets, max_c: float, predict_loss=None, samples=None) -> list[dict]:
    """One row per budget: C, decades past the data's largest C, N_opt, D_opt, tokens per parameter, the
    predicted loss where a law is given, and 95% intervals where `samples` (one (Allocation, predict_loss or
    None) per bootstrap resample) are given."""
    rows = []
    for c in budgets:
        n, d = float(allocation.n_opt(c)), float(allocation.d_opt(c))
        row = {"C": float(c), "decades_past_data": max(0.0, float(np.log10(c / max_c))), "N_opt": n, "D_opt": d,
               "D_per_N": d / n}
        if predict_loss is not None:
            row["loss"] = float(predict_loss(n, d))
        if samples:
            ns = np.array([float(al.n_opt(c)) for al, _ in samples])
            ds = np.array([float(al.d_opt(c)) for al, _ in samples])
            row["ci"] = {"N_opt": _interval(ns), "D_opt": _interval(ds)}
            if predict_loss is not None:
                row["ci"]["loss"] = _interval([float(law(float(al.n_opt(c)), float(al.d_opt(c))))
                                               for al, law in samples])
        rows.append(row)
    return rows


def _interval(values) -> list[float]:
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def format_table(rows: list[dict]) -> str:
    """The allocation table as aligned text."""
    has_loss = "loss" in rows[0] if rows else False
    lines = [f"{'FLOPs':>10} {'past data':>9} {'N_opt':>10} {'D_opt':>10} {'D/N':>8}" +
             (f" {'loss':>7}" if has_loss else "")]
    for row in rows:
        past = f"{row['decades_past_data']:.1f} dec" if row["decades_past_data"] > 0 else "in data"
        line = (f"{row['C']:10.2e} {past:>9} {row['N_opt']:10.3e} {row['D_opt']:10.3e} {row['D_per_N']:8.1f}" +
                (f" {row['loss']:7.4f}" if has_loss else ""))
        if "ci" in row:
            ci = row["ci"]
            line += (f"   95%: N [{ci['N_opt'][0]:.3g}, {ci['N_opt'][1]:.3g}] D [{ci['D_opt'][0]:.3g}, "
                     f"{ci['D_opt'][1]:.3g}]" + (f" loss [{ci['loss'][0]:.4f}, {ci['loss'][1]:.4f}]"
                                                  if "loss" in ci else ""))
        lines.append(line)
    return "\n".join(lines)
