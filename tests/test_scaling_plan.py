"""bmjax-scaling plan on a known law: the compute-optimal N, D of the allocation formula, a GPT shape whose
parameters (bmjax's own count of the built config) are within 10% of N_opt, train.steps for the batch, the law's
loss for that run, the bmjax-train command line; --devices compiles it; bad input is one line and exit 2."""
import json
import shlex

import pytest

from bmjax.cli.scaling import main
from bmjax.models import flops, model_config
from bmjax.scaling import plan as plan_lib
from bmjax.scaling import sweep as sweep_lib
from scaling_data import TRUE_CHINCHILLA, isoflop_runs, write_csv

FIT = ["--params_col", "params", "--flops_col", "flops", "--loss_col", "loss", "--law", "chinchilla",
       "--start_stride", "45"]  # every 45th grid start keeps approach 3 quick; test_scaling_fits runs the grid


@pytest.fixture(scope="module")
def runs_csv(tmp_path_factory):
    return str(write_csv(tmp_path_factory.mktemp("plan") / "runs.csv", isoflop_runs()))  # C up to 1e20


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def optimum(law, c):
    """Hoffmann et al.'s closed form at C = 6 N D: N_opt = G (C/6)^a, D_opt = (C/6) / N_opt."""
    total = law["alpha"] + law["beta"]
    g = (law["alpha"] * law["A"] / (law["beta"] * law["B"])) ** (1 / total)
    n = g * (c / 6) ** (law["beta"] / total)
    return n, c / 6 / n


def loss(law, n, d):
    return law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]


def config_of(command: list[str]):
    """The config the printed bmjax-train command trains: its file with its --config.KEY=VALUE overrides."""
    config = plan_lib.load_base_config(command[command.index("--config") + 1])
    for arg in command:
        if arg.startswith("--config."):
            key, value = arg.removeprefix("--config.").split("=", 1)
            sweep_lib.set_key(config, key, type(config[key.split(".")[0]][key.split(".")[1]])(value))
    return config


@pytest.mark.parametrize("flops_budget, batch, seq", [(1e21, None, None), (3e22, 256, 2048)])
def test_plan_on_a_known_law(capsys, runs_csv, flops_budget, batch, seq):
    batch_args = [] if batch is None else ["--batch_size", str(batch), "--seq_len", str(seq)]
    code, out, err = run(capsys, "plan", "--csv", runs_csv, *FIT, "--flops", str(flops_budget), *batch_args,
                         "--json")
    assert code == 0, err
    plan = json.loads(out)
    fit = run(capsys, "fit", "--csv", runs_csv, *FIT, "--json")[1]
    fitted = {k: json.loads(fit)[k] for k in TRUE_CHINCHILLA}
    # N_opt, D_opt: the closed form on the fitted law, and close to the true law's (extrapolated 1-2.5 decades)
    n_opt, d_opt = optimum(fitted, flops_budget)
    assert plan["N_opt"] == pytest.approx(n_opt, rel=1e-9) and plan["D_opt"] == pytest.approx(d_opt, rel=1e-9)
    true_n, true_d = optimum(TRUE_CHINCHILLA, flops_budget)
    assert plan["N_opt"] == pytest.approx(true_n, rel=0.15) and plan["D_opt"] == pytest.approx(true_d, rel=0.15)
    # The command's config: its counted total parameters within 10% of N_opt, its steps D_opt of its batch
    config = config_of(plan["command"])
    n = flops.param_counts(model_config(config.model))["total"]
    assert n == plan["N"] and abs(n / plan["N_opt"] - 1) < 0.10
    assert config.model.d_model == 64 * config.model.num_heads  # the head size rule
    assert 0.5 < config.model.d_model / config.model.num_layers / 64 < 2  # the aspect-ratio rule
    tokens = int(config.data.batch_size) * int(config.data.seq_len)
    assert (config.data.batch_size, config.data.seq_len) == ((batch, seq) if batch else (512, 1024))
    assert config.train.steps == round(plan["D_opt"] / tokens) and plan["D"] == config.train.steps * tokens
    assert plan["loss"] == pytest.approx(loss(fitted, plan["N"], plan["D"]), rel=1e-9)
    assert plan["loss_at_optimum"] == pytest.approx(loss(fitted, n_opt, d_opt), rel=1e-9)
    assert plan["counted_C"] == pytest.approx(plan["D"] * sweep_lib.counted_flops_per_token(config), rel=1e-12)


