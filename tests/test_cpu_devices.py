"""The automatic CPU device count: one device per core unless the config or the environment says otherwise, and
never a count the batch cannot be split over."""
import json
import os
import subprocess
import sys

import pytest

from bmjax import runtime
from bmjax.defaults import base_config
from bmjax.errors import ConfigError
from helpers.paths import REPO_ROOT


def _run(code: str, *args, timeout=300, **env) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter (jax not started) without the tests' fake devices."""
    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PJRT_NPROC", "JAX_NUM_CPU_DEVICES")}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO_ROOT, env=environ, capture_output=True,
                          text=True, timeout=timeout)


DEVICES_AFTER_USE = """
import json, os, sys
import bmjax, jax
from bmjax import runtime
from bmjax.defaults import base_config
c = base_config()
c.data.batch_size = 4 * os.cpu_count()  # a batch every core count divides
if sys.argv[1:]:
    c.mesh.cpu_devices = int(sys.argv[1])
runtime.use_cpu_devices(c)
print(json.dumps({"devices": jax.local_device_count(), "cores": os.cpu_count()}))
"""


def _devices(*args, **env) -> dict:
    result = _run(DEVICES_AFTER_USE, *args, **env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_default_config_uses_every_core():
    assert base_config().mesh.cpu_devices is None
    out = _devices()
    assert out["devices"] == out["cores"]


def test_config_and_environment_win_over_the_automatic_count():
    assert _devices("1")["devices"] == 1  # an explicit count
    assert _devices("0")["devices"] == 1  # 0: as jax starts it
    assert _devices(JAX_NUM_CPU_DEVICES="3")["devices"] == 3
    assert _devices(XLA_FLAGS="--xla_force_host_platform_device_count=5")["devices"] == 5
    assert _devices("1", XLA_FLAGS="--xla_force_host_platform_device_count=5")["devices"] == 5


def _config(batch=16, accum=1, seq_len=128, **mesh):
    c = base_config()
    c.data.batch_size, c.optim.grad_accum, c.data.seq_len = batch, accum, seq_len
    for axis, size in mesh.items():
        c.mesh[axis] = size
    return c


@pytest.mark.parametrize("config, cores, expected", [
    (_config(batch=16), 3, 2),  # 3 does not divide 16: the largest count that does
    (_config(batch=16), 8, 8),
    (_config(batch=16), 24, 16),
    (_config(batch=15), 4, 3),
    (_config(batch=16, accum=8), 4, 2),  # micro-batches of 2
    (_config(batch=16, tensor=2), 3, 2),  # tensor=2 needs an even count; data takes the rest
    (_config(batch=16, data=2), 8, 2),  # a fixed mesh: its size
    (_config(batch=16, sequence=2, seq_len=8), 4, 4),  # data=2 x sequence=2
    (_config(batch=16, sequence=4, seq_len=6), 8, 4),  # no count fits seq_len: the mesh's, for validation to name
    (_config(batch=16, tensor=4), 2, 4),  # more than the cores: the mesh's count, validation judges the rest
])
def test_automatic_count_fits_the_batch_and_mesh(config, cores, expected):
    assert runtime.auto_cpu_devices(config, cores) == expected


def test_bad_cpu_devices_is_a_config_error():
    config = base_config()
    config.mesh.cpu_devices = -1
    with pytest.raises(ConfigError, match="mesh.cpu_devices: must be unset"):
        runtime.use_cpu_devices(config)


FINETUNE_ON_3_CORES = """
import atexit, os, sys
os.cpu_count = lambda: 3  # as on a 3-core machine: batch 16 cannot be split 3 ways
import jax
from bmjax.cli import train
atexit.register(lambda: print("devices", jax.local_device_count()))
sys.argv = ["bmjax-train", *sys.argv[1:]]
sys.exit(train.main())
"""


def test_bert_finetune_default_runs_where_cores_do_not_divide_the_batch(tmp_path):
    data = tmp_path / "train.csv"
    data.write_text("text,label\n" + "".join(f"{'good' if i % 2 else 'bad'} row {i},{i % 2}\n" for i in range(40)))
    workdir = tmp_path / "run"
    result = _run(FINETUNE_ON_3_CORES, "--config", f"configs/bert/finetune.py:data={data},labels=2,model=tiny,runlocal",
                  "--config.train.steps=2", "--config.train.steps_per_call=1", "--config.train.log_every=1",
                  "--config.train.eval_every=2", "--config.train.ckpt_every=2", "--config.train.eval_steps=1",
                  f"--workdir={workdir}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((workdir / "config.json").read_text())
    assert config["data"]["batch_size"] == 16 and config["mesh"]["cpu_devices"] is None
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == 2, summary
    assert result.stdout.strip().splitlines()[-1] == "devices 2"  # the largest count dividing 16 on 3 cores
