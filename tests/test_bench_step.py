"""tools/bench_step.py, the speed benchmark users run (and tools/bench_gpu.sh wraps): it reports the step's
speed and MFU for a config, and with --profile_dir leaves a profiler trace to read in TensorBoard/XProf."""
import json

from helpers.commands import run

SMALL_GPT = ("--config", "configs/gpt/gpt2.py:size=124m,runlocal", "--config.train.log_every=10",
             "--steps", "8", "--warmup", "2", "--window", "4")


def run_bench(*args):
    return run("tools/bench_step.py", *SMALL_GPT, *args, devices=1)


def test_reports_speed_and_leaves_a_profile(tmp_path):
    result = run_bench("--profile_dir", str(tmp_path / "profile"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ms/step" in result.stdout and "MFU" in result.stdout
    traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
    assert traces and traces[0].stat().st_size > 0


def test_json_line_for_scripts():
    result = run_bench("--json")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["ms_per_step"] > 0 and record["timed_steps"] == 8


def test_a_bad_config_is_one_line_and_exit_2():
    result = run_bench("--config.train.log_every=7", "--config.train.steps_per_call=2")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: train.log_every")
    assert "Traceback" not in result.stderr
