"""Model FLOPs utilisation: achieved training FLOP/s over the hardware's peak.

Peaks of accelerators come from their spec sheets (dense, no sparsity). A CPU has no spec-sheet number that
means anything for XLA, so its peak is measured once: the best float32 matmul rate on all its cores, cached per
machine so runs do not pay for it again.
"""
import json
import os
import pathlib
import platform
import time

import jax
import jax.numpy as jnp

# Dense peak FLOP/s per chip, by (device_kind substring, dtype class).
PEAK_FLOPS = {
    "H200": {"bfloat16": 989e12, "float32": 67e12},
    "H100": {"bfloat16": 989e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12},
    "TPU v5 lite": {"bfloat16": 197e12, "float32": 197e12},
    "TPU v5e": {"bfloat16": 197e12, "float32": 197e12},
    "TPU v5p": {"bfloat16": 459e12, "float32": 459e12},
    "TPU v6": {"bfloat16": 918e12, "float32": 918e12},
}


def _cache_file() -> pathlib.Path:
    root = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
    return root / "bmjax" / "cpu_peak_flops.json"


def measure_cpu_peak(size: int = 1024, repeats: int = 5) -> float:
    """Best float32 FLOP/s of a square matmul on one CPU device (which uses all cores)."""
    device = jax.devices("cpu")[0]
    a = jax.device_put(jnp.ones((size, size), jnp.float32), device)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def cpu_peak_flops() -> float:
    """The machine's measured CPU peak, from the cache when this machine measured it before."""
    path = _cache_file()
    key = f"{platform.node()}|{platform.processor() or platform.machine()}|{os.cpu_count()}"
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return float(cached["flops"])
    except (OSError, ValueError, KeyError):
        pass
    flops = measure_cpu_peak()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"key": key, "flops": flops}))
    except OSError:
        pass
    return flops


def device_peak_flops(dtype: str = "float32") -> float:
    """Peak FLOP/s of one device of the default backend (the whole CPU counts as one device)."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return cpu_peak_flops()
    kind = device.device_kind
    klass = "bfloat16" if dtype in ("bfloat16", "float16") else "float32"
    for name, peaks in PEAK_FLOPS.items():
        if name.lower() in kind.lower():
            return peaks[klass]
    return float("nan")


def total_peak_flops(dtype: str = "float32") -> float:
    """Peak of the whole job. Fake CPU devices share one CPU, so a CPU job's peak is one CPU's."""
    if jax.devices()[0].platform == "cpu":
        return device_peak_flops(dtype) * jax.process_count()
    return device_peak_flops(dtype) * jax.device_count()
