"""Compute-optimal allocation: how a FLOP budget C splits into parameters N and tokens D.

Every Chinchilla-style fit ends in two power laws,

    N_opt(C) = k_N C^a,      D_opt(C) = k_D C^b,

and for C = 6 N D to hold at the optimum, a + b = 1 and k_N k_D = 1/6. Approaches 1 and 2 read a, b and k_N, k_D
off regressions of log N_opt and log D_opt on log C; approach 3 derives them from the fitted loss law.
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


def regress_allocation(c, n_opt, d_opt) -> Allocation:
    """a, b (and k_N, k_D) by least squares of log N_opt and log D_opt on log C."""
    log_c = np.log(np.asarray(c, dtype=np.float64))
    a, log_kn = np.polyfit(log_c, np.log(n_opt), 1)
    b, log_kd = np.polyfit(log_c, np.log(d_opt), 1)
    return Allocation(float(a), float(b), float(np.exp(log_kn)), float(np.exp(log_kd)))


def allocation_table(allocation: Allocation, budgets, predict_loss=None) -> list[dict]:
    """One row per budget: C, N_opt, D_opt, tokens per parameter, and the predicted loss where a law is given."""
    rows = []
    for c in budgets:
        n, d = float(allocation.n_opt(c)), float(allocation.d_opt(c))
        row = {"C": float(c), "N_opt": n, "D_opt": d, "D_per_N": d / n}
        if predict_loss is not None:
            row["loss"] = float(predict_loss(n, d))
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """The allocation table as aligned text."""
    has_loss = "loss" in rows[0] if rows else False
    lines = [f"{'FLOPs':>10} {'N_opt':>10} {'D_opt':>10} {'D/N':>7}" + (f" {'loss':>7}" if has_loss else "")]
    for row in rows:
        line = f"{row['C']:10.2e} {row['N_opt']:10.3e} {row['D_opt']:10.3e} {row['D_per_N']:7.1f}"
        lines.append(line + (f" {row['loss']:7.4f}" if has_loss else ""))
    return "\n".join(lines)
