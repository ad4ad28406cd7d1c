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
from dataclasses import dataclass

REPO = pathlib.Path.cwd()  # run from the repository's root (run.sh does)


@dataclass
class Request:  # what the adapter reads of the harness's Instance
    args: tuple


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
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
    paragraphs = [p for p in (REPO / "data/tinyshakespeare.txt").read_text().split("\n\n") if p.strip()]
    requests = [Request((p[:48], {"until": [], "max_gen_toks": args.new})) for p in paragraphs[:args.prompts]]
    mesh, rules = run_mesh(config)
    out = {"workdir": args.workdir, "devices": len(jax.devices()), "device": str(jax.devices()[0].device_kind),
           "mesh": dict(mesh.shape), "batch_size": args.batch_size, "prompts": len(requests),
           "max_new_tokens": args.new, "repeats": args.repeats}
    for name, lm in (("run_mesh", BmjaxLM(model, tokenizer, args.batch_size, mesh=mesh, rules=rules)),
                     ("one_device", BmjaxLM(model, tokenizer, args.batch_size))):
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
