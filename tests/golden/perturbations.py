"""How far float32 rounding moves the golden losses, and how far a real change does:
`python -m tests.golden.perturbations` from the repository root (a few minutes on 2 cores).

Trains every golden run under each perturbation and writes tests/golden/perturbations.md (the evidence for
runs.RTOL): max relative difference to the unperturbed run, and the first step that differs.
"""
import os
import shutil
import sys
import tempfile

from .runs import GOLDEN_DIR, RTOL, RUNS, loss_compare, stack, train

ROUNDING = {  # name -> (devices, threads, XLA_FLAGS, wrapper): the same maths, another float32 rounding
    "the same run again": (1, None, "", ()),
    "--xla_cpu_max_isa=AVX2": (1, None, "--xla_cpu_max_isa=AVX2", ()),
    "2 CPU devices (data parallel)": (2, None, "", ()),
    "a thread pool of 64 (PJRT_NPROC)": (1, 64, "", ()),
    "1 core (taskset -c 0)": (1, None, "", ("taskset", "-c", "0")),
}
REAL = {  # name -> extra overrides: a change the goldens must catch
    "optim.lr x 1.01": ("--config.optim.lr=0.00202",),
    "train.seed=1 (another init and data order)": ("--config.train.seed=1",),
}


def main() -> int:
    compare = loss_compare()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in RUNS:
            base = os.path.join(tmp, name)
            train(name, base, env={**os.environ, "XLA_FLAGS": ""}).check_returncode()
            cases = {**{k: ((), *v) for k, v in ROUNDING.items()}, **{k: (v, 1, None, "", ()) for k, v in REAL.items()}}
            for case, (extra, devices, threads, xla_flags, wrapper) in cases.items():
                if wrapper and not shutil.which(wrapper[0]):
                    continue
                workdir = os.path.join(tmp, f"{name}-{len(rows)}")
                env = {**os.environ, "XLA_FLAGS": xla_flags}
                train(name, workdir, *extra, devices=devices, threads=threads, env=env, wrapper=wrapper).check_returncode()
                result = compare.compare(compare.read_losses(base), compare.read_losses(workdir))
                first = result["first_diff"]
                kind = "rounding" if case in ROUNDING else "real change"
                rows.append(f"| {name} | {case} | {kind} | {result['max_rel_diff']:.2e} | "
                            f"{'-' if first is None else f'{first[0]} {first[1]}'} |")
                print(rows[-1], flush=True)
    versions = ", ".join(f"{k} {v}" for k, v in stack().items())
    (GOLDEN_DIR / "perturbations.md").write_text(
        "# How far the golden losses move (written by `python -m tests.golden.perturbations`)\n\n"
        f"Stack: {versions}. Tolerance in use (tests/golden/runs.py RTOL): {RTOL:g}.\n\n"
        "| run | perturbation | kind | max relative difference | first differing |\n|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
