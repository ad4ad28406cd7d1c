"""The ladder's tables from what run.sh wrote into OUT (experiments/ladder/SCALE/): the sweep's results.csv, the
fits, predict's and plan's JSON, the forecast runs' results and the law's predictions for them. Writes them as
Markdown to OUT.md and into README.md between the markers `<!-- SCALE tables -->` and `<!-- end SCALE tables -->`.

    python experiments/ladder/report.py experiments/ladder/session
"""
import contextlib
import csv
import io
import json
import pathlib
import re
import sys

README = pathlib.Path(__file__).parent / "README.md"


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def ci(value, interval, fmt):
    text = format(value, fmt)
    return text + (f" [{format(interval[0], fmt)}, {format(interval[1], fmt)}]" if interval else "")


def shape_of(row):
    overrides = json.loads(row["overrides"])
    return overrides["model.num_layers"], overrides["model.d_model"], overrides["train.seed"]


def ladder_table(rows):
    budgets = sorted({float(r["budget_flops"]) for r in rows})
    sizes = sorted({(*shape_of(r), int(r["N_total"])) for r in rows}, key=lambda s: (s[2], s[3]))
    loss = {(*shape_of(r), float(r["budget_flops"])): float(r["final_eval_loss"]) for r in rows}
    lines = ["| layers x width | N_total | seed | " + " | ".join(f"C = {b:.3g}" for b in budgets) + " |",
             "|---|---:|---:|" + "---:|" * len(budgets)]
    for layers, width, seed, n in sizes:
        cells = [f"{loss[(layers, width, seed, b)]:.4f}" if (layers, width, seed, b) in loss else "-"
                 for b in budgets]
        lines.append(f"| {layers} x {width} | {n:,} | {seed} | " + " | ".join(cells) + " |")
    best = []
    for b in budgets:
        at = [(loss[(l, w, s, b)], n) for l, w, s, n in sizes if s == 0 and (l, w, s, b) in loss]
        best.append(f"{min(at)[1]:,}" if at else "-")
    lines.append("| best N_total (seed 0) | | | " + " | ".join(best) + " |")
    return "\n".join(lines)


def seed_noise(rows):
    """|loss(seed 1) - loss(seed 0)| over the (size, budget) pairs trained with both."""
    by = {}
    for r in rows:
        layers, width, seed = shape_of(r)
        by.setdefault((layers, width, float(r["budget_flops"])), {})[seed] = float(r["final_eval_loss"])
    gaps = [abs(v[1] - v[0]) / v[0] for v in by.values() if {0, 1} <= set(v)]
    return gaps


VARIANTS = {"floor": "runs of >= 100 steps only (--min_tokens)", "nonemb": "N = non-embedding parameters"}


def forecast_label(row):
    overrides = json.loads(row["overrides"])
    return (f"{overrides['model.num_layers']} x {overrides['model.d_model']}"
            + (" (plan: N_opt's shape, D_opt)" if "train.steps" in overrides else " (same C)"))


def scored(row, prediction):
    """(law's loss, its interval or None, relative error, inside) of a finished forecast run."""
    actual, law = float(row["final_eval_loss"]), prediction["loss"]
    low, high = prediction.get("ci", {}).get("loss", (None, None))
    inside = "-" if low is None else ("yes" if low <= actual <= high else "no")
    return law, None if low is None else (low, high), (law - actual) / actual, inside


