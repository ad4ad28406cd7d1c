"""One fit, start to end, as a report (a dict that `bmjax-scaling fit` prints as text or JSON): which N, D and C
it used, how the IsoFLOP levels were formed, the fitted values, the per-level table of approaches 1 and 2, the
bootstrap's intervals with how many resamples it used and skipped, and the compute-optimal allocation table.

Bootstrap (every law and approach): B resamples of the runs drawn with replacement, each refitted; a quantity's
95% interval is the 2.5th to 97.5th percentile over the resamples that could be fitted. A resample that cannot be
fitted (approach 2: fewer than 3 levels with a usable minimum) is skipped and counted; when more than 10% are
skipped the intervals would describe only the lucky resamples, so none is given and the report says why.
"""
import dataclasses

import numpy as np

from bmjax.scaling import allocation as allocation_lib
from bmjax.scaling import chinchilla, isoflop, kaplan
from bmjax.scaling import points as points_lib
from bmjax.scaling.points import NotEnoughPoints, Points

MAX_SKIPPED_FRACTION = 0.1
KAPLAN_ALLOCATION_NOTE = ("the minimum of Kaplan's L(N, D) (eq. 1.5) at C = 6 N D, not Kaplan et al.'s C_min "
                          "frontier of training curves")


@dataclasses.dataclass(frozen=True)
class FitOptions:
    law: str  # chinchilla | kaplan
    approach: int = 3  # chinchilla only
    window: float | None = None  # approach 2's IsoFLOP window, decades of N
    objective: str = "huber"  # approach 3: huber | lad
    huber_delta: float = chinchilla.HUBER_DELTA
    start_stride: int = 1  # approach 3: every k-th grid start
    bootstrap: int = 0
    seed: int = 0
    budgets: tuple | None = None  # allocation table budgets; None: the data's largest C x 1, 10, 100, 1000


@dataclasses.dataclass(frozen=True)
class FitResult:
    report: dict
    law: object  # a callable L(N, D), or None (approaches 1 and 2)
    allocation: allocation_lib.Allocation
    frontier: np.ndarray | None  # the loss envelope's runs, for the plots
    compute: allocation_lib.ComputeModel
    samples: list | None = None  # one (Allocation, law or None) per bootstrap resample used


def predict(result: FitResult, *, n=None, d=None, c=None) -> dict:
    """The fitted law's loss at (n, d), or the compute-optimal N, D (and loss, where there is a law) at c, with
    95% intervals over the bootstrap's resamples where it ran."""
    if c is not None:
        return allocation_lib.allocation_table(result.allocation, [c], result.report["max_C"], result.law,
                                               result.samples)[0]
    if result.law is None:
        raise NotEnoughPoints("approaches 1 and 2 fit no loss law: predict at --n and --d needs approach 3 or "
                              "--law kaplan")
    out = {"N": float(n), "D": float(d), "loss": float(result.law(n, d))}
    if result.samples:
        out["ci"] = {"loss": allocation_lib._interval([float(law(n, d)) for _, law in result.samples])}
    return out


def describe_inputs(points: Points) -> dict:
    columns = points.columns
    return {"N": columns.get("N", "N"), "D": columns.get("D", "D"), "C": columns.get("C", "C"),
            "levels": isoflop.describe_levels(points)}


def run_fit(points: Points, options: FitOptions) -> FitResult:
    """The fit `options` ask for on `points`; raises NotEnoughPoints when the data cannot determine it."""
    compute = allocation_lib.fit_compute_model(points.n, points.d, points.c)
    report = {"law": options.law, "n_points": len(points), "inputs": describe_inputs(points),
              "compute": compute.describe(), "max_C": float(points.c.max())}
    if options.law == "kaplan":
        result = _kaplan(points, options, report)
    elif options.approach in (1, 2):
        result = _isoflop(points, options, report, compute)
    else:
        result = _approach3(points, options, report, compute)
    return result


def _table(result_report, allocation, law, points, options, samples=None):
    budgets = options.budgets or allocation_lib.default_budgets(points.c.max())
    result_report["table"] = allocation_lib.allocation_table(allocation, budgets, float(points.c.max()), law,
                                                             samples)


