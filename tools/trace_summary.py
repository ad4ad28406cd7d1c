"""Where a traced step spends its time: the top XLA ops of a jax.profiler trace, and their time per kind of work.

    python tools/trace_summary.py PROFILE_DIR_OR_TRACE [--top 25] [--steps N] [--json | --json_out FILE]

Reads a `.trace.json.gz` as `jax.profiler.trace` writes it (e.g. `tools/bench_step.py --profile_dir DIR`; given
a directory, the newest trace under it). The ops are the events that carry an `hlo_op` argument (XLA's own
executed instructions or kernels: the CPU's thunks on its worker threads, the GPU's kernels on its streams);
host-side Python, dispatch and thread-pool events carry none and are left out. Where such events nest (a
`while` loop around its body's ops), only the innermost count, so no time is counted twice. On a GPU trace,
only the device's processes (`/device:...`) count. Time is summed over threads: on a CPU with several worker
threads the total is thread time, larger than the wall time of the step.

Groups, first matching rule wins, on the lower-cased op name (hlo_op) and event name (the GPU kernel's name):
  collective   all-reduce, all-gather, reduce-scatter, all-to-all, collective-permute, send/recv, nccl
  attention    fused attention kernels: fmha (cuDNN), flash, attention, mha
  matmul       dot, gemm, matmul, conv(olution), cublas, cutlass, xmma, nvjet; XLA:CPU's ynn_fusion (YNNPACK
               fusions, which XLA forms around dot products)
  optimizer    names that say so: adam, optax, optimizer, scale_by, apply_updates. XLA fuses most of an
               optimizer's elementwise work into fusions named after their ops (multiply_add_fusion), which
               land in elementwise: this group is a floor, not the optimizer's whole cost
  copy         data movement: copy, transpose, memcpy, memset, (dynamic-)slice, dynamic-update-slice,
               concatenate, pad, gather, scatter, broadcast
  elementwise  everything else: elementwise and reduction fusions, layer norms, activations, the loss
"""
import argparse
import collections
import gzip
import json
import pathlib
import re
import sys

GROUPS = ("matmul", "attention", "elementwise", "collective", "optimizer", "copy")

# (group, pattern); the pattern is searched in "<hlo_op> <event name>", lower-cased, '-' read as '_'.
RULES = (
    ("collective", r"all_reduce|allreduce|all_gather|allgather|reduce_scatter|all_to_all|collective_permute"
                   r"|nccl|(^|[^a-z])(send|recv)([^a-z]|$)"),
    ("attention", r"fmha|flash|attention|(^|[^a-z])mha"),
    ("matmul", r"(^|[^a-z])dot|gemm|matmul|(^|[^a-z])conv|cublas|cutlass|xmma|nvjet|ynn_fusion"),
    ("optimizer", r"adam|optax|optimizer|scale_by|apply_updates"),
    ("copy", r"copy|transpose|memcpy|memset|(^|[^a-z])(dynamic_)?slice|dynamic_update_slice|concatenate"
             r"|(^|[^a-z])pad([^a-z]|$)|gather|scatter|broadcast"),
)
_COMPILED = tuple((group, re.compile(pattern)) for group, pattern in RULES)


def classify(op_name: str, event_name: str = "") -> str:
    """The group of one op (see the module docstring)."""
    text = f"{op_name} {event_name}".lower().replace("-", "_")
    for group, pattern in _COMPILED:
        if pattern.search(text):
            return group
    return "elementwise"


