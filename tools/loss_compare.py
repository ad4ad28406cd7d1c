"""Compare two runs' losses step by step: `python tools/loss_compare.py WORKDIR_A WORKDIR_B [--rtol R]`.

For checking that a refactor, another mesh or a new jax leaves training where it was (torchtitan's loss
comparison). Reads both workdirs' metrics.jsonl, pairs their train and eval losses by step, and prints the
largest relative difference |a - b| / |a| and the first step whose losses are not bit-for-bit equal.
Exit status 1 when the largest difference is beyond --rtol (default 0: any difference), 2 for bad input.
"""
import argparse
import json
import math
import pathlib
import sys

SPLITS = ("train", "eval")


def losses(rows: list[dict]) -> dict:
    """{(split, step): loss} of a run's metrics rows (train and eval rows that carry a loss)."""
    return {(row["split"], row["step"]): row["loss"] for row in rows
            if row.get("split") in SPLITS and row.get("loss") is not None and "step" in row}


def read_losses(workdir) -> dict:
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{workdir}: no metrics.jsonl (not a bmjax workdir, or the run never logged)")
    return losses([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def compare(a: dict, b: dict) -> dict:
    """Both runs' common (split, step) keys compared: max relative difference, where, first differing step."""
    common = sorted(set(a) & set(b), key=lambda key: (key[1], SPLITS.index(key[0])))
    if not common:
        raise ValueError("the two runs share no logged (split, step) loss")
    worst, where, first = 0.0, None, None
    for key in common:
        x, y = a[key], b[key]
        if x != y and first is None:
            first = key
        difference = abs(x - y) / abs(x) if x != 0 else (0.0 if y == 0 else math.inf)
        if math.isnan(x) or math.isnan(y):
            difference = 0.0 if (math.isnan(x) and math.isnan(y)) else math.inf
        if where is None or difference > worst:
            worst, where = difference, key
    return {"steps": len(common), "max_rel_diff": worst, "at": where, "first_diff": first,
            "only_in_a": len(set(a) - set(b)), "only_in_b": len(set(b) - set(a))}


def report(result: dict) -> str:
    at = f"{result['at'][0]} step {result['at'][1]}"
    first = "none (bit for bit equal)" if result["first_diff"] is None else \
        f"{result['first_diff'][0]} step {result['first_diff'][1]}"
    unmatched = f"; unmatched: {result['only_in_a']} only in A, {result['only_in_b']} only in B" \
        if result["only_in_a"] or result["only_in_b"] else ""
    return (f"{result['steps']} losses compared; max relative difference {result['max_rel_diff']:.3e} "
            f"({at}); first differing: {first}{unmatched}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="a workdir (its metrics.jsonl)")
    parser.add_argument("b", help="another workdir")
    parser.add_argument("--rtol", type=float, default=0.0, help="largest relative difference accepted")
    args = parser.parse_args(argv)
    if not args.rtol >= 0:
        print(f"error: --rtol: {args.rtol} is not a relative tolerance >= 0", file=sys.stderr)
        return 2
    try:
        result = compare(read_losses(args.a), read_losses(args.b))
    except (FileNotFoundError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report(result))
    if result["max_rel_diff"] > args.rtol:
        print(f"beyond --rtol {args.rtol:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
