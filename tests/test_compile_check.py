"""bmjax-compile-check (bmjax/cli/compile_check.py): compile the train step for a mesh without running it and report
per-device memory."""
import importlib.util

import pytest

from bmjax.defaults import base_config
from helpers.commands import error_line, run
from helpers.compile import FAST_COMPILE


def tiny_config(**mesh):
    c = base_config()
    c.model.update(name="gpt", vocab_size=64, d_model=64, num_layers=1, num_heads=4, max_len=32)
    c.data.update(seq_len=32, batch_size=16)
    c.mesh.update(dict(data=-1), **mesh)
    return c


def test_fsdp_splits_parameters_and_optimizer_state_over_devices():
    import jax

    from bmjax.train.compile_report import compile_step

    replicated = compile_step(tiny_config(data=8), jax.devices(), FAST_COMPILE)
    sharded = compile_step(tiny_config(data=1, fsdp=8), jax.devices(), FAST_COMPILE)
    assert replicated["params"] == sharded["params"] > 0
    # Matrices are split 8 ways over their embedding dimension; only small biases stay whole.
    assert replicated["params_bytes"] == 4 * replicated["params"]
    assert replicated["params_bytes"] / 8 < sharded["params_bytes"] < replicated["params_bytes"] / 7
    assert replicated["opt_state_bytes"] / 8 < sharded["opt_state_bytes"] < replicated["opt_state_bytes"] / 7
    assert sharded["argument_bytes"] < replicated["argument_bytes"] / 4
    assert sharded["temp_bytes"] > 0 and sharded["peak_bytes"] > sharded["argument_bytes"]


def run_tool(*args):
    # The tool adds its own device count to XLA_FLAGS (so none is forced here).
    return run("-m", "bmjax.cli.compile_check", "--config", "configs/gpt/tiny.py", *args, devices=0, fast_compile=True)


def test_cli_reports_memory_and_fails_over_the_limit():
    result = run_tool("--devices", "4", "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.model.num_layers=1",
                      "--memory_limit_gb", "0.0001", "--print_shardings")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "mesh data=2 fsdp=2 tensor=1 sequence=1 on 4 cpu devices" in result.stdout
    assert "peak estimate per device" in result.stdout
    assert "wte.embedding" in result.stdout and "does not fit" in result.stdout


NO_LIBTPU = importlib.util.find_spec("libtpu") is None


@pytest.mark.parametrize("args,culprit", [
    (["--devices", "4", "--config.mesh.data=8"], "error: mesh:"),
    (["--devices", "8", "--config.mesh.fsdp=3"], "error: mesh.fsdp: mesh.fsdp=3 uses 3 devices"),  # not mesh.data
    (["--topology", "v5e"], "error: --topology: 'v5e' is not a TPU topology name"),
    (["--config.model.no_such_key=1"], "error: --config.model.no_such_key: unknown config key"),
    (["--config.model.attention=flash"], "error: model.attention: got 'flash'"),
    (["stray"], "error: unexpected arguments: stray"),
    pytest.param(["--topology", "v5e:2x2"], "error: --topology v5e:2x2: cannot build it here",
                 marks=pytest.mark.skipif(not NO_LIBTPU, reason="libtpu is installed: the topology builds")),
])
def test_cli_bad_input_is_one_line_and_exit_2(args, culprit):
    result = run_tool(*args)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip() and "spmd_partitioner" not in line]
    assert len(lines) == 1 and lines[0].startswith(culprit), result.stderr[-2000:]


def test_cli_missing_config_file_is_one_line_and_exit_2():
    result = run("-m", "bmjax.cli.compile_check", "--config", "configs/gpt/nope.py")
    assert error_line(result).startswith("error: --config: config file")
