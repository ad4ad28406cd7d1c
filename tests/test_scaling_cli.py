"""bmjax-scaling fit: JSON output, --runs, plots, and one line + exit 2 on bad input."""
import csv
import json
import subprocess
import sys

import pytest

from bmjax.cli.scaling import main
from bmjax.scaling.points import make_points
from scaling_data import TRUE_KAPLAN, isoflop_runs, kaplan_runs, write_csv

CSV_COLUMNS = ["--params-col", "params", "--flops-col", "flops", "--loss-col", "loss"]


@pytest.fixture(scope="module")
def sweep_csv(tmp_path_factory):
    return str(write_csv(tmp_path_factory.mktemp("csv") / "runs.csv", isoflop_runs()))


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_approach2_json_and_plots(capsys, sweep_csv, tmp_path):
    code, out, err = run(capsys, "fit", "--csv", sweep_csv, *CSV_COLUMNS, "--law", "chinchilla", "--approach",
                         "2", "--bootstrap", "20", "--json", "--plot", str(tmp_path / "plots"))
    assert code == 0, err
    report = json.loads(out)
    assert report["n_points"] == 45 and report["approach"] == 2
    assert abs(report["a"] - 0.30 / 0.64) < 0.02 and abs(report["a"] + report["b"] - 1) < 1e-9
    assert report["ci"]["a"][0] <= report["a"] <= report["ci"]["a"][1]
    # the table starts at the data's largest C and goes 1, 2, 3 decades past it, saying so, with intervals
    assert [row["C"] for row in report["table"]] == pytest.approx([1e20, 1e21, 1e22, 1e23], rel=1e-12)
    assert [row["decades_past_data"] for row in report["table"]] == pytest.approx([0, 1, 2, 3])
    assert all(row["ci"]["N_opt"][0] < row["N_opt"] < row["ci"]["N_opt"][1] for row in report["table"])
    assert report["bootstrap"] == {"resamples": 20, "used": 20, "skipped": 0}
    assert [level["status"] for level in report["levels"]] == ["kept"] * 5
    assert report["inputs"]["C"] == "flops" and report["inputs"]["N"] == "params"
    for name in ("loss_vs_compute.png", "isoflop.png", "fitted_law.png", "optimal_allocation.png"):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000


def test_approach3_json(capsys, sweep_csv):
    # Every 45th grid start (100 of 4,500) keeps this quick; the full grid is tested in test_scaling_fits.
    code, out, err = run(capsys, "fit", "--csv", sweep_csv, *CSV_COLUMNS, "--law", "chinchilla", "--json",
                         "--start-stride", "45", "--bootstrap", "6")
    assert code == 0, err
    report = json.loads(out)
    for key in ("E", "A", "B", "alpha", "beta", "a", "b", "objective", "n_points"):
        assert key in report
    assert abs(report["alpha"] - 0.34) < 0.02 and abs(report["beta"] - 0.30) < 0.02
    assert abs(report["a"] - report["beta"] / (report["alpha"] + report["beta"])) < 1e-12
    row = report["table"][0]
    assert abs(6 * row["N_opt"] * row["D_opt"] / row["C"] - 1) < 1e-9 and row["loss"] > report["E"]
    assert report["compute"] == "C = 6 N D" and report["objective_function"] == "huber"
    # resamples differ: intervals of nonzero width, on the law and on every row of the table
    assert report["ci"]["alpha"][1] - report["ci"]["alpha"][0] > 1e-3
    assert all(r["ci"]["loss"][0] < r["ci"]["loss"][1] and r["ci"]["N_opt"][0] < r["ci"]["N_opt"][1]
               for r in report["table"])


