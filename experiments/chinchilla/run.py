"""Reproduce Besiroglu et al. 2024's fit of Chinchilla's approach 3 from the 245 points they read off the paper.

    python -m experiments.chinchilla.run [--bootstrap 200] [--plots experiments/chinchilla/plots]

(from the repository root, so that this checkout's bmjax is the one imported).

Prints the fitted law with bootstrap 95% intervals beside the published fit, the objective at both, the timings,
and the compute-optimal allocation for 1e18 ... 1e25 FLOPs beside Hoffmann et al. 2022's Table 3; writes the
plots and results.json. The same fit from the CLI:

    python -m bmjax.cli.scaling fit --csv data/chinchilla_svg_extracted_data.csv --params-col "Model Size" \
        --flops-col "Training FLOP" --loss-col loss --law chinchilla --approach 3 --drop-highest-loss 5 \
        --bootstrap 200 --plot experiments/chinchilla/plots
"""
import argparse
import json
import pathlib
import time

import numpy as np

from bmjax.scaling import allocation as allocation_lib
from bmjax.scaling import chinchilla, isoflop, plots, points as points_lib

HERE = pathlib.Path(__file__).resolve().parent
DATA = HERE.parents[1] / "data" / "chinchilla_svg_extracted_data.csv"


def load_points() -> points_lib.Points:
    """The 240 runs of the replication: the 245 extracted points less the 5 of highest loss."""
    runs = points_lib.read_csv(str(DATA), "Model Size", "loss", flops_col="Training FLOP")
    return points_lib.drop_highest_loss(runs, 5)


def time_scipy(points, stride: int) -> dict:
    """SciPy's L-BFGS-B one start at a time on every stride-th start, given the objective's analytic gradient
    (the same jitted float64 JAX value-and-gradient bmjax evaluates, one start per call) and tolerances tight
    enough for a summed Huber of ~1e-3 (ftol 1e-15, gtol 1e-12): the fair comparison for the batched fit."""
    import jax
    from scipy.optimize import minimize

    data = chinchilla._data(points)
    objective = chinchilla.huber_objective()
    with jax.enable_x64(True):
        value_and_grad = jax.jit(jax.value_and_grad(lambda t: objective(t, data)))

        def f(theta):
            value, grad = value_and_grad(theta)
            return float(value), np.asarray(grad, dtype=np.float64)

        starts = chinchilla.grid_starts()[::stride]
        f(starts[0])  # compile outside the timing
        start, cpu = time.time(), time.process_time()
        runs = [minimize(f, s, jac=True, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000})
                for s in starts]
    seconds, cpu = time.time() - start, time.process_time() - cpu
    best = min(runs, key=lambda r: r.fun)
    scale = len(chinchilla.grid_starts()) / len(starts)
    print(f"\nSciPy L-BFGS-B with the analytic gradient, one start at a time: {len(starts)} starts in {seconds:.1f} s ({cpu:.1f} s CPU), "
          f"~{seconds * scale / 60:.1f} min ({cpu * scale / 60:.1f} min CPU) for 4,500; best objective "
          f"{best.fun:.10f} at {law_string(best.x)}")
    return {"starts": len(starts), "seconds": seconds, "cpu_seconds": cpu, "extrapolated_seconds": seconds * scale,
            "extrapolated_cpu_seconds": cpu * scale, "best_objective": float(best.fun),
            "best": chinchilla.ChinchillaLaw.from_theta(best.x).values()}


