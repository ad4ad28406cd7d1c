"""bmjax-scaling: fit scaling laws to a sweep's results or to any CSV.

    bmjax-scaling fit (--csv FILE --params_col NAME (--tokens_col NAME | --flops_col NAME) --loss_col NAME
                       | --runs DIR) --law chinchilla|kaplan [--approach 1|2|3] [--drop_highest_loss K]
                      [--isoflop_window DECADES] [--bootstrap B] [--json] [--plot DIR]
    bmjax-scaling fit --runs runs/small --law chinchilla --approach 3 --bootstrap 200 --json
    bmjax-scaling fit --csv data/chinchilla_svg_extracted_data.csv --params_col "Model Size" \
        --flops_col "Training FLOP" --loss_col loss --law chinchilla --drop_highest_loss 5
    python -m bmjax.cli.scaling fit ...        (the same)

The dashed spellings of earlier versions (--params-col, --tokens-col, --flops-col, --loss-col,
--drop-highest-loss, --isoflop-window, --start-stride) still work.

`--runs DIR` reads DIR/results.csv of `bmjax-sweep` (finished runs only), with columns N_total (chinchilla) or N
(kaplan) for the parameters, D for the tokens and final_eval_loss for the loss; the column flags override them.
Without --tokens-col, D = C / (6N). Chinchilla's approach 3 (the default) fits L = E + A/N^alpha + B/D^beta;
approaches 1 and 2 give only the allocation exponents a, b (N_opt ∝ C^a, D_opt ∝ C^b); Kaplan fits
L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D and the one-variable laws L(N), L(D), L(C).
Bad input prints one line, `error: FLAG: what is wrong`, and exits with status 2.
"""
import json
import sys

import numpy as np
from absl import flags

from bmjax.cli import common
from bmjax.errors import ConfigError
from bmjax.scaling import allocation as allocation_lib
from bmjax.scaling import chinchilla, isoflop, kaplan, points as points_lib

COMMANDS = ("fit",)
DEFAULT_BUDGETS = [f"1e{k}" for k in range(18, 26)]

# The spellings of earlier versions, still accepted.
ALIASES = {f"--{name.replace('_', '-')}": f"--{name}" for name in (
    "params_col", "tokens_col", "flops_col", "loss_col", "drop_highest_loss", "isoflop_window", "start_stride")}


