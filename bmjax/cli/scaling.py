"""bmjax-scaling: fit scaling laws to a sweep's results or to any CSV.

    bmjax-scaling fit (--csv FILE --params_col NAME (--tokens_col NAME | --flops_col NAME) --loss_col NAME
                       | --runs DIR) --law chinchilla|kaplan [--approach 1|2|3] [--drop_highest_loss K]
                      [--min_tokens D] [--isoflop_window DECADES] [--objective huber|lad] [--huber_delta D]
                      [--budgets C,...] [--bootstrap B] [--json] [--plot DIR]
    bmjax-scaling predict (the data and fit flags of fit) (--n N --d D | --flops C) [--bootstrap B] [--json]
    bmjax-scaling plan (the data and fit flags of fit) --flops C [--config BASE.py[:ARG]] [--batch_size B]
                       [--seq_len T] [--aspect_ratio R] [--head_dim H] [--min_layers L] [--workdir DIR]
                       [--devices N | --topology v5e:4x4] [--bootstrap B] [--json]
    bmjax-scaling fit --runs runs/small --law chinchilla --approach 3 --bootstrap 200 --json
    bmjax-scaling fit --csv data/chinchilla_svg_extracted_data.csv --params_col "Model Size" \
        --flops_col "Training FLOP" --loss_col loss --law chinchilla --drop_highest_loss 5
    python -m bmjax.cli.scaling fit ...        (the same)

The dashed spellings of earlier versions (--params-col, --tokens-col, --flops-col, --loss-col,
--drop-highest-loss, --isoflop-window, --start-stride) still work.

`predict` fits as `fit` does, then prints the fitted law's loss at N, D (approach 3 or Kaplan), or the
compute-optimal N_opt, D_opt (and loss, where there is a law) at C, with 95% intervals when bootstrapped.

`plan` turns the compute-optimal N_opt, D_opt at --flops C into the run to launch (bmjax/scaling/plan.py): a GPT
of the base config's vocabulary (--config, default configs/gpt/gpt2.py), its depth from the aspect ratio
d_model / num_layers (--aspect_ratio, default 64), its width the multiple of the head size (--head_dim, default
64; num_heads = d_model / head_dim; at least --min_layers layers, default 1) whose parameter count, counted as
the fit counts N (total for chinchilla, non-embedding for kaplan), is nearest N_opt; train.steps = D_opt / (batch
x seq_len); the law's loss for that run with its interval; and the bmjax-train command line. With --devices N (fake CPU devices) or --topology (a
TPU topology, needs libtpu) it also compiles the run's train step there, as bmjax-compile-check does, and
prints the per-device memory (exit 1 when the compiler refuses the plan).

`--runs DIR` reads DIR/results.csv of `bmjax-sweep` (finished runs only): N_total (chinchilla: all parameters,
as Hoffmann et al. counted) or N (kaplan: non-embedding) for the parameters, D for the tokens, C (the counted
training FLOPs its budgets are met in) for the compute, final_eval_loss for the loss, and budget_flops for the
IsoFLOP levels (without it, levels are cut from C and the report says so); the column flags override them.
With --csv, give --tokens-col, --flops-col or both (one alone: the other from C = 6 N D). Every report names the
N, D and C it used. Chinchilla's approach 3 (the default) fits L = E + A/N^alpha + B/D^beta (--objective huber,
Besiroglu et al.'s sum of Huber losses, or lad, least absolute deviation, what their published numbers are in
effect); approaches 1 and 2 give the allocation exponents a, b (N_opt ∝ C^a, D_opt ∝ C^b) with a per-level
table; Kaplan fits L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D and the one-variable laws L(N), L(D),
L(C) where the data identify them. The allocation table's budgets default to the data's largest C x 1, 10, 100,
1000; each row says how many decades it extrapolates.
Bad input prints one line, `error: FLAG: what is wrong`, and exits with status 2.
"""
import json
import shlex
import sys

import numpy as np
from absl import flags

from bmjax.cli import common
from bmjax.errors import ConfigError
from bmjax.scaling import allocation as allocation_lib
from bmjax.scaling import chinchilla, fit as fit_lib, plan as plan_lib, points as points_lib

