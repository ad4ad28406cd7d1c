"""MFU's two halves, pinned exactly: the peak (spec-sheet tables by exact device kind and the precision the
matmuls really run at; the CPU's measured rate, cached) and the model FLOPs per token (hand-computed)."""
import math
import types

import jax
import pytest

from bmjax.models import flops
from bmjax.models.gpt import GPTConfig
from bmjax.train import mfu


def fake_devices(monkeypatch, kind: str, platform: str = "gpu", count: int = 8):
    device = types.SimpleNamespace(platform=platform, device_kind=kind)
    monkeypatch.setattr(jax, "devices", lambda *a: [device] * count)
    monkeypatch.setattr(jax, "device_count", lambda *a: count)


@pytest.mark.parametrize("kind, bf16, tf32, f32", [
    ("NVIDIA H100 80GB HBM3", 989.4e12, 494.7e12, 66.9e12),  # SXM
    ("NVIDIA H100 PCIe", 756.0e12, 378.0e12, 51.2e12),
    ("NVIDIA H100 NVL", 835.5e12, 417.5e12, 60.0e12),
    ("NVIDIA H200", 989.4e12, 494.7e12, 66.9e12),
    ("NVIDIA A100-SXM4-80GB", 312e12, 156e12, 19.5e12),
])
def test_gpu_peaks_by_exact_kind_and_matmul_precision(monkeypatch, kind, bf16, tf32, f32):
    fake_devices(monkeypatch, kind)
    assert mfu.total_peak_flops("bfloat16") == 8 * bf16
    assert mfu.total_peak_flops("float16") == 8 * bf16
    # float32 under jax's default precision runs on the TF32 tensor cores; only "highest" is true float32.
    assert mfu.total_peak_flops("float32") == 8 * tf32
    with jax.default_matmul_precision("highest"):
        assert mfu.total_peak_flops("float32") == 8 * f32
    with jax.default_matmul_precision("tensorfloat32"):
        assert mfu.total_peak_flops("float32") == 8 * tf32


def test_tpu_float32_is_bfloat16_passes(monkeypatch):
    fake_devices(monkeypatch, "TPU v5 lite", platform="tpu", count=4)
    assert mfu.total_peak_flops("bfloat16") == 4 * 197e12
    assert mfu.total_peak_flops("float32") == 4 * 197e12  # default: one bfloat16 pass
    with jax.default_matmul_precision("highest"):
        assert mfu.total_peak_flops("float32") == 4 * 197e12 / 6


def test_an_unknown_or_near_miss_kind_has_no_peak_and_says_so(monkeypatch):
    for kind in ("NVIDIA GeForce RTX 4090", "NVIDIA H100", "H100 PCIe"):  # no substring guessing
        fake_devices(monkeypatch, kind)
        assert math.isnan(mfu.total_peak_flops("bfloat16"))
        assert mfu.describe_peak("bfloat16") == (
            f"MFU unknown: no peak FLOP/s for device kind {kind!r} in bmjax/train/mfu.py PEAK_FLOPS; "
            "mfu is logged as NaN")


def test_describe_names_the_peak_used(monkeypatch):
    fake_devices(monkeypatch, "NVIDIA H200", count=8)
    assert mfu.describe_peak("float32") == (
        "MFU peak: 494.7 TFLOP/s per device (NVIDIA H200, TF32 tensor cores (float32 matmuls under jax's default "
        "precision)) x 8 devices = 3,957.6 TFLOP/s")


def test_flops_per_token_by_hand():
    """GPT, d=64, 2 layers, 4 heads, vocab 100, seq 32, d_ff 256, biases, LayerNorm, tied learned positions."""
    cfg = GPTConfig(vocab_size=100, d_model=64, num_layers=2, num_heads=4, d_ff=256, max_len=32)
    attention = 4 * 64 * 64 + 4 * 64  # q, k, v, out matrices and biases
    mlp = 2 * 64 * 256 + 256 + 64
    norms = 2 * (64 + 64)  # two LayerNorms a layer, scale and shift
    non_embedding = 2 * (attention + mlp + norms) + (64 + 64)  # + the final LayerNorm
    n = non_embedding + 64 * 100  # the output projection: tied, but a matmul every token
    attention_flops = 12 * 2 * 64 * 32  # 12 * L * (H * Q) * T, causal not halved
    assert flops.train_flops_per_token(cfg, 32) == 6 * n + attention_flops == 688_128
    # BERT-style scoring of 15% of positions counts 15% of the output projection.
    assert flops.train_flops_per_token(cfg, 32, 0.15) == 6 * (non_embedding + 0.15 * 6400) + attention_flops


def test_cpu_peak_is_cached_and_keeps_the_best_measurement(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    measurements = iter([50e9, 100e9, 80e9])
    calls = []

    def measure():
        calls.append(1)
        return next(measurements)

    monkeypatch.setattr(mfu, "measure_cpu_peak", measure)
    assert mfu.cpu_peak_flops() == 50e9  # no cache yet: measured
    assert mfu.cpu_peak_flops() == 50e9 and len(calls) == 1  # from the cache
    assert mfu.cpu_peak_flops(refresh=True) == 100e9  # a quieter moment raises it
    assert mfu.cpu_peak_flops(refresh=True) == 100e9  # a busier one does not lower it
    assert mfu.cpu_peak_flops() == 100e9 and len(calls) == 3
    assert (tmp_path / "bmjax" / "cpu_peak_flops.json").exists()


def test_measured_cpu_peak_is_the_best_rate_of_2n3_flops(monkeypatch):
    """mfu's clock says the three timed 64x64 matmuls took 1 ms, 0.5 ms and 1 ms: the peak is 2·64³ / 0.5 ms."""
    ticks = iter([0.0, 1e-3, 10.0, 10.0 + 0.5e-3, 20.0, 20.0 + 1e-3])
    monkeypatch.setattr(mfu, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    assert mfu.measure_cpu_peak(sizes=(64,), repeats=3) == pytest.approx(2 * 64**3 / 0.5e-3, rel=1e-9)