def define_flags(argv: list[str]) -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("csv", None, "CSV file with one row per run.", flag_values=fv)
    flags.DEFINE_string("runs", None, "A bmjax-sweep workdir: reads its results.csv.", flag_values=fv)
    flags.DEFINE_string("params_col", None, "Column of parameter counts N.", flag_values=fv)
    flags.DEFINE_string("tokens_col", None, "Column of training tokens D.", flag_values=fv)
    flags.DEFINE_string("flops_col", None, "Column of training FLOPs C (then D = C / 6N).", flag_values=fv)
    flags.DEFINE_string("loss_col", None, "Column of final losses.", flag_values=fv)
    flags.DEFINE_enum("law", None, ["chinchilla", "kaplan"], "Which law to fit.", flag_values=fv)
    flags.DEFINE_integer("approach", None, "Chinchilla approach 1, 2 or 3 (default 3).", flag_values=fv)
    flags.DEFINE_integer("drop_highest_loss", 0, "Drop the K runs of highest loss first.", flag_values=fv)
    flags.DEFINE_float("isoflop_window", None, "Approach 2 (and the IsoFLOP plot): fit each compute level's "
                       "parabola on the sizes within this many decades of N of its lowest-loss run (default: "
                       "all sizes).", flag_values=fv)
    flags.DEFINE_integer("bootstrap", 0, "Bootstrap resamples for 95% intervals (0: none); approach 3 refits each "
                         "from the full optimum and the 7 best grid starts, not all 4,500.", flag_values=fv)
    flags.DEFINE_integer("start_stride", 1, "Approach 3: start L-BFGS from every K-th point of the 4,500-point "
                         "grid (1: all of them, as the replication did).", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed of the bootstrap resamples.", flag_values=fv)
    flags.DEFINE_list("budgets", DEFAULT_BUDGETS, "FLOP budgets of the compute-optimal table.", flag_values=fv)
    flags.DEFINE_boolean("json", False, "Print one JSON object instead of text.", flag_values=fv)
    flags.DEFINE_string("plot", None, "Write the PNG plots into this directory.", flag_values=fv)
    return fv


def fit(fv: flags.FlagValues, commands: list[str]) -> int:
    if commands != ["fit"]:
        raise ConfigError("command", f"expected one command, 'fit'; got {commands or 'none'}")
    return _fit(fv)


def main(argv: list[str] | None = None) -> int:
    return common.run(define_flags, fit, argv, usage=__doc__, positional=True, aliases=ALIASES)


def _load(fv) -> tuple[points_lib.Points, str]:
    if (fv.csv is None) == (fv.runs is None):
        raise ConfigError("--csv", "give exactly one of --csv FILE and --runs DIR")
    if fv.tokens_col is not None and fv.flops_col is not None:
        raise ConfigError("--tokens-col", "give at most one of --tokens-col and --flops-col")
    columns = dict(params_col=fv.params_col, tokens_col=fv.tokens_col,
                   flops_col=fv.flops_col, loss_col=fv.loss_col)
    if fv.runs is not None:
        return points_lib.read_runs(fv.runs, fv.law, **columns), "--runs"
    for option in ("params_col", "loss_col"):
        if columns[option] is None:
            raise ConfigError("--" + option.replace("_", "-"), "required with --csv")
    if columns["tokens_col"] is None and columns["flops_col"] is None:
        raise ConfigError("--tokens-col", "with --csv, give --tokens-col or --flops-col")
    return points_lib.read_csv(fv.csv, **columns), "--csv"


def _fit(fv) -> int:
    if fv.law is None:
        raise ConfigError("--law", "required: chinchilla or kaplan")
    if fv.law == "kaplan" and fv.approach is not None:
        raise ConfigError("--approach", "applies to --law chinchilla only (Kaplan's law has no approaches)")
    approach = 3 if fv.approach is None else fv.approach
    if approach not in (1, 2, 3):
        raise ConfigError("--approach", f"must be 1, 2 or 3; got {approach}")
    for name, least in (("drop_highest_loss", 0), ("bootstrap", 0), ("start_stride", 1)):
        if fv[name].value < least:
            raise ConfigError("--" + name.replace("_", "-"), f"must be >= {least}; got {fv[name].value}")
    window = fv.isoflop_window
    if window is not None and fv.law != "chinchilla":
        raise ConfigError("--isoflop-window", "applies to --law chinchilla only (approach 2 and its plot)")
    if window is not None and not window > 0:
        raise ConfigError("--isoflop-window", f"must be a positive number of decades; got {window}")
    try:
        budgets = [float(b) for b in fv.budgets]
    except ValueError:
        raise ConfigError("--budgets", f"must be numbers; got {fv.budgets}") from None
    points, source = _load(fv)
    points = points_lib.drop_highest_loss(points, fv.drop_highest_loss)
    try:
        if fv.law == "kaplan":
            report, law, allocation, frontier = _fit_kaplan(points, fv)
        else:
            report, law, allocation, frontier = _fit_chinchilla(points, approach, fv)
    except points_lib.NotEnoughPoints as e:
        raise ConfigError(source, str(e)) from None
    table = allocation_lib.allocation_table(allocation, budgets, law) if allocation is not None else []
    report["table"] = table
    if fv.plot:
        from bmjax.scaling.plots import write_plots  # matplotlib only when plots are asked for

        report["plots"] = write_plots(fv.plot, points, law=law, allocation=allocation, frontier=frontier,
                                      isoflop_window=window,
                                      title=f"{fv.law}" + (f" approach {approach}" if fv.law == "chinchilla" else ""))
    if fv.json:
        print(json.dumps(report))
    else:
        _print_text(report)
    return 0


def _fit_chinchilla(points, approach, fv):
    report = {"law": "chinchilla", "approach": approach, "n_points": len(points)}
    window = fv.isoflop_window
    if window is not None:
        report["isoflop_window"] = window
    envelope = isoflop.fit_envelope(points) if approach == 1 or fv.plot else None
    frontier = envelope.frontier if envelope is not None else None
    if approach in (1, 2):
        fit_fn = (lambda p: isoflop.fit_envelope(p).allocation) if approach == 1 else (
            lambda p: isoflop.fit_isoflop(p, window=window).allocation)
        allocation = fit_fn(points)
        report.update(a=allocation.a, b=allocation.b, k_n=allocation.k_n, k_d=allocation.k_d)
        if fv.bootstrap:
            report["ci"] = _bootstrap_generic(points, fv.bootstrap, fv.seed,
                                              lambda p: _exponents(fit_fn(p)))
        return report, None, allocation, frontier
    fit = chinchilla.fit_chinchilla(points, starts=chinchilla.grid_starts()[::fv.start_stride])
    report.update(fit.law.values())
    report.update(objective=fit.objective, grad_norm=fit.grad_norm, start=fit.start.tolist())
    if fv.bootstrap:
        boot = chinchilla.bootstrap_chinchilla(points, fit, fv.bootstrap, seed=fv.seed)
        report["ci"] = {name: list(bounds) for name, bounds in boot.ci.items()}
        report["bootstrap"] = fv.bootstrap
    return report, fit.law, fit.law.allocation(), frontier


def _exponents(allocation) -> dict:
    return {"a": allocation.a, "b": allocation.b}


def _fit_kaplan(points, fv):
    fit = kaplan.fit_kaplan(points)
    allocation = fit.law.allocation()
    report = {"law": "kaplan", "n_points": len(points), "N_c": fit.law.n_c, "D_c": fit.law.d_c,
              "alpha_N": fit.law.alpha_n, "alpha_D": fit.law.alpha_d, "a": allocation.a, "b": allocation.b,
              "objective": fit.squared_error,
              "L_N": {"N_c": fit.l_of_n.x_c, "alpha_N": fit.l_of_n.alpha},
              "L_D": {"D_c": fit.l_of_d.x_c, "alpha_D": fit.l_of_d.alpha},
              "L_C": {"C_c": fit.l_of_c.x_c, "alpha_C": fit.l_of_c.alpha}}
    if fv.bootstrap:
        def values(p):
            law = kaplan.fit_kaplan_nd(p)[0]
            return {"N_c": law.n_c, "D_c": law.d_c, "alpha_N": law.alpha_n, "alpha_D": law.alpha_d,
                    "a": law.allocation().a, "b": law.allocation().b}
        report["ci"] = _bootstrap_generic(points, fv.bootstrap, fv.seed, values)
        report["bootstrap"] = fv.bootstrap
    return report, fit.law, allocation, fit.frontier


def _bootstrap_generic(points, resamples, seed, values) -> dict:
    """2.5th and 97.5th percentiles of `values(resample)` over resamples of the runs; unfittable ones skipped."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(resamples):
        try:
            samples.append(values(points.subset(rng.integers(0, len(points), len(points)))))
        except points_lib.NotEnoughPoints:
            continue
    if not samples:
        raise points_lib.NotEnoughPoints("no bootstrap resample could be fitted")
    return {k: [float(np.percentile([s[k] for s in samples], q)) for q in (2.5, 97.5)] for k in samples[0]}


def _print_text(report: dict):
    skip = {"table", "ci", "plots", "L_N", "L_D", "L_C", "start"}
    ci = report.get("ci", {})
    for key, value in report.items():
        if key in skip:
            continue
        interval = f"   95% CI [{ci[key][0]:.6g}, {ci[key][1]:.6g}]" if key in ci else ""
        print(f"{key:>10}: {value:.6g}{interval}" if isinstance(value, float) else f"{key:>10}: {value}")
    for key in ("L_N", "L_D", "L_C"):
        if key in report:
            print(f"{key:>10}: " + ", ".join(f"{k} = {v:.6g}" for k, v in report[key].items()))
    if report.get("table"):
        print("compute-optimal allocation:")
        print(allocation_lib.format_table(report["table"]))
    for path in report.get("plots", []):
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
