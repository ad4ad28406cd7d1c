"""The CPU peak behind MFU: measured once, cached, and never lowered by a measurement taken on a busy machine."""
from bmjax.train import mfu


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


def test_measured_cpu_peak_is_a_plausible_rate():
    peak = mfu.measure_cpu_peak(sizes=(256,), repeats=2)
    assert 1e8 < peak < 1e14
