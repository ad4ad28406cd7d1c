"""The lm-evaluation-harness adapter's generation throughput on a run: new tokens/s of generate_until (greedy, the
KV cache, no stop string) continuing PROMPTS of data/tinyshakespeare.txt's paragraphs (each one's first 48
characters) by up to --new tokens, batch_size prompts a batch, on the run's mesh (as bmjax-eval runs it: the batch
over data x fsdp) and on one device: the median of --repeats timed passes after one untimed (compilation), since
the shared machine's load moves single passes by 2x. Prints one JSON object.

    PYTHONPATH=. python experiments/evals/generate_throughput.py WORKDIR [--batch_size 16] [--prompts 128] [--new 64]
        [--repeats 5]
"""
import argparse
import json
import os
import pathlib
import statistics
import time

from experiments.evals.adapters import Request, run_adapters

REPO = pathlib.Path.cwd()  # run from the repository's root (run.sh does)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    described, adapters = run_adapters(args.workdir, args.batch_size)
    paragraphs = [p for p in (REPO / "data/tinyshakespeare.txt").read_text().split("\n\n") if p.strip()]
    requests = [Request((p[:48], {"until": [], "max_gen_toks": args.new})) for p in paragraphs[:args.prompts]]
    out = {**described, "prompts": len(requests), "max_new_tokens": args.new, "repeats": args.repeats}
    for name, lm in adapters:
        texts = lm.generate_until(requests)  # compiles
        seconds = []
        for _ in range(args.repeats):
            lm.generated_tokens = 0
            start = time.perf_counter()
            assert lm.generate_until(requests) == texts
            seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds)
        out[name] = {"tokens": lm.generated_tokens, "seconds": seconds, "tokens_per_sec": lm.generated_tokens / median}
        out.setdefault("texts", texts)
        assert texts == out["texts"], f"{name}: other generations than the run's mesh"
    del out["texts"]
    out["load_average"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
