"""pyproject.toml declares ranges that admit both the locked set (constraints.txt) and a GPU image's newer jax and
flax; its entry points name functions that exist."""
import importlib
import re
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from helpers.paths import REPO_ROOT

PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def _requirements(extras=("test", "hf")) -> dict:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    reqs += [Requirement(r) for extra in extras for r in PROJECT["optional-dependencies"][extra]]
    return {canonicalize_name(r.name): r for r in reqs}


def _pins() -> dict:
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


@pytest.mark.parametrize("name, version, admitted", [
    ("jax", "0.10.2", True), ("jax", "0.11.2", True), ("jax", "0.12.0", False), ("jax", "0.10.1", False),
    ("flax", "0.12.8", True), ("flax", "0.12.10", True), ("flax", "0.13.0", False),
    ("orbax-checkpoint", "0.12.4", True), ("optax", "0.2.8", True),
])
def test_ranges_keep_a_gpu_image_s_newer_jax_and_flax(name, version, admitted):
    # The GPU machine's own set (jax 0.11.2 with CUDA 13, flax 0.12.10, orbax 0.12.4) runs bmjax unchanged:
    # `pip install -e .` must not replace it.
    assert _requirements()[name].specifier.contains(version) is admitted


def test_the_lock_pins_every_dependency_within_its_range():
    pins = _pins()
    for name, req in _requirements().items():
        assert name in pins, f"constraints.txt does not pin {name}"
        assert req.specifier.contains(pins[name]), f"constraints.txt pins {name}=={pins[name]}, outside {req}"
    assert "bmjax" not in pins


def test_accelerator_extras_are_jax_s_own():
    extras = PROJECT["optional-dependencies"]
    assert {"cuda", "cuda12", "cuda13", "tpu", "hf", "test"} <= set(extras)
    for extra in ("cuda", "cuda12", "cuda13", "tpu"):
        (req,) = map(Requirement, extras[extra])
        assert req.name == "jax" and req.extras == {extra}


@pytest.mark.parametrize("command", sorted(PROJECT["scripts"]))
def test_entry_points_name_functions_that_exist(command):
    # In a fresh interpreter, as the console script runs: the commands define absl flags at import, so two of
    # them (or a test that loaded a tool) in one process would clash on names like --config.
    module, function = re.fullmatch(r"([\w.]+):(\w+)", PROJECT["scripts"][command]).groups()
    code = f"import importlib; assert callable(getattr(importlib.import_module({module!r}), {function!r}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]