def sensitivity(out, forecast, fit3, predicted):
    """The pre-registered fit and its variants (run.sh's fit3_VARIANT.json, forecast_predicted_VARIANT.jsonl) on
    the same forecast runs."""
    fits = [("pre-registered: every run, N = N_total", fit3, predicted)]
    for name, text in VARIANTS.items():
        if (out / f"fit3_{name}.json").exists():
            rows = (out / f"forecast_predicted_{name}.jsonl").read_text().splitlines()
            fits.append((f"{name}: {text}", json.loads((out / f"fit3_{name}.json").read_text()),
                         {r["run"]: r for r in map(json.loads, rows)}))
    if len(fits) == 1:
        return
    finished = [r for r in forecast if r["status"] == "finished"]
    print("### Sensitivity to the pre-registered choices (approach 3; error and inside? per forecast run)\n")
    print("| fit | points | E | alpha | beta | a | " + " | ".join(forecast_label(r) for r in finished) + " |")
    print("|---|---:|---:|---:|---:|---:|" + "---|" * len(finished))
    for label, fit, preds in fits:
        cells = []
        for r in finished:
            if r["run"] not in preds:
                cells.append("-")
                continue
            law, interval, error, inside = scored(r, preds[r["run"]])
            text = f"{law:.4f}" + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")
            cells.append(f"{text}: {100 * error:+.2f}%, {inside}")
        print(f"| {label} | {fit['n_points']} | " + " | ".join(f"{fit[k]:.4g}" for k in ("E", "alpha", "beta", "a"))
              + " | " + " | ".join(cells) + " |")
    print()


def load_summary(out):
    """The 1-minute load averages sampled while run.sh ran (load.txt: time, then /proc/loadavg's three)."""
    path = out / "load.txt"
    if not path.exists():
        return
    samples = [line.split() for line in path.read_text().splitlines() if line.strip()]
    loads = sorted(float(s[1]) for s in samples)
    print(f"Machine load: the 1-minute load average on the 2 cores, sampled every minute from {samples[0][0]} to "
          f"{samples[-1][0]} UTC ({len(loads)} samples), had median {loads[len(loads) // 2]:.1f}, range "
          f"{loads[0]:.1f}-{loads[-1]:.1f}.\n")


