"""Model FLOPs utilisation: achieved training FLOP/s over the hardware's peak.

FLOPs (bmjax/models/flops.py, `train_flops_per_token`) follow PaLM (appendix B) and nanoGPT: per token,
6·N + 12·L·H·Q·T, with N the non-embedding parameters plus the output projection (d_model·vocab, tied or not;
an embedding lookup does no matmul work), L layers, H heads of width Q, T the sequence length. 2 FLOPs per
multiply-add, x3 for forward + backward; the attention term (q·kᵀ and probs·v) is the full square, NOT halved
for causal masking, so numbers compare with PaLM's and nanoGPT's. Rematerialisation's recomputation is not
counted (that would be hardware FLOPs utilisation, not model FLOPs).

Peaks of accelerators come from their spec sheets (dense, no sparsity), looked up by jax's exact
`device_kind`: an H100 PCIe, SXM and NVL differ by ~30%, so no substring guessing. Which peak applies depends
on what the matmul units actually run:
- bfloat16/float16 compute: the 16-bit tensor-core (MXU) peak.
- float32 compute on an NVIDIA GPU: under jax's default matmul precision (`jax_default_matmul_precision`
  unset, "default", "high", "bfloat16", "tensorfloat32", ...) XLA runs float32 matmuls as TF32 on the tensor
  cores of Ampere and later, so the TF32 peak; only "highest"/"float32" gets true float32 and its peak (taking
  the float32 peak under TF32 would report MFU over 100%).
- float32 compute on a TPU: the MXU runs bfloat16 passes: 1 (default), 3 ("high"), 6 ("highest"), so the
  bfloat16 peak divided by the passes.
A device kind not in the table has no known peak: MFU is logged as NaN, and `describe_peak` says so once at
start-up. A CPU has no spec-sheet number that means anything for XLA, so its peak is measured once: the best
float32 matmul rate on all its cores, cached per machine so runs do not pay for it again.
"""
import json
import math
import os
import pathlib
import platform
import time

import jax
import jax.numpy as jnp

# Dense peak FLOP/s per chip by jax's device_kind: 16-bit (bf16/fp16) tensor cores, TF32 tensor cores (GPUs) and
# plain float32 (GPUs' CUDA cores). TPUs' float32 comes from bfloat16 passes (see TPU_F32_PASSES).
PEAK_FLOPS = {
    # NVIDIA H100/H200 SXM (H100 SXM5 reports its memory: "80GB HBM3").
    "NVIDIA H100 80GB HBM3": {"bfloat16": 989.4e12, "tf32": 494.7e12, "float32": 66.9e12},
    "NVIDIA H200": {"bfloat16": 989.4e12, "tf32": 494.7e12, "float32": 66.9e12},
    "NVIDIA H100 PCIe": {"bfloat16": 756.0e12, "tf32": 378.0e12, "float32": 51.2e12},
    "NVIDIA H100 NVL": {"bfloat16": 835.5e12, "tf32": 417.5e12, "float32": 60.0e12},
    "NVIDIA H200 NVL": {"bfloat16": 835.5e12, "tf32": 417.5e12, "float32": 60.0e12},
    "NVIDIA A100-SXM4-40GB": {"bfloat16": 312e12, "tf32": 156e12, "float32": 19.5e12},
    "NVIDIA A100-SXM4-80GB": {"bfloat16": 312e12, "tf32": 156e12, "float32": 19.5e12},
    "NVIDIA A100-PCIE-40GB": {"bfloat16": 312e12, "tf32": 156e12, "float32": 19.5e12},
    "NVIDIA A100 80GB PCIe": {"bfloat16": 312e12, "tf32": 156e12, "float32": 19.5e12},
    "TPU v4": {"bfloat16": 275e12},
    "TPU v5 lite": {"bfloat16": 197e12},  # v5e
    "TPU v5": {"bfloat16": 459e12},  # v5p
    "TPU v6 lite": {"bfloat16": 918e12},  # v6e (Trillium)
}
TPU_F32_PASSES = {"highest": 6, "float32": 6, "high": 3, "bfloat16_3x": 3, "tensorfloat32": 3}
_TRUE_F32 = ("highest", "float32")


def _matmul_precision() -> str:
    """jax's default matmul precision as a lower-case name ("default" when unset)."""
    value = jax.config.jax_default_matmul_precision
    return str(getattr(value, "name", value) or "default").lower()


def _peak_for(kind: str, platform_name: str, dtype: str, precision: str) -> tuple[float, str]:
    """(peak FLOP/s of one device, which units that is) for a non-CPU device; NaN when the kind is unknown."""
    peaks = PEAK_FLOPS.get(kind)
    if peaks is None:
        return math.nan, "unknown"
    if dtype in ("bfloat16", "float16"):
        return peaks["bfloat16"], "16-bit tensor cores"
    if platform_name == "tpu":
        passes = TPU_F32_PASSES.get(precision, 1)
        return peaks["bfloat16"] / passes, f"float32 as {passes} bfloat16 MXU pass(es)"
    if precision in _TRUE_F32:
        return peaks["float32"], "float32 (matmul precision highest)"
    return peaks["tf32"], "TF32 tensor cores (float32 matmuls under jax's default precision)"


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
    """Peak FLOP/s of one device of the default backend (the whole CPU counts as one device); NaN for a device
    kind without a known peak."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return cpu_peak_flops(refresh)
    return _peak_for(device.device_kind, device.platform, dtype, _matmul_precision())[0]


def total_peak_flops(dtype: str = "float32", refresh: bool = False) -> float:
    """Peak of the whole job. Fake CPU devices share one CPU, so a CPU job's peak is one CPU's."""
    if jax.devices()[0].platform == "cpu":
        return device_peak_flops(dtype, refresh) * jax.process_count()
    return device_peak_flops(dtype, refresh) * jax.device_count()


def describe_peak(dtype: str = "float32") -> str:
    """One line for start-up: the peak MFU is measured against, or that MFU is unknown for this device."""
    device = jax.devices()[0]
    total = total_peak_flops(dtype)
    if device.platform == "cpu":
        return (f"MFU peak: {total / 1e9:,.1f} GFLOP/s (measured float32 matmul rate of this machine's CPU x "
                f"{jax.process_count()} process(es))")
    per_device, units = _peak_for(device.device_kind, device.platform, dtype, _matmul_precision())
    if math.isnan(per_device):
        return (f"MFU unknown: no peak FLOP/s for device kind {device.device_kind!r} in bmjax/train/mfu.py "
                "PEAK_FLOPS; mfu is logged as NaN")
    return (f"MFU peak: {per_device / 1e12:,.1f} TFLOP/s per device ({device.device_kind}, {units}) x "
            f"{jax.device_count()} devices = {total / 1e12:,.1f} TFLOP/s")