def test_plan_prints_the_optimum_the_interval_and_the_command(capsys, runs_csv):
    code, out, err = run(capsys, "plan", "--csv", runs_csv, *FIT, "--flops", "1e21", "--bootstrap", "5",
                         "--workdir", "runs/forecast")
    assert code == 0, err
    lines = out.splitlines()
    command = shlex.split(lines[-1])
    assert command[:5] == ["bmjax-train", "--config", "configs/gpt/gpt2.py", "--workdir", "runs/forecast"]
    text = dict(line.strip().split(": ", 1) for line in lines[:-1])
    low, high = (float(v) for v in text["predicted loss"].split("CI [")[1].split("]")[0].split(", "))
    assert low < float(text["predicted loss"].split()[0]) < high  # an interval of nonzero width round it
    assert "total parameters" in text["N"] and text["budget C"].startswith("1e+21 FLOPs (1.0 decades past")


def test_devices_compiles_the_planned_run_and_prints_its_memory(capsys, runs_csv):
    # A small budget on the tiny byte-level config: N_opt ~ 1e5, one compile on the 8 fake devices
    code, out, err = run(capsys, "plan", "--csv", runs_csv, *FIT, "--flops", "1e14", "--config",
                         "configs/gpt/tiny.py", "--aspect_ratio", "32", "--head_dim", "16", "--devices", "8",
                         "--json")
    assert code == 0, err
    plan = json.loads(out)
    report = plan["compile"]
    assert report["devices"] == 8 and report["mesh"]["data"] == 8
    assert report["params"] == plan["N"]  # the compiled model is the planned one
    assert report["params_bytes"] == 4 * plan["N"]  # float32, replicated over the data axis
    assert report["peak_bytes"] > report["params_bytes"]
    code, out, err = run(capsys, "plan", "--csv", runs_csv, *FIT, "--flops", "1e14", "--config",
                         "configs/gpt/tiny.py", "--aspect_ratio", "32", "--head_dim", "16", "--devices", "8")
    assert code == 0, err
    assert "per device: params" in out and "peak estimate per device:" in out


@pytest.mark.parametrize("argv, message", [
    (["--flops", "-1"], "error: --flops: plan needs a positive FLOP budget"),
    ([], "error: --flops: plan needs a positive FLOP budget"),
    (["--flops", "1e21", "--aspect_ratio", "0"], "error: --aspect_ratio: must be a positive number"),
    (["--flops", "1e21", "--head_dim", "0"], "error: --head_dim: must be a positive integer"),
    (["--flops", "1e21", "--min_layers", "0"], "error: --min_layers: must be a positive integer"),
    (["--flops", "1e21", "--min_tokens", "-1"], "error: --min_tokens: must be a number of tokens >= 0"),
    (["--flops", "1e21", "--n", "1e9"], "error: --n: applies to predict only"),
    (["--flops", "1e21", "--devices", "8", "--topology", "v5e:4x4"], "error: --devices: give --devices or"),
    (["--flops", "1e21", "--config", "configs/gpt/missing.py"], "error: --config: config file"),
    (["--flops", "1e21", "--devices", "64"], "error: --devices: 64 devices asked for; jax has 8"),
])
def test_plan_bad_input_is_one_line_and_exit_2(capsys, runs_csv, argv, message):
    code, out, err = run(capsys, "plan", "--csv", runs_csv, *FIT, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(message), err