COMMANDS = ("fit", "predict", "plan")

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
    flags.DEFINE_float("min_tokens", 0, "Fit only the runs trained on at least this many tokens D (after "
                       "--drop_highest_loss; 0: all).", flag_values=fv)
    flags.DEFINE_float("isoflop_window", None, "Approach 2 (and the IsoFLOP plot): fit each compute level's "
                       "parabola on the sizes within this many decades of N of its lowest-loss run (default: "
                       "all sizes).", flag_values=fv)
    flags.DEFINE_integer("bootstrap", 0, "Bootstrap resamples for 95% intervals (0: none); approach 3 refits each "
                         "from the full optimum and the 7 best grid starts, not all 4,500.", flag_values=fv)
    flags.DEFINE_integer("start_stride", 1, "Approach 3: start L-BFGS from every K-th point of the 4,500-point "
                         "grid (1: all of them, as the replication did).", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed of the bootstrap resamples.", flag_values=fv)
    flags.DEFINE_list("budgets", None, "FLOP budgets of the compute-optimal table (default: the data's largest C "
                      "x 1, 10, 100, 1000).", flag_values=fv)
    flags.DEFINE_enum("objective", "huber", list(chinchilla.OBJECTIVES), "Approach 3's objective: huber (the sum "
                      "of Huber losses of log-loss residuals) or lad (the sum of their absolute values).",
                      flag_values=fv)
    flags.DEFINE_float("huber_delta", chinchilla.HUBER_DELTA, "Approach 3, --objective huber: the Huber delta.",
                       flag_values=fv)
    flags.DEFINE_float("n", None, "predict: parameters N (with --d).", flag_values=fv)
    flags.DEFINE_float("d", None, "predict: training tokens D (with --n).", flag_values=fv)
    flags.DEFINE_float("flops", None, "predict: a FLOP budget C: the compute-optimal N, D and loss there.",
                       flag_values=fv)
    flags.DEFINE_string("config", plan_lib.DEFAULT_CONFIG, "plan: the base config (path.py[:arg]) the run "
                        "takes its vocabulary, context, data and optimizer from.", flag_values=fv)
    flags.DEFINE_integer("batch_size", None, "plan: data.batch_size (default: the base config's).", flag_values=fv)
    flags.DEFINE_integer("seq_len", None, "plan: data.seq_len (default: the base config's).", flag_values=fv)
    flags.DEFINE_float("aspect_ratio", plan_lib.ShapeRule.aspect_ratio, "plan: d_model / num_layers of the shape.",
                       flag_values=fv)
    flags.DEFINE_integer("head_dim", plan_lib.ShapeRule.head_dim, "plan: the head size; d_model is a multiple "
                         "of it and num_heads = d_model / head_dim.", flag_values=fv)
    flags.DEFINE_integer("min_layers", plan_lib.ShapeRule.min_layers, "plan: the fewest layers the shape may have.",
                         flag_values=fv)
    flags.DEFINE_string("workdir", "runs/plan", "plan: the workdir of the printed bmjax-train command.",
                        flag_values=fv)
    flags.DEFINE_integer("devices", None, "plan: compile the run's step for this many fake CPU devices and print "
                         "its per-device memory.", flag_values=fv)
    flags.DEFINE_string("topology", None, "plan: compile it for this TPU topology (e.g. v5e:4x4; needs libtpu).",
                        flag_values=fv)
    flags.DEFINE_boolean("json", False, "Print one JSON object instead of text.", flag_values=fv)
    flags.DEFINE_string("plot", None, "Write the PNG plots into this directory.", flag_values=fv)
    return fv


def dispatch(fv: flags.FlagValues, commands: list[str]) -> int:
    if len(commands) != 1 or commands[0] not in COMMANDS:
        raise ConfigError("command", f"expected one command, fit, predict or plan; got {commands or 'none'}")
    return {"fit": _fit, "predict": _predict, "plan": _plan}[commands[0]](fv)


def main(argv: list[str] | None = None) -> int:
    if argv is None and any(arg.startswith(("--devices", "--topology")) for arg in sys.argv[1:]):
        # The command's own process: fake CPU devices must be asked for before jax starts. A caller that passes
        # argv (a test, a script) has its jax already and keeps its environment.
        from bmjax.cli import compile_check

        compile_check._force_cpu_devices(sys.argv[1:])
    return common.run(define_flags, dispatch, argv, usage=__doc__, positional=True, aliases=ALIASES)


def _load(fv) -> tuple[points_lib.Points, str]:
    if (fv.csv is None) == (fv.runs is None):
        raise ConfigError("--csv", "give exactly one of --csv FILE and --runs DIR")
    columns = dict(params_col=fv.params_col, tokens_col=fv.tokens_col,
                   flops_col=fv.flops_col, loss_col=fv.loss_col)
    if fv.runs is not None:
        return points_lib.read_runs(fv.runs, fv.law, **columns), "--runs"
    for option in ("params_col", "loss_col"):
        if columns[option] is None:
            raise ConfigError("--" + option.replace("_", "-"), "required with --csv")
    if columns["tokens_col"] is None and columns["flops_col"] is None:
        raise ConfigError("--tokens_col", "with --csv, give --tokens_col, --flops_col or both")
    return points_lib.read_csv(fv.csv, **columns), "--csv"


def _options(fv) -> fit_lib.FitOptions:
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
    if not (np.isfinite(fv.min_tokens) and fv.min_tokens >= 0):
        raise ConfigError("--min_tokens", f"must be a number of tokens >= 0; got {fv.min_tokens}")
    window = fv.isoflop_window
    if window is not None and fv.law != "chinchilla":
        raise ConfigError("--isoflop-window", "applies to --law chinchilla only (approach 2 and its plot)")
    if window is not None and not window > 0:
        raise ConfigError("--isoflop-window", f"must be a positive number of decades; got {window}")
    if not fv.huber_delta > 0:
        raise ConfigError("--huber_delta", f"must be positive; got {fv.huber_delta}")
    for name, default in (("objective", "huber"), ("huber_delta", chinchilla.HUBER_DELTA)):
        if fv[name].present and (fv.law != "chinchilla" or approach != 3):
            raise ConfigError(f"--{name}", "applies to --law chinchilla --approach 3 only")
    if fv["huber_delta"].present and fv.objective != "huber":
        raise ConfigError("--huber_delta", "applies to --objective huber only")
    budgets = None
    if fv.budgets is not None:
        try:
            budgets = tuple(float(b) for b in fv.budgets)
        except ValueError:
            raise ConfigError("--budgets", f"must be numbers of FLOPs; got {','.join(fv.budgets)}") from None
        if not budgets or not all(np.isfinite(b) and b > 0 for b in budgets):
            raise ConfigError("--budgets", f"must be positive numbers of FLOPs; got {','.join(fv.budgets)}")
    return fit_lib.FitOptions(law=fv.law, approach=approach, window=window, objective=fv.objective,
                              huber_delta=fv.huber_delta, start_stride=fv.start_stride,
                              bootstrap=fv.bootstrap, seed=fv.seed, budgets=budgets)


def _predict(fv) -> int:
    given = {name: fv[name].value for name in ("n", "d", "flops")}
    if given["flops"] is None and (given["n"] is None or given["d"] is None):
        raise ConfigError("--flops", "predict needs --n N --d D, or --flops C")
    if given["flops"] is not None and (given["n"] is not None or given["d"] is not None):
        raise ConfigError("--flops", "give --n and --d, or --flops, not both")
    for name, value in given.items():
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ConfigError(f"--{name}", f"must be a positive number; got {value}")
    options = _options(fv)
    if given["flops"] is None and fv.law == "chinchilla" and options.approach != 3:
        raise ConfigError("--approach", "approaches 1 and 2 fit no loss law: --n/--d needs approach 3 (or "
                                        "--law kaplan); --flops works with any")
    points, result = _load_and_fit(fv, options)
    out = fit_lib.predict(result, n=given["n"], d=given["d"], c=given["flops"])
    out.update(law=fv.law, approach=result.report.get("approach"), inputs=result.report["inputs"],
               compute=result.report["compute"])
    if fv.json:
        print(json.dumps(out))
        return 0
    ci = out.get("ci", {})
    for key in ("C", "decades_past_data", "N_opt", "D_opt", "N", "D", "loss"):
        if key in out:
            interval = f"   95% CI [{ci[key][0]:.6g}, {ci[key][1]:.6g}]" if key in ci else ""
            print(f"{key:>17}: {out[key]:.6g}{interval}")
    print(f"{'fitted on':>17}: N = {out['inputs']['N']}, D = {out['inputs']['D']}, C = {out['inputs']['C']}; "
          f"{out['compute']}")
    return 0


def _plan(fv) -> int:
    if fv.flops is None or not (np.isfinite(fv.flops) and fv.flops > 0):
        raise ConfigError("--flops", f"plan needs a positive FLOP budget --flops C; got {fv.flops}")
    for name in ("n", "d"):
        if fv[name].value is not None:
            raise ConfigError(f"--{name}", "applies to predict only (plan finds N and D from --flops)")
    for name in ("batch_size", "seq_len", "head_dim", "min_layers", "devices"):
        if fv[name].value is not None and fv[name].value < 1:
            raise ConfigError(f"--{name}", f"must be a positive integer; got {fv[name].value}")
    if not (np.isfinite(fv.aspect_ratio) and fv.aspect_ratio > 0):
        raise ConfigError("--aspect_ratio", f"must be a positive number; got {fv.aspect_ratio}")
    if fv.devices is not None and fv.topology is not None:
        raise ConfigError("--devices", "give --devices or --topology, not both")
    base = plan_lib.load_base_config(fv.config)
    options = _options(fv)
    _, result = _load_and_fit(fv, options)
    rule = plan_lib.ShapeRule(aspect_ratio=fv.aspect_ratio, head_dim=fv.head_dim, min_layers=fv.min_layers)
    out = plan_lib.plan_run(result, fv.law, fv.flops, base, rule, batch_size=fv.batch_size, seq_len=fv.seq_len)
    out["command"] = plan_lib.train_command(fv.config, fv.workdir, out["overrides"])
    out.update(law=fv.law, approach=result.report.get("approach"), inputs=result.report["inputs"])
    compiled = _compile_plan(fv, base, out) if fv.devices is not None or fv.topology is not None else None
    if compiled is not None:
        out["compile"] = {k: v for k, v in compiled.items() if k != "table"}
    if fv.json:
        print(json.dumps(out))
    else:
        _print_plan(out)
        if compiled is not None:
            from bmjax.train import compile_report

            print(compile_report.format_report(plan_lib.with_overrides(base, out["overrides"]), compiled))
    if compiled is not None and "does_not_fit" in compiled:
        return common.FAILED
    return 0


def _compile_plan(fv, base, out) -> dict:
    """bmjax-compile-check's report for the planned run on --devices fake CPU devices or a --topology."""
    import jax

    from bmjax.cli import compile_check
    from bmjax.train import compile_report

    if fv.topology is not None:
        devices = compile_report.topology_devices(fv.topology)
    else:
        devices = jax.devices()[:fv.devices]
        if len(devices) < fv.devices:
            raise ConfigError("--devices", f"{fv.devices} devices asked for; jax has {len(jax.devices())}")
    config = plan_lib.with_overrides(base, out["overrides"])
    checked = compile_check.check_config(config, devices)
    try:
        return compile_report.compile_step(config, devices, checked=checked)
    except compile_report.DoesNotFit as e:
        return {"does_not_fit": str(e)}


def _print_plan(out: dict):
    ci = out.get("ci", {})

    def interval(key, fmt=".4g"):
        return f"   95% CI [{ci[key][0]:{fmt}}, {ci[key][1]:{fmt}}]" if key in ci else ""

    past = f"{out['decades_past_data']:.1f} decades past the data" if out["decades_past_data"] > 0 else "in the data"
    overrides, rule = out["overrides"], out["shape_rule"]
    print(f"{'budget C':>17}: {out['C']:.4g} FLOPs ({past}; {out['compute']})")
    print(f"{'N_opt':>17}: {out['N_opt']:.4g}{interval('N_opt')}")
    print(f"{'D_opt':>17}: {out['D_opt']:.4g}{interval('D_opt')}")
    print(f"{'shape':>17}: {overrides['model.num_layers']} layers x {overrides['model.d_model']} wide, "
          f"{overrides['model.num_heads']} heads (aspect ratio {rule['aspect_ratio']:g}, head size "
          f"{rule['head_dim']})")
    print(f"{'N':>17}: {out['N']} ({out['N_convention']} parameters; {100 * (out['N'] / out['N_opt'] - 1):+.1f}% "
          f"from N_opt)")
    print(f"{'D':>17}: {out['D']} tokens ({out['steps']} steps; counted C {out['counted_C']:.4g})")
    if "loss" in out:
        print(f"{'predicted loss':>17}: {out['loss']:.6g}{interval('loss', '.6g')}   (at N_opt, D_opt: "
              f"{out['loss_at_optimum']:.6g})")
    print(f"{'fitted on':>17}: N = {out['inputs']['N']}, D = {out['inputs']['D']}, C = {out['inputs']['C']}")
    print(shlex.join(out["command"]))


def _load_and_fit(fv, options: fit_lib.FitOptions):
    """The points (less the --drop_highest_loss runs) and the fit to them; data too thin to fit is one line."""
    points, source = _load(fv)
    points = points_lib.drop_highest_loss(points, fv.drop_highest_loss)
    points = points_lib.drop_fewer_tokens(points, fv.min_tokens)
    try:
        return points, fit_lib.run_fit(points, options)
    except points_lib.NotEnoughPoints as e:
        raise ConfigError(source, str(e)) from None


def _fit(fv) -> int:
    options = _options(fv)
    points, result = _load_and_fit(fv, options)
    report = result.report
    if fv.plot:
        from bmjax.scaling.plots import write_plots  # matplotlib only when plots are asked for

        title = fv.law + (f" approach {options.approach}" if fv.law == "chinchilla" else "")
        report["plots"] = write_plots(fv.plot, points, law=result.law, allocation=result.allocation,
                                      frontier=result.frontier, isoflop_window=options.window,
                                      compute=result.compute, title=title)
    if fv.json:
        print(json.dumps(report))
    else:
        _print_text(report)
    return 0


def _print_text(report: dict):
    skip = {"table", "ci", "plots", "one_variable_laws", "start", "inputs", "levels", "bootstrap"}
    inputs = report["inputs"]
    print(f"{'N':>10}: {inputs['N']}\n{'D':>10}: {inputs['D']}\n{'C':>10}: {inputs['C']}")
    if "levels" in report or report.get("law") == "kaplan":
        print(f"{'levels':>10}: {inputs['levels']}")
    ci = report.get("ci", {})
    for key, value in report.items():
        if key in skip:
            continue
        interval = f"   95% CI [{ci[key][0]:.6g}, {ci[key][1]:.6g}]" if key in ci else ""
        print(f"{key:>10}: {value:.6g}{interval}" if isinstance(value, float) else f"{key:>10}: {value}")
    if "bootstrap" in report:
        boot = report["bootstrap"]
        print(f"{'bootstrap':>10}: {boot['used']} of {boot['resamples']} resamples used, {boot['skipped']} skipped"
              + (f"; no interval: {boot['no_interval']}" if "no_interval" in boot else ""))
    for key, law in report.get("one_variable_laws", {}).items():
        text = f"refused: {law['refused']}" if "refused" in law else ", ".join(f"{k} = {v:.6g}" for k, v in law.items())
        print(f"{key:>10}: {text}")
    if report.get("levels"):
        print("compute levels:")
        print(f"{'C':>10} {'runs':>5} {'sizes':>5} {'N':>10} {'D':>10}  status")
        for row in report["levels"]:
            n = f"{row['N']:10.3e}" if row["N"] is not None else f"{'-':>10}"
            d = f"{row['D']:10.3e}" if row["D"] is not None else f"{'-':>10}"
            print(f"{row['C']:10.3e} {row['runs']:>5} {row['sizes']:>5} {n} {d}  {row['status']}")
    if report.get("table"):
        print(f"compute-optimal allocation ({report['compute']}):")
        print(allocation_lib.format_table(report["table"]))
    for path in report.get("plots", []):
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