def _isoflop(points, options, report, compute) -> FitResult:
    report["approach"] = options.approach
    if options.window is not None:
        report["isoflop_window"] = options.window
    envelope = isoflop.fit_envelope(points) if options.approach == 1 else None
    if options.approach == 1:
        allocation, report["levels"] = envelope.allocation, envelope.levels
        fit_fn = lambda p: isoflop.fit_envelope(p).allocation  # noqa: E731
    else:
        fit = isoflop.fit_isoflop(points, window=options.window)
        allocation, report["levels"] = fit.allocation, fit.levels(points)
        fit_fn = lambda p: isoflop.fit_isoflop(p, window=options.window).allocation  # noqa: E731
    report.update(a=allocation.a, b=allocation.b, k_n=allocation.k_n, k_d=allocation.k_d)
    samples = None
    if options.bootstrap:
        fits, summary = bootstrap(points, options.bootstrap, options.seed, fit_fn)
        report["bootstrap"] = summary
        if fits is not None:
            report["ci"] = _intervals([{"a": al.a, "b": al.b} for al in fits])
            samples = [(al, None) for al in fits]
    _table(report, allocation, None, points, options, samples)
    frontier = envelope.frontier if envelope is not None else None
    return FitResult(report, None, allocation, frontier, compute, samples)


def _approach3(points, options, report, compute) -> FitResult:
    starts = chinchilla.grid_starts()[::options.start_stride]
    fit = chinchilla.fit_chinchilla(points, starts=starts, objective=options.objective, delta=options.huber_delta)
    report.update(approach=3, objective_function=options.objective)
    if options.objective == "huber":
        report["huber_delta"] = options.huber_delta
    report.update(fit.law.values(compute))
    report.update(objective=fit.objective, grad_norm=fit.grad_norm, start=fit.start.tolist())
    allocation = fit.law.allocation(compute)
    samples = None
    if options.bootstrap:
        boot = chinchilla.bootstrap_chinchilla(points, fit, options.bootstrap, seed=options.seed,
                                               objective=options.objective, delta=options.huber_delta,
                                               compute=compute)
        report["ci"] = {name: list(bounds) for name, bounds in boot.ci.items()}
        report["bootstrap"] = {"resamples": options.bootstrap, "used": options.bootstrap, "skipped": 0}
        samples = [(law.allocation(compute), law) for law in boot.laws]
    _table(report, allocation, fit.law, points, options, samples)
    return FitResult(report, fit.law, allocation, None, compute, samples)


def _kaplan(points, options, report) -> FitResult:
    fit = kaplan.fit_kaplan(points)
    allocation = fit.law.allocation()
    report.update({"N_c": fit.law.n_c, "D_c": fit.law.d_c, "alpha_N": fit.law.alpha_n,
                   "alpha_D": fit.law.alpha_d, "a": allocation.a, "b": allocation.b,
                   "objective": fit.squared_error, "allocation": KAPLAN_ALLOCATION_NOTE,
                   "one_variable_laws": fit.one_variable})
    samples = None
    if options.bootstrap:
        laws, summary = bootstrap(points, options.bootstrap, options.seed, lambda p: kaplan.fit_kaplan_nd(p)[0])
        report["bootstrap"] = summary
        if laws is not None:
            report["ci"] = _intervals([{"N_c": law.n_c, "D_c": law.d_c, "alpha_N": law.alpha_n,
                                        "alpha_D": law.alpha_d, "a": law.allocation().a,
                                        "b": law.allocation().b} for law in laws])
            samples = [(law.allocation(), law) for law in laws]
    _table(report, allocation, fit.law, points, options, samples)
    return FitResult(report, fit.law, allocation, fit.frontier, allocation_lib.SIX_ND, samples)


def bootstrap(points: Points, resamples: int, seed: int, fit_fn):
    """(fits or None, summary): `fit_fn` on each resample; None when more than 10% could not be fitted."""
    rng = np.random.default_rng(seed)
    fits, skipped = [], 0
    for _ in range(resamples):
        try:
            fits.append(fit_fn(points.subset(points_lib.resample_indices(rng, points))))
        except NotEnoughPoints:
            skipped += 1
    summary = {"resamples": resamples, "used": len(fits), "skipped": skipped}
    if skipped > MAX_SKIPPED_FRACTION * resamples:
        summary["no_interval"] = (f"{skipped} of {resamples} resamples could not be fitted (more than "
                                  f"{MAX_SKIPPED_FRACTION:.0%}): intervals over the rest would describe only the "
                                  f"resamples that happened to keep enough levels")
        return None, summary
    return fits, summary


def _intervals(values: list[dict]) -> dict:
    return {k: [float(np.percentile([v[k] for v in values], q)) for q in (2.5, 97.5)] for k in values[0]}
