"""tools/trace_summary.py: a jax.profiler trace summarised into top ops and groups of work."""
import gzip
import json
import os
import sys

import pytest

from helpers.commands import error_line, run
from helpers.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))
import trace_summary  # noqa: E402


@pytest.mark.parametrize("op, kernel, group", [
    ("dot.17", "", "matmul"),
    ("ynn_fusion.87", "", "matmul"),  # XLA:CPU's YNNPACK fusion around a dot
    ("fusion.12", "sm90_xmma_gemm_bf16bf16_bf16f32", "matmul"),  # a GPU kernel named after its GEMM
    ("gemm_fusion_dot.3", "", "matmul"),
    ("custom-call.4", "cudnn_fmha_fwd_kernel", "attention"),
    ("all-reduce.1", "", "collective"),
    ("reduce-scatter-start", "ncclDevKernel_ReduceScatter", "collective"),
    ("transpose_copy_fusion.11", "", "copy"),
    ("dynamic-update-slice.2", "", "copy"),
    ("add_add_fusion", "", "elementwise"),
    ("multiply_tanh_fusion.1", "", "elementwise"),
    ("reduce.5", "", "elementwise"),  # "reduce" alone is not a collective
    ("adam_update_fusion", "", "optimizer"),
])
def test_ops_are_grouped_by_their_names(op, kernel, group):
    assert trace_summary.classify(op, kernel) == group


def _write_trace(path, events):
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events}, f)


def test_nested_and_host_events_are_not_counted(tmp_path):
    def op(name, ts, dur, tid=1):
        return {"ph": "X", "pid": 1, "tid": tid, "ts": ts, "dur": dur, "name": name,
                "args": {"hlo_op": name, "hlo_module": "jit_step"}}
    events = [
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
        {"ph": "X", "pid": 1, "tid": 0, "ts": 0, "dur": 1000, "name": "PjitFunction(step)"},  # host: no hlo_op
        op("while.1", 0, 100),  # a loop around the next two: only they count
        op("dot.1", 10, 60),
        op("add_fusion", 70, 20),
        op("copy.2", 100, 30),
        op("dot.1", 0, 50, tid=2),  # another worker thread: summed
    ]
    _write_trace(tmp_path / "a.trace.json.gz", events)
    summary = trace_summary.summarise(tmp_path, steps=2)
    assert summary["total_ms"] == pytest.approx((60 + 20 + 30 + 50) / 1e3 / 2)
    assert summary["groups"]["matmul"]["ms"] == pytest.approx(0.055)
    assert summary["groups"]["elementwise"]["ms"] == pytest.approx(0.010)
    assert summary["groups"]["copy"]["ms"] == pytest.approx(0.015)
    assert [r["op"] for r in summary["top_ops"]] == ["dot.1", "copy.2", "add_fusion"]
    assert summary["top_ops"][0]["count"] == 2


def test_missing_trace_is_one_line_exit_2(tmp_path):
    result = run("tools/trace_summary.py", str(tmp_path), timeout=60)
    assert error_line(result).startswith("error: trace: ")


def test_real_trace_of_a_matmul_heavy_step(tmp_path):
    # A wide, shallow GPT on short sequences with a small vocabulary: its step is mostly matrix products.
    bench = run("tools/bench_step.py", "--config", "configs/gpt/tiny.py", "--config.model.d_model=256",
                "--config.model.d_ff=1024", "--config.model.num_layers=2", "--config.model.num_heads=4",
                "--config.data.seq_len=32", "--config.data.batch_size=16", "--steps=2", "--warmup=1", "--window=1",
                f"--profile_dir={tmp_path / 'prof'}", devices=0, env=dict(os.environ, JAX_NUM_CPU_DEVICES="1"),
                timeout=600)
    assert bench.returncode == 0, bench.stderr[-3000:]
    result = run("tools/trace_summary.py", str(tmp_path / "prof"), "--json", f"--json_out={tmp_path / 'summary.json'}",
                 timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    groups = summary["groups"]
    assert set(groups) == set(trace_summary.GROUPS)
    assert sum(g["ms"] for g in groups.values()) == pytest.approx(summary["total_ms"], rel=1e-9)
    assert summary["total_ms"] > 0
    assert max(groups, key=lambda g: groups[g]["ms"]) == "matmul", groups
