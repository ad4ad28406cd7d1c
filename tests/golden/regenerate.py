"""Record the golden loss traces again: `python -m tests.golden.regenerate [NAME ...]` from the repository root.

Legitimate only when the change is meant to move the losses (a new default, another init, a fixed bug) or the
pinned stack moved (jax/jaxlib/flax/optax in constraints.txt); say which in the commit. Check the old and new
traces with `python tools/loss_compare.py` first: a refactor should leave them bit for bit equal.
"""
import json
import sys
import tempfile

from .runs import RUNS, golden_path, stack, trace, train


def main(names: list[str]) -> int:
    for name in names or RUNS:
        if name not in RUNS:
            print(f"error: {name}: not a golden run (one of {', '.join(RUNS)})", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory() as workdir:
            done = train(name, workdir)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            config, overrides = RUNS[name]
            record = {"config": config, "overrides": list(overrides), "stack": stack(), **trace(workdir)}
        golden_path(name).write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {golden_path(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