def test_kaplan_json_from_tokens(capsys, tmp_path):
    path = str(write_csv(tmp_path / "k.csv", kaplan_runs(), flops=False))
    code, out, err = run(capsys, "fit", "--csv", path, "--params-col", "params", "--tokens-col", "tokens",
                         "--loss-col", "loss", "--law", "kaplan", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert abs(report["alpha_N"] / TRUE_KAPLAN["alpha_n"] - 1) < 0.1
    assert abs(report["alpha_D"] / TRUE_KAPLAN["alpha_d"] - 1) < 0.1
    assert abs(report["a"] + report["b"] - 1) < 1e-9 and report["n_points"] == 49
    laws = report["one_variable_laws"]
    assert {"N_c", "alpha_N"} == laws["L_N"].keys() and {"D_c", "alpha_D"} == laws["L_D"].keys()
    assert {"C_c", "alpha_C"} == laws["L_C"].keys()


def write_results_csv(directory, points, n_non_embedding, budgets, extra_rows=()):
    """A bmjax-sweep results.csv of finished runs (and `extra_rows` as given)."""
    from bmjax.scaling.sweep import RESULT_COLUMNS

    with open(directory / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        w.writeheader()
        for i, (n, n_ne, d, c, loss, budget) in enumerate(zip(points.n, n_non_embedding, points.d, points.c,
                                                              points.loss, budgets)):
            w.writerow({"run": f"r{i}", "overrides": "{}", "budget_flops": budget, "budget_tokens": "", "N": n_ne,
                        "N_total": n, "D": d, "C": c, "final_eval_loss": loss, "best_eval_loss": loss,
                        "bits_per_byte": 1.0, "wall_time": 10.0, "status": "finished"})
        for row in extra_rows:
            w.writerow(dict(zip(RESULT_COLUMNS, row)))


def test_runs_reads_n_total_d_counted_c_and_budgets_of_finished_rows(capsys, tmp_path):
    """The law lives in N_total and D; N_total / N runs from 3 (small) to 1.1 (large), and the counted C is
    8-38% above 6 N_total D, by size. Reading N, 6ND or levels cut from C would move a."""
    points = isoflop_runs()
    n_non_embedding = points.n / (1 + 2e8 / points.n) ** 0.5 / 1.0
    counted = points.c * (1 + (1e8 / points.n) ** 0.3 * 0.15)
    budgets = points.c.copy()
    points = make_points(points.n, points.loss, tokens=points.d, flops=counted)
    write_results_csv(tmp_path, points, n_non_embedding, budgets,
                      extra_rows=[["bad", "{}", 1e18, "", 1e6, 1e6, 0, 0, "nan", "nan", "", 1.0, "failed"]])
    code, out, err = run(capsys, "fit", "--runs", str(tmp_path), "--law", "chinchilla", "--approach", "2",
                         "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["n_points"] == 45 and abs(report["a"] - 0.30 / 0.64) < 0.02
    assert report["inputs"] == {"N": "N_total", "D": "D", "C": "C", "levels": "by declared budget (budget_flops)"}
    assert [level["C"] for level in report["levels"]] == [1e18, 3e18, 1e19, 3e19, 1e20]
    assert report["compute"].startswith("C = ") and "fitted to the runs' C" in report["compute"]


def test_runs_without_budgets_cut_levels_from_c_and_say_so(capsys, tmp_path):
    points = isoflop_runs()
    write_results_csv(tmp_path, points, points.n, [""] * len(points))
    code, out, err = run(capsys, "fit", "--runs", str(tmp_path), "--law", "chinchilla", "--approach", "1")
    assert code == 0, err
    assert "levels: by C, 0.1 decades wide (the runs carry no declared budgets)" in out
    assert "N: N_total" in out and "C: C" in out and "compute levels:" in out


def test_kaplan_one_variable_laws_refuse_isoflop_data(capsys, sweep_csv):
    """An IsoFLOP sweep trains each N at one D per budget, here at 45 distinct sizes: L(N) and L(D) cannot be
    told from each other's effect, and the report says so instead of printing an exponent."""
    code, out, err = run(capsys, "fit", "--csv", sweep_csv, *CSV_COLUMNS, "--law", "kaplan")
    assert code == 0, err
    assert "L_N: refused: no N was trained at 2 or more values of D" in out
    assert "L_D: refused: no D was trained at 2 or more values of N" in out
    assert "allocation: the minimum of Kaplan's L(N, D) (eq. 1.5) at C = 6 N D, not Kaplan et al.'s C_min" in out


@pytest.mark.parametrize("case, argv, message", [
    ("missing csv", ["--csv", "{d}/nope.csv", *CSV_COLUMNS, "--law", "chinchilla"], "--csv: file"),
    ("missing column", ["--csv", "{csv}", "--params-col", "size", "--flops-col", "flops", "--loss-col", "loss",
                        "--law", "chinchilla"], "--params_col: column 'size'"),
    ("zero N", ["--csv", "{zero_n}", *CSV_COLUMNS, "--law", "chinchilla"], "--params_col: column 'params' must"),
    ("negative D", ["--csv", "{neg_d}", "--params-col", "params", "--tokens-col", "tokens", "--loss-col", "loss",
                    "--law", "kaplan"], "--tokens_col: column 'tokens' must"),
    ("zero loss", ["--csv", "{zero_loss}", *CSV_COLUMNS, "--law", "chinchilla"], "--loss_col: column 'loss' must"),
    ("too few points", ["--csv", "{few}", *CSV_COLUMNS, "--law", "chinchilla"], "5 parameters; got 4"),
    ("approach for kaplan", ["--csv", "{csv}", *CSV_COLUMNS, "--law", "kaplan", "--approach", "1"], "--approach"),
    ("approach 4", ["--csv", "{csv}", *CSV_COLUMNS, "--law", "chinchilla", "--approach", "4"], "--approach"),
    ("stride 0", ["--csv", "{csv}", *CSV_COLUMNS, "--law", "chinchilla", "--start-stride", "0"], "--start-stride"),
    ("window 0", ["--csv", "{csv}", *CSV_COLUMNS, "--law", "chinchilla", "--approach", "2", "--isoflop-window", "0"],
     "--isoflop-window: must be a positive"),
    ("window for kaplan", ["--csv", "{csv}", *CSV_COLUMNS, "--law", "kaplan", "--isoflop-window", "1"],
     "--isoflop-window: applies to --law chinchilla"),
    ("no law", ["--csv", "{csv}", *CSV_COLUMNS], "--law"),
    ("unknown flag", ["--csv", "{csv}", *CSV_COLUMNS, "--law", "kaplan", "--bogus", "1"], "bogus"),
    ("csv and runs", ["--csv", "{csv}", "--runs", "{d}", *CSV_COLUMNS, "--law", "kaplan"], "exactly one"),
    ("runs without results.csv", ["--runs", "{d}", "--law", "kaplan"], "--runs: file"),
    ("not a number", ["--csv", "{text}", *CSV_COLUMNS, "--law", "chinchilla"],
     "--flops_col: column 'flops' of "),
    ("no finished runs", ["--runs", "{unfinished}", "--law", "chinchilla"], "holds no finished runs yet (2 failed, 1 "
                                                                             "running); nothing to fit"),
    ("budgets that cannot be grouped", ["--runs", "{mixed}", "--law", "chinchilla", "--approach", "2"],
     "--runs: IsoFLOP levels cannot be grouped: column 'budget_flops'"),
    ("approach 2 on 2 levels", ["--csv", "{two_levels}", *CSV_COLUMNS, "--law", "chinchilla", "--approach", "2"],
     "approach 2 needs at least 3 compute levels with an IsoFLOP minimum inside their sizes; 2 of 2 levels"),
    ("zero budget", ["--csv", "{csv}", *CSV_COLUMNS, "--law", "chinchilla", "--budgets", "1e20,0"],
     "--budgets: must be positive"),
    ("delta 0", ["--csv", "{csv}", *CSV_COLUMNS, "--law", "chinchilla", "--huber_delta", "0"],
     "--huber_delta: must be positive"),
    ("objective for approach 2", ["--csv", "{csv}", *CSV_COLUMNS, "--law", "chinchilla", "--approach", "2",
                                  "--objective", "lad"], "--objective: applies to --law chinchilla --approach 3"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, case, argv, message):
    points = isoflop_runs()
    files = {"d": str(tmp_path), "csv": str(write_csv(tmp_path / "ok.csv", points)),
             "few": str(write_csv(tmp_path / "few.csv", points.subset(slice(0, 4))))}
    for name, row in (("zero_n", ["0", "1e18", "3.0"]), ("zero_loss", ["1e6", "1e18", "0"])):
        files[name] = str(write_csv(tmp_path / f"{name}.csv", points, extra_rows=[row]))
    files["neg_d"] = str(write_csv(tmp_path / "neg_d.csv", points, flops=False, extra_rows=[["1e6", "-5", "3"]]))
    files["text"] = str(write_csv(tmp_path / "text.csv", points, extra_rows=[["1e6", "1e18 FLOPs", "3"]]))
    files["two_levels"] = str(write_csv(tmp_path / "two.csv", points.subset(slice(0, 18))))
    for name, rows in (("unfinished", [["a", "{}", 1e18, "", 1, 1, 1, 1, "", "", "", 1, status]
                                       for status in ("failed", "running", "failed")]),
                       ("mixed", [["a", "{}", "", "", 1e6, 1e6, 1e9, 1e16, 3.0, 3.0, 1, 1, "finished"]])):
        (tmp_path / name).mkdir()
        some = points.subset(slice(0, 0 if name == "unfinished" else 9))
        write_results_csv(tmp_path / name, some, some.n, some.c, extra_rows=rows)
        files[name] = str(tmp_path / name)
    code, out, err = run(capsys, "fit", *[a.format(**files) for a in argv])
    assert code == 2, case
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def test_module_entry_point_reports_bad_input(tmp_path, repo_root):
    result = subprocess.run([sys.executable, "-m", "bmjax.cli.scaling", "fit", "--csv", str(tmp_path / "x.csv"),
                             *CSV_COLUMNS, "--law", "chinchilla"], cwd=repo_root, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        result.stderr.strip().splitlines()[-1]]
    assert "does not exist" in result.stderr


def test_predict_gives_the_fitted_laws_loss_and_the_compute_optimal_point_with_intervals(capsys, sweep_csv):
    fit_args = ["--csv", sweep_csv, *CSV_COLUMNS, "--law", "chinchilla", "--start-stride", "45", "--json"]
    code, out, err = run(capsys, "fit", *fit_args, "--budgets", "1e22")
    assert code == 0, err
    law = json.loads(out)
    code, out, err = run(capsys, "predict", *fit_args, "--n", "1e9", "--d", "2e10", "--bootstrap", "6")
    assert code == 0, err
    at = json.loads(out)
    expected = law["E"] + law["A"] / 1e9 ** law["alpha"] + law["B"] / 2e10 ** law["beta"]
    assert at["loss"] == pytest.approx(expected, rel=1e-9)
    assert at["ci"]["loss"][0] < at["ci"]["loss"][1]
    code, out, err = run(capsys, "predict", *fit_args, "--flops", "1e22")
    assert code == 0, err
    optimum = json.loads(out)
    assert optimum["N_opt"] == pytest.approx(law["table"][0]["N_opt"], rel=1e-9)
    assert optimum["decades_past_data"] == pytest.approx(2.0)
    assert 6 * optimum["N_opt"] * optimum["D_opt"] == pytest.approx(1e22, rel=1e-9)


@pytest.mark.parametrize("argv, message", [
    ([], "--flops: predict needs --n N --d D, or --flops C"),
    (["--n", "1e9", "--d", "1e10", "--flops", "1e20"], "not both"),
    (["--flops", "-1"], "--flops: must be a positive number"),
    (["--n", "1e9", "--d", "1e10", "--approach", "2"], "--approach: approaches 1 and 2 fit no loss law"),
])
def test_predict_bad_input_is_one_line_and_exit_2(capsys, sweep_csv, argv, message):
    code, out, err = run(capsys, "predict", "--csv", sweep_csv, *CSV_COLUMNS, "--law", "chinchilla", *argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err, err
