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
from dataclasses import dataclass

REPO = pathlib.Path.cwd()  # run from the repository's root (run.sh does)


@dataclass
class Request:  # what the adapter reads of the harness's Instance
    args: tuple


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--chars", type=int, default=60_000)
    args = parser.parse_args()

    from bmjax import runtime
    from bmjax import workdir as workdir_lib

    runtime.set_process_defaults()
    runtime.use_cpu_devices(workdir_lib.read_config(args.workdir))  # as bmjax-eval does

    import jax

    from bmjax.cli.eval import run_mesh
    from bmjax.cli.sample import load_run
    from bmjax.evals.lm_harness import BmjaxLM

    config, tokenizer, model = load_run(args.workdir)
    text = (REPO / "data/tinyshakespeare.txt").read_text()[:args.chars]
    requests = [Request((doc,)) for doc in text.split("\n\n") if doc.strip()]
    mesh, rules = run_mesh(config)
    out = {"workdir": args.workdir, "devices": len(jax.devices()), "device": str(jax.devices()[0].device_kind),
           "mesh": dict(mesh.shape), "batch_size": args.batch_size, "documents": len(requests)}
    for name, lm in (("run_mesh", BmjaxLM(model, tokenizer, args.batch_size, mesh=mesh, rules=rules)),
                     ("one_device", BmjaxLM(model, tokenizer, args.batch_size))):
        lm.loglikelihood_rolling(requests)  # compiles every bucket the requests use
        lm.scored_tokens, lm.scoring_seconds = 0, 0.0
        start = time.perf_counter()
        lm.loglikelihood_rolling(requests)
        out[name] = {"tokens": lm.scored_tokens, "seconds": time.perf_counter() - start,
                     "tokens_per_sec": lm.scored_tokens / (time.perf_counter() - start)}
    out["load_average"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