def law_string(theta) -> str:
    law = chinchilla.ChinchillaLaw.from_theta(theta)
    return f"E={law.E:.4f} A={law.A:.2f} B={law.B:.2f} alpha={law.alpha:.4f} beta={law.beta:.4f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--plots", default=str(HERE / "plots"))
    parser.add_argument("--scipy-stride", type=int, default=0,
                        help="also time SciPy's L-BFGS-B (defaults, one start at a time, as the replication ran it) "
                             "from every K-th grid start and extrapolate to all 4,500 (0: skip)")
    args = parser.parse_args()
    expected = json.loads((HERE / "expected.json").read_text())
    published = expected["published"]["values"]
    points = load_points()

    # Wall and CPU seconds: on a shared machine the CPU time is the steadier figure.
    start, cpu = time.time(), time.process_time()
    fit = chinchilla.fit_chinchilla(points)
    fit_seconds, fit_cpu = time.time() - start, time.process_time() - cpu
    start, cpu = time.time(), time.process_time()
    boot = chinchilla.bootstrap_chinchilla(points, fit, args.bootstrap) if args.bootstrap else None
    boot_seconds, boot_cpu = time.time() - start, time.process_time() - cpu

    start, cpu = time.time(), time.process_time()
    lad = chinchilla.fit_chinchilla(points, objective="lad")
    lad_seconds, lad_cpu = time.time() - start, time.process_time() - cpu
    notebook = expected["notebook_sum_huber"]["values"]
    print(f"least absolute deviation (--objective lad): {lad_seconds:.1f} s ({lad_cpu:.1f} s CPU)")
    print(f"{'':>6} {'huber':>10} {'notebook':>10} {'lad':>10} {'published':>10}")
    for name in ("E", "A", "B", "alpha", "beta"):
        print(f"{name:>6} {fit.law.values()[name]:10.6g} {notebook[name]:10.6g} {lad.law.values()[name]:10.6g} "
              f"{published[name]:10.6g}")

    ours = fit.law.values()
    theirs = chinchilla.ChinchillaLaw(**published).values()
    objective = chinchilla.huber_objective()
    import jax
    with jax.enable_x64(True):
        theta = np.array([np.log(published["A"]), np.log(published["B"]), np.log(published["E"]),
                          published["alpha"], published["beta"]])
        published_objective = float(objective(theta, chinchilla._data(points)))

    print(f"{len(points)} runs; {len(chinchilla.grid_starts())} starts in {fit_seconds:.1f} s "
          f"({fit_cpu:.1f} s CPU); {args.bootstrap} bootstrap refits in {boot_seconds:.1f} s ({boot_cpu:.1f} s CPU)")
    print(f"best start (a, b, e, alpha, beta) = {fit.start.tolist()}, {fit.steps} L-BFGS steps, "
          f"gradient norm at the optimum {fit.grad_norm:.1e}")
    print(f"objective (sum of Huber, delta=1e-3): ours {fit.objective:.10f}, at the published fit "
          f"{published_objective:.10f}")
    print(f"{'':>6} {'bmjax':>10} {'95% CI':>24} {'published':>10}")
    for name in chinchilla.PARAMETER_NAMES:
        ci = f"[{boot.ci[name][0]:.4g}, {boot.ci[name][1]:.4g}]" if boot else ""
        print(f"{name:>6} {ours[name]:10.4f} {ci:>24} {theirs[name]:10.4f}")

    allocation = fit.law.allocation()
    print("\ncompute-optimal allocation of the fitted law (C = 6ND):")
    print(allocation_lib.format_table(allocation_lib.allocation_table(allocation, [10.0 ** k for k in range(18, 26)],
                                                                       float(points.c.max()), fit.law)))
    print("\nbeside Hoffmann et al. 2022, Table 3 (their approach 1 projection):")
    print(f"{'FLOPs':>10} {'N (Table 3)':>12} {'N (huber)':>10} {'N (lad)':>10} {'D (Table 3)':>12} "
          f"{'D (huber)':>10} {'D (lad)':>10}")
    table3 = []
    for row in expected["hoffmann_table3"]:
        n, d = float(allocation.n_opt(row["C"])), float(allocation.d_opt(row["C"]))
        n_lad, d_lad = float(lad.law.allocation().n_opt(row["C"])), float(lad.law.allocation().d_opt(row["C"]))
        table3.append({**row, "N_bmjax": n, "D_bmjax": d, "N_lad": n_lad, "D_lad": d_lad})
        print(f"{row['C']:10.2e} {row['N']:12.3g} {n:10.3g} {n_lad:10.3g} {row['D']:12.3g} {d:10.3g} {d_lad:10.3g}")

    scipy_timing = time_scipy(points, args.scipy_stride) if args.scipy_stride else None

    paths = plots.write_plots(args.plots, points, law=fit.law, allocation=allocation,
                              frontier=isoflop.fit_envelope(points).frontier, title="Chinchilla (240 runs)")
    results = {"fit": ours, "lad_fit": lad.law.values(), "lad_seconds": lad_seconds, "objective": fit.objective, "published_objective": published_objective,
               "grad_norm": fit.grad_norm, "start": fit.start.tolist(), "fit_seconds": fit_seconds, "fit_cpu_seconds": fit_cpu,
               "bootstrap": args.bootstrap, "bootstrap_seconds": boot_seconds, "bootstrap_cpu_seconds": boot_cpu,
               "ci": boot.ci if boot else None, "table3": table3, "scipy": scipy_timing}
    (HERE / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\nwrote " + ", ".join(paths) + f", {HERE / 'results.json'}")


if __name__ == "__main__":
    main()