def main(out: pathlib.Path):
    rows = [r for r in read_csv(out / "results.csv") if r["status"] == "finished"]
    fit3, predict, plan = (json.loads((out / f"{name}.json").read_text()) for name in ("fit3", "predict", "plan"))
    fit2 = json.loads((out / "fit2.json").read_text())
    cost = (out / "cost.txt").read_text().strip()
    wall = int((out / "sweep_wall_s.txt").read_text())
    forecast = read_csv(out / "forecast.csv")
    predicted = {r["run"]: r for r in map(json.loads, (out / "forecast_predicted.jsonl").read_text().splitlines())}

    print(f"### The ladder ({len(rows)} runs finished; {cost}; sweep wall time {wall / 60:.1f} min)\n")
    print("Final eval loss (nats per byte-level token) per size and counted-FLOP budget:\n")
    print(ladder_table(rows) + "\n")
    gaps = seed_noise(rows)
    if gaps:
        print(f"Seed noise: over the {len(gaps)} (size, budget) pairs trained with seeds 0 and 1, |loss(1) - "
              f"loss(0)| / loss(0) has median {100 * sorted(gaps)[len(gaps) // 2]:.2f}% and maximum "
              f"{100 * max(gaps):.2f}%.\n")

    c3 = fit3.get("ci", {})
    print("### Fits (Chinchilla, N = N_total, C = counted FLOPs, levels = declared budgets)\n")
    print("| fit | E | A | B | alpha | beta | a (N_opt ~ C^a) | b |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("| approach 3 | " + " | ".join(ci(fit3[k], c3.get(k), ".4g") for k in ("E", "A", "B", "alpha", "beta", "a", "b"))
          + " |")
    if "a" in fit2:
        c2 = fit2.get("ci", {})
        print(f"| approach 2 | | | | | | {ci(fit2['a'], c2.get('a'), '.3f')} | {ci(fit2['b'], c2.get('b'), '.3f')} |")
        kept = sum(level["status"] == "kept" for level in fit2.get("levels", []))
        print(f"\nApproach 2 kept {kept} of {len(fit2.get('levels', []))} levels; bootstrap: "
              f"{json.dumps(fit2.get('bootstrap'))}.")
    else:
        print("\nApproach 2 refused this data (run.sh's log says why).")
    print(f"\nApproach 3's bootstrap: {json.dumps(fit3.get('bootstrap'))}; 95% intervals in brackets.\n")

    pci = predict.get("ci", {})
    print(f"### The forecast at C* = {predict['C']:.3g} FLOPs ({predict['decades_past_data']:.1f} decades past the "
          "largest budget)\n")
    print(f"`bmjax-scaling predict --flops {predict['C']:.3g}`: N_opt = {ci(predict['N_opt'], pci.get('N_opt'), '.4g')}, "
          f"D_opt = {ci(predict['D_opt'], pci.get('D_opt'), '.4g')}, loss at the optimum "
          f"{ci(predict['loss'], pci.get('loss'), '.4f')}.\n")
    o = plan["overrides"]
    print(f"`bmjax-scaling plan`: {o['model.num_layers']} layers x {o['model.d_model']} wide "
          f"({o['model.num_heads']} heads), N_total = {plan['N']:,} ({100 * (plan['N'] / plan['N_opt'] - 1):+.1f}% "
          f"from N_opt), {plan['steps']} steps = D {plan['D']:,} tokens, counted C {plan['counted_C']:.4g}.\n")
    forecast_wall = int((out / "forecast_wall_s.txt").read_text())
    print(f"The {len(forecast)} forecast run{'s' if len(forecast) != 1 else ''} trained in {forecast_wall / 60:.1f} min. Error = (predicted - actual) / "
          "actual; inside = the actual loss lies in the law's 95% interval.\n")
    print("| run (layers x width) | N_total | D | counted C | predicted loss [95%] | actual final eval loss | error | "
          "inside? |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    best_actual = best_predicted = None
    for r in forecast:
        p = predicted.get(r["run"])
        label = forecast_label(r)
        if r["status"] != "finished" or p is None:
            print(f"| {label} | {int(r['N_total']):,} | {int(r['D']):,} | | | not finished ({r['status']}) | | |")
            continue
        actual = float(r["final_eval_loss"])
        law, interval, error, inside = scored(r, p)
        text = f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""
        print(f"| {label} | {int(r['N_total']):,} | {int(r['D']):,} | {float(r['C']):.3g} | {law:.4f}{text} | "
              f"{actual:.4f} | {100 * error:+.2f}% | {inside} |")
        if best_actual is None or actual < best_actual[0]:
            best_actual = (actual, int(r["N_total"]), r["run"])
        if best_predicted is None or law < best_predicted[0]:
            best_predicted = (law, int(r["N_total"]), r["run"])
    if best_actual and len(forecast) == 1:
        print(f"\nBest size at C*: predicted N_opt = {predict['N_opt']:,.0f}; only plan's run was trained, so the "
              "observed best size at C* is not measured.\n")
    elif best_actual:
        print(f"\nBest size at C*: predicted N_opt = {predict['N_opt']:,.0f}; of the forecast runs the law ranks "
              f"N_total = {best_predicted[1]:,} lowest, training ranks N_total = {best_actual[1]:,} lowest.\n")
    sensitivity(out, forecast, fit3, predicted)
    load_summary(out)


def write(out: pathlib.Path):
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        main(out)
    tables = text.getvalue().strip() + "\n"
    out.with_suffix(".md").write_text(tables)
    readme = README.read_text()
    begin, end = f"<!-- {out.name} tables -->", f"<!-- end {out.name} tables -->"
    if begin in readme:
        readme = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda m: f"{begin}\n{tables}{end}", readme,
                        flags=re.S)
        README.write_text(readme)
    print(f"wrote {out.with_suffix('.md')}" + (f" and {README}" if begin in readme else ""))


if __name__ == "__main__":
    write(pathlib.Path(sys.argv[1]))
