"""The golden runs: which configs, how they are trained, and what the stack they ran on was.

Shared by tests/test_golden.py (reproduce) and tests/golden/regenerate.py (record), so both train the
same thing the same way.
"""
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

GOLDEN_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = GOLDEN_DIR.parents[1]  # tests/golden -> tests -> the repository
STEPS = 20
# A short, fully logged run: every train loss, one eval at the end, no sample, one checkpoint.
SHORT = (f"--config.train.steps={STEPS}", "--config.train.log_every=1", f"--config.train.eval_every={STEPS}",
         "--config.train.eval_steps=2", f"--config.train.ckpt_every={STEPS}")
RUNS = {  # golden name -> (config, its overrides)
    "gpt_tiny": ("configs/gpt/tiny.py", (*SHORT, "--config.train.sample_tokens=0")),
    "bert_tiny": ("configs/bert/tiny.py", SHORT),
}
STACK_PACKAGES = ("jax", "jaxlib", "flax", "optax")
# Relative tolerance off the pinned stack. Float32 rounding alone (AVX2 instead of AVX-512 kernels, two
# devices instead of one) moves these 20-step losses by a few float32 eps (1.2e-7), a real change (lr x 1.01,
# another seed) by over 1e-3 (tests/golden/perturbations.md): 1e-4 leaves rounding ~100x room to grow on
# another stack and stays an order of magnitude below the smallest real change.
RTOL = 1e-4


def _cpuinfo() -> str:
    try:
        return pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpuinfo_field(name: str) -> str | None:
    found = re.search(rf"^{name}\s*:(.*)$", _cpuinfo(), re.M)
    return found.group(1).strip() if found else None


def cpu_isa() -> str:
    """The float32 ISA class XLA compiles for: 'avx512' or 'avx2' (they round float32 sums differently)."""
    capped = re.search(r"--xla_cpu_max_isa=(\w+)", os.environ.get("XLA_FLAGS", ""))
    flags = set((_cpuinfo_field("flags") or "").split())
    isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other"
    if capped and isa == "avx512" and not capped.group(1).upper().startswith("AVX512"):
        isa = "avx2" if capped.group(1).upper() == "AVX2" else "other"
    return isa


def cpu_model() -> str:
    """The processor XLA tunes its kernels for (vendor, family, model): two AVX-512 machines of different makes
    (an AMD EPYC and an Intel Xeon) still round some float32 sums differently, by a float32 eps or so."""
    fields = [_cpuinfo_field(name) for name in ("vendor_id", "cpu family", "model")]
    return " ".join(f or "?" for f in fields)


def stack() -> dict:
    """What a bit-for-bit reproduction depends on."""
    return {**{name: importlib.metadata.version(name) for name in STACK_PACKAGES}, "cpu_isa": cpu_isa(),
            "cpu_model": cpu_model()}


def train(name: str, workdir, *extra: str, devices: int = 1, threads: int | None = None, env: dict | None = None,
          wrapper: tuple = ()) -> subprocess.CompletedProcess:
    """`bmjax-train` of golden run `name` into `workdir` on `devices` CPU devices (the goldens: one; the test
    suite's fake 8 are removed) and a thread pool of `threads` (default 2 per device, whatever the machine's
    cores: the pool's size changes how matmuls are split, and so their float32 rounding); `extra` overrides
    come last (they win); `wrapper`: a command to run it under."""
    config, overrides = RUNS[name]
    env = dict(os.environ if env is None else env)
    other_flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", "")).split()
    env["XLA_FLAGS"] = " ".join([*other_flags, f"--xla_force_host_platform_device_count={devices}"])
    env["PJRT_NPROC"] = str(threads or 2 * devices)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([*wrapper, sys.executable, "-m", "bmjax.cli.train", "--config", config, "--workdir", str(workdir),
                           *overrides, *extra], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def loss_compare():
    """tools/loss_compare.py as a module (the one place that pairs and compares losses)."""
    spec = importlib.util.spec_from_file_location("loss_compare", REPO_ROOT / "tools" / "loss_compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trace(workdir) -> dict:
    """A run's train losses (steps 1..STEPS) and final eval loss."""
    losses = loss_compare().read_losses(workdir)
    return {"train_loss": [losses[("train", step)] for step in range(1, STEPS + 1)],
            "eval_loss": losses[("eval", STEPS)]}


def golden_path(name: str) -> pathlib.Path:
    return GOLDEN_DIR / f"{name}.json"


def read_golden(name: str) -> dict:
    return json.loads(golden_path(name).read_text())


def as_losses(golden: dict) -> dict:
    """A golden trace in loss_compare's {(split, step): loss} form."""
    return {**{("train", step): loss for step, loss in enumerate(golden["train_loss"], start=1)},
            ("eval", STEPS): golden["eval_loss"]}
