"""TPU readiness without a TPU: the TPU compiler (libtpu) runs on this CPU machine, so every shipped GPT and BERT
config's train step, with the splash kernel and packed batches, is compiled for the TPU slice it is meant for,
and must fit its HBM; a plan that does not fit is the compile_check tool's verdict with the compiler's figures.

Marked `tpu` and skipped unless libtpu is importable: `make test-tpu` installs it into .venv-tpu (kept out of the
main environment, where jax would try the TPU backend first) and runs these tests. What it costs: one compile
per config, the models' layers under lax.scan (model.scan_layers) so one block is compiled, not num_layers; the
memory plan is the same scanned program the config would run with scan_layers on.
"""
import importlib.util
import os
import subprocess
import sys

import pytest

from helpers.configs import load_config

pytestmark = [
    pytest.mark.tpu,
    pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                       reason="needs libtpu: `make test-tpu` installs it into .venv-tpu and runs these"),
]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 2**30
# HBM per chip, for the fit check (the compiler refuses a plan over it; this asserts the margin is real too).
HBM_GIB = {"v5e": 16}

# The plan each shipped config is meant for: its TPU slice and the mesh/batch split that goes with it. GPT-2's
# 512 x 1024 batch is 8 micro-batches of 64 (4 sequences per chip), fully rematerialised, FSDP over 16 chips.
GPT2_PLAN = {"mesh.data": 1, "mesh.fsdp": 16, "optim.grad_accum": 8, "model.remat": "full"}
PLANS = {
    "configs/gpt/tiny.py": ("v5e:2x2", {}),
    "configs/gpt/shakespeare_char.py": ("v5e:2x2", {}),
    "configs/gpt/gpt2.py:size=124m": ("v5e:4x4", GPT2_PLAN),
    "configs/gpt/gpt2.py:size=350m": ("v5e:4x4", GPT2_PLAN),
    "configs/gpt/gpt2.py:size=774m": ("v5e:4x4", GPT2_PLAN),
    "configs/gpt/gpt2.py:size=1.5b": ("v5e:4x4", GPT2_PLAN),
    # BERT: splash has no attention-probability dropout, so these compile with model.dropout=0.
    "configs/bert/tiny.py": ("v5e:2x2", {"model.dropout": 0.0}),
    "configs/bert/base.py": ("v5e:2x2", {"model.dropout": 0.0}),
    "configs/bert/finetune.py:data=train.csv,labels=2": ("v5e:2x2", {"model.dropout": 0.0}),
}


def tpu_devices(topology: str):
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    return topologies.get_topology_desc(topology_name=topology, platform="tpu").devices


def splash_plan(name: str):
    topology, overrides = PLANS[name]
    config = load_config(name)
    config.model.attention = "splash"
    config.model.scan_layers = True
    if config.data.task == "lm":
        with config.unlocked():  # data.packing comes with the data pipeline (bmjax.defaults)
            config.data.packing = "segments"  # batches carry segment_ids and positions
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        config[section][key] = value
    return topology, config


def test_every_shipped_config_has_a_plan():
    shipped = {os.path.join("configs", kind, f) for kind in ("gpt", "bert")
               for f in os.listdir(os.path.join(REPO, "configs", kind)) if f.endswith(".py")}
    assert {name.partition(":")[0] for name in PLANS} == shipped


# Compiling these takes minutes each on 2 CPU cores (BERT-base alone ~9 min under load): `make test-tpu-large`
# runs them; `make test` (CI) runs the small ones, the cheapest GPT-2 and the over-HBM verdict.
LARGE = {"configs/gpt/gpt2.py:size=350m", "configs/gpt/gpt2.py:size=774m", "configs/gpt/gpt2.py:size=1.5b",
         "configs/bert/base.py", "configs/bert/finetune.py:data=train.csv,labels=2"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.tpu_large) if n in LARGE else n for n in PLANS])
def test_shipped_config_compiles_for_its_tpu_and_fits(name):
    from bmjax.cli.compile_check import check_config
    from bmjax.train.compile_report import compile_step, format_report

    topology, config = splash_plan(name)
    devices = tpu_devices(topology)
    checked = check_config(config, devices)
    report = compile_step(config, devices, checked=checked)
    assert report["platform"] == "tpu" and report["devices"] == len(devices)
    hbm = HBM_GIB[topology.split(":")[0]] * GIB
    assert 0 < report["peak_bytes"] < hbm, format_report(config, report)
    # The state really is split over the slice: each chip holds about its share of the parameters.
    fsdp = report["mesh"]["fsdp"]
    assert report["params_bytes"] <= 4 * report["params"] / fsdp * 1.05 + 2**20


def test_a_plan_that_does_not_fit_is_the_tools_verdict():
    """GPT-2 124M with its whole 512 x 1024 batch on 4 chips and nothing rematerialised needs far more than a
    v5e's 16 GiB: the tool prints the compiler's figures and exits 1, with no traceback."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, "-m", "bmjax.cli.compile_check", "--config", "configs/gpt/gpt2.py:size=124m", "--topology",
         "v5e:2x2", "--config.mesh.data=1", "--config.mesh.fsdp=4", "--config.model.scan_layers=true",
         "--config.model.attention=splash"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "does not fit (16 GiB of HBM per chip)" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    # The compiler's own numbers: sizes in G, more used than the HBM holds.
    assert "hbm" in result.stdout.lower() and "G" in result.stdout.split("does not fit", 1)[1]
