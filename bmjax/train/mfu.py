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


def measure_cpu_peak(sizes=(1024, 2048), repeats: int = 5) -> float:
    """Best float32 FLOP/s of square matmuls on one CPU device (which uses all cores)."""
    device = jax.devices("cpu")[0]
    matmul = jax.jit(lambda x: x @ x)
    best = 0.0
    for size in sizes:
        a = jax.device_put(jnp.ones((size, size), jnp.float32), device)
        matmul(a).block_until_ready()
        for _ in range(repeats):
            start = time.perf_counter()
            matmul(a).block_until_ready()
            best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def cpu_peak_flops(refresh: bool = False) -> float:
    """The machine's CPU peak: the best rate it has been measured at.

    Measured once and cached per machine so runs do not pay for it again. A measurement taken while other jobs
    share the cores comes out low, so the cache keeps the best one seen; `refresh=True` (the benchmarks) measures
    again and raises the cached value if the machine is quieter now.
    """
    path = _cache_file()
    key = f"{platform.node()}|{platform.processor() or platform.machine()}|{os.cpu_count()}"
    cached = 0.0
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            cached = float(stored["flops"])
    except (OSError, ValueError, KeyError):
        pass
    if cached > 0 and not refresh:
        return cached
    flops = max(cached, measure_cpu_peak())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"key": key, "flops": flops}))
    except OSError:
        pass
    return flops


def device_peak_flops(dtype: str = "float32", refresh: bool = False) -> float:
    """Peak FLOP/s of one device of the default backend (the whole CPU counts as one device)."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return cpu_peak_flops(refresh)
    kind = device.device_kind
    klass = "bfloat16" if dtype in ("bfloat16", "float16") else "float32"
    for name, peaks in PEAK_FLOPS.items():
        if name.lower() in kind.lower():
            return peaks[klass]
    return float("nan")


def total_peak_flops(dtype: str = "float32", refresh: bool = False) -> float:
    """Peak of the whole job. Fake CPU devices share one CPU, so a CPU job's peak is one CPU's."""
    if jax.devices()[0].platform == "cpu":
        return device_peak_flops(dtype, refresh) * jax.process_count()
    return device_peak_flops(dtype, refresh) * jax.device_count()
