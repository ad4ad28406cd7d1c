"""The lm-evaluation-harness adapter's scoring throughput on a run: tokens/s of loglikelihood_rolling over
data/tinyshakespeare.txt's first CHARS characters (windows of the model's context, batch_size rows a call), on
the run's mesh (as bmjax-eval runs it) and on one device, each after one untimed pass (compilation).
Prints one JSON object.

    PYTHONPATH=. python experiments/evals/adapter_throughput.py WORKDIR [--batch_size 16] [--chars 60000]   (from the root)
"""
import argparse
import json
import os
import pathlib
import time

from experiments.evals.adapters import Request, run_adapters

REPO = pathlib.Path.cwd()  # run from the repository's root (run.sh does)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--chars", type=int, default=60_000)
    args = parser.parse_args()

    described, adapters = run_adapters(args.workdir, args.batch_size)
    text = (REPO / "data/tinyshakespeare.txt").read_text()[:args.chars]
    requests = [Request((doc,)) for doc in text.split("\n\n") if doc.strip()]
    out = {**described, "documents": len(requests)}
    for name, lm in adapters:
        lm.loglikelihood_rolling(requests)  # compiles every bucket the requests use
        lm.scored_tokens, lm.scoring_seconds = 0, 0.0
        start = time.perf_counter()
        lm.loglikelihood_rolling(requests)
        seconds = time.perf_counter() - start
        out[name] = {"tokens": lm.scored_tokens, "seconds": seconds, "tokens_per_sec": lm.scored_tokens / seconds}
    out["load_average"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
