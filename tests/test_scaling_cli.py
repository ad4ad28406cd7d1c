"""bmjax-scaling fit: JSON output, --runs, plots, and one line + exit 2 on bad input."""
import csv
import json
import subprocess
import sys

import pytest

from bmjax.cli.scaling import main
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
    assert [row["C"] for row in report["table"]] == [float(f"1e{k}") for k in range(18, 26)]
    for name in ("loss_vs_compute.png", "isoflop.png", "fitted_law.png", "optimal_allocation.png"):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000


def test_approach3_json(capsys, sweep_csv):
    # Every 45th grid start (100 of 4,500) keeps this quick; the full grid is tested in test_scaling_fits.
    code, out, err = run(capsys, "fit", "--csv", sweep_csv, *CSV_COLUMNS, "--law", "chinchilla", "--json",
                         "--start-stride", "45")
    assert code == 0, err
    report = json.loads(out)
    for key in ("E", "A", "B", "alpha", "beta", "a", "b", "objective", "n_points"):
        assert key in report
    assert abs(report["alpha"] - 0.34) < 0.02 and abs(report["beta"] - 0.30) < 0.02
    assert abs(report["a"] - report["beta"] / (report["alpha"] + report["beta"])) < 1e-12
    row = report["table"][0]
    assert abs(6 * row["N_opt"] * row["D_opt"] / row["C"] - 1) < 1e-9 and row["loss"] > report["E"]


def test_kaplan_json_from_tokens(capsys, tmp_path):
    path = str(write_csv(tmp_path / "k.csv", kaplan_runs(), flops=False))
    code, out, err = run(capsys, "fit", "--csv", path, "--params-col", "params", "--tokens-col", "tokens",
                         "--loss-col", "loss", "--law", "kaplan", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert abs(report["alpha_N"] / TRUE_KAPLAN["alpha_n"] - 1) < 0.1
    assert abs(report["alpha_D"] / TRUE_KAPLAN["alpha_d"] - 1) < 0.1
    assert abs(report["a"] + report["b"] - 1) < 1e-9 and report["n_points"] == 49
    assert {"L_N", "L_D", "L_C"} <= report.keys()


def test_runs_reads_finished_rows_of_results_csv(capsys, tmp_path):
    points = isoflop_runs()
    header = ["run", "overrides", "N", "N_total", "D", "C", "final_eval_loss", "best_eval_loss",
              "bits_per_byte", "wall_time", "status"]
    with open(tmp_path / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i, (n, d, c, loss) in enumerate(zip(points.n, points.d, points.c, points.loss)):
            w.writerow([f"r{i}", "", n * 0.9, n, d, c, loss, loss, 1.0, 10.0, "finished"])
        w.writerow(["bad", "", 1e6, 1e6, 0, 0, "nan", "nan", "", 1.0, "failed"])  # skipped: not finished
    code, out, err = run(capsys, "fit", "--runs", str(tmp_path), "--law", "chinchilla", "--approach", "2",
                         "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["n_points"] == 45 and abs(report["a"] - 0.30 / 0.64) < 0.02


@pytest.mark.parametrize("case, argv, message", [
    ("missing csv", ["--csv", "{d}/nope.csv", *CSV_COLUMNS, "--law", "chinchilla"], "--csv: file"),
    ("missing column", ["--csv", "{csv}", "--params-col", "size", "--flops-col", "flops", "--loss-col", "loss",
                        "--law", "chinchilla"], "--params-col: column 'size'"),
    ("zero N", ["--csv", "{zero_n}", *CSV_COLUMNS, "--law", "chinchilla"], "--params-col: column 'params' must"),
    ("negative D", ["--csv", "{neg_d}", "--params-col", "params", "--tokens-col", "tokens", "--loss-col", "loss",
                    "--law", "kaplan"], "--tokens-col: column 'tokens' must"),
    ("zero loss", ["--csv", "{zero_loss}", *CSV_COLUMNS, "--law", "chinchilla"], "--loss-col: column 'loss' must"),
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
    ("tokens and flops", ["--csv", "{csv}", *CSV_COLUMNS, "--tokens-col", "x", "--law", "kaplan"], "at most one"),
    ("runs without results.csv", ["--runs", "{d}", "--law", "kaplan"], "--runs: file"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, case, argv, message):
    points = isoflop_runs()
    files = {"d": str(tmp_path), "csv": str(write_csv(tmp_path / "ok.csv", points)),
             "few": str(write_csv(tmp_path / "few.csv", points.subset(slice(0, 4))))}
    for name, row in (("zero_n", ["0", "1e18", "3.0"]), ("zero_loss", ["1e6", "1e18", "0"])):
        files[name] = str(write_csv(tmp_path / f"{name}.csv", points, extra_rows=[row]))
    files["neg_d"] = str(write_csv(tmp_path / "neg_d.csv", points, flops=False, extra_rows=[["1e6", "-5", "3"]]))
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