def find_trace(path: pathlib.Path) -> pathlib.Path:
    if path.is_dir():
        traces = sorted(path.rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
        if not traces:
            raise FileNotFoundError(f"{path}: no *.trace.json.gz under it")
        return traces[-1]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return path


def load_events(path: pathlib.Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        trace = json.load(f)
    return trace["traceEvents"] if isinstance(trace, dict) else trace


def device_op_events(events: list[dict]) -> list[dict]:
    """The innermost events with an hlo_op argument, on the device's processes if the trace has any."""
    processes = {e["pid"]: e.get("args", {}).get("name", "") for e in events
                 if e.get("ph") == "M" and e.get("name") == "process_name"}
    device_pids = {pid for pid, name in processes.items() if name.startswith("/device:")}
    ops = [e for e in events if e.get("ph") == "X" and "hlo_op" in e.get("args", {})
           and (not device_pids or e["pid"] in device_pids)]
    by_thread = collections.defaultdict(list)
    for e in ops:
        by_thread[(e["pid"], e.get("tid"))].append(e)
    leaves = []
    for thread_ops in by_thread.values():
        thread_ops.sort(key=lambda e: (float(e["ts"]), -float(e.get("dur", 0))))
        for i, e in enumerate(thread_ops):
            end = float(e["ts"]) + float(e.get("dur", 0))
            # Sorted by start (outer first on ties): an op whose successor starts before it ends contains it.
            nested = i + 1 < len(thread_ops) and float(thread_ops[i + 1]["ts"]) < end
            if not nested:
                leaves.append(e)
    return leaves


def summarise(path, top: int = 25, steps: int = 1) -> dict:
    """Per-op and per-group totals of a trace (times in ms, divided by `steps`)."""
    trace = find_trace(pathlib.Path(path))
    ops = collections.defaultdict(lambda: {"count": 0, "us": 0.0, "group": ""})
    for e in device_op_events(load_events(trace)):
        name = e["args"]["hlo_op"]
        row = ops[name]
        row["count"] += 1
        row["us"] += float(e.get("dur", 0))
        row["group"] = row["group"] or classify(name, e.get("name", ""))
    if not ops:
        raise ValueError(f"{trace}: no XLA op events (events with an hlo_op argument) in this trace")
    total_us = sum(r["us"] for r in ops.values())
    groups = {g: 0.0 for g in GROUPS}
    for r in ops.values():
        groups[r["group"]] += r["us"]
    ranked = sorted(ops.items(), key=lambda kv: -kv[1]["us"])
    return {
        "trace": str(trace),
        "steps": steps,
        "total_ms": total_us / 1e3 / steps,
        "groups": {g: {"ms": us / 1e3 / steps, "fraction": us / total_us}
                   for g, us in sorted(groups.items(), key=lambda kv: -kv[1])},
        "top_ops": [{"op": name, "group": r["group"], "count": r["count"], "ms": r["us"] / 1e3 / steps,
                     "fraction": r["us"] / total_us} for name, r in ranked[:top]],
        "distinct_ops": len(ops),
    }


def print_table(summary: dict):
    per = " per step" if summary["steps"] > 1 else ""
    print(f"{summary['trace']}: {summary['distinct_ops']} distinct ops, {summary['total_ms']:.2f} ms of op time{per}")
    print(f"\n{'group':<12} {'ms':>10} {'share':>7}")
    for group, row in summary["groups"].items():
        print(f"{group:<12} {row['ms']:>10.3f} {row['fraction']:>7.1%}")
    print(f"\n{'op':<48} {'group':<12} {'count':>6} {'ms':>10} {'share':>7}")
    for row in summary["top_ops"]:
        print(f"{row['op'][:48]:<48} {row['group']:<12} {row['count']:>6} {row['ms']:>10.3f} {row['fraction']:>7.1%}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", help="a .trace.json.gz, or a directory to take the newest one from")
    parser.add_argument("--top", type=int, default=25, help="how many ops to list")
    parser.add_argument("--steps", type=int, default=1, help="steps the trace holds: times are divided by it")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--json_out", default="", help="also write the JSON object to this file")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.top < 0:
        print("error: --steps must be >= 1 and --top >= 0", file=sys.stderr)
        return 2
    try:
        summary = summarise(args.trace, args.top, args.steps)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: trace: {e}", file=sys.stderr)
        return 2
    if args.json_out:
        pathlib.Path(args.json_out).write_text(json.dumps(summary) + "\n")
    if args.json:
        print(json.dumps(summary))
    else:
        print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
