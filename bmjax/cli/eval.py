"""bmjax-eval: downstream tasks of EleutherAI's lm-evaluation-harness on a trained GPT run.

    bmjax-eval --workdir DIR --tasks NAME[,NAME...] [--limit N] [--include_path DIR] [--batch_size 16]
    bmjax-eval --workdir runs/demo --tasks bmjax_choice,bmjax_rolling,bmjax_generate
    python -m bmjax.cli.eval ...       (the same)

Reads DIR/config.json, the run's tokenizer and the newest checkpoint's parameters, laid out on the run's mesh
(config.json's mesh.* over this machine's devices; batches sharded over its data axes), and runs the harness's
tasks through bmjax/evals/lm_harness.py (loglikelihood, loglikelihood_rolling, generate_until). Task names are the harness's own (hellaswag, lambada_openai, arc_easy, ...: their data comes from the Hugging Face Hub,
so they need it reachable or in the local datasets cache), those of the YAML files under --include_path, and
bmjax's examples on data shipped with it (bmjax/evals/tasks: bmjax_choice, multiple choice; bmjax_rolling,
rolling perplexity and bits per byte; bmjax_generate, greedy generation). --limit N scores each task's first N
documents. The harness's results JSON is written to DIR/lm_eval.json, and the scores (task -> metric -> value, standard errors left out) to
summary.json's `lm_eval` field (and the checkpoint's step to `lm_eval_step`, which a resumed run keeps with the
scores: bmjax/train/summary.py); a line per task and the adapter's tokens/s (scored, and generated where a task
generates) go to stdout. Bad input (no such workdir, no checkpoint, an unknown task) prints one line,
`error: ...`, and exits with status 2.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys
import time

from absl import flags

from bmjax.cli import common
from bmjax.errors import ConfigError

TASKS_DIR = pathlib.Path(__file__).resolve().parents[1] / "evals" / "tasks"  # bmjax's example tasks, local data


def define_flags(argv: list[str]) -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "A bmjax-train workdir of a GPT (config.json, checkpoints/).", flag_values=fv)
    flags.DEFINE_list("tasks", None, "Harness task names, comma-separated.", flag_values=fv)
    flags.DEFINE_integer("limit", None, "Score only each task's first N documents.", flag_values=fv)
    flags.DEFINE_string("include_path", None, "A directory of task YAML files to add to the harness's.",
                        flag_values=fv)
    flags.DEFINE_integer("batch_size", 16, "Requests scored (or prompts generated) together.", flag_values=fv)
    flags.DEFINE_integer("num_fewshot", None, "Few-shot examples per prompt (default: each task's own).",
                         flag_values=fv)
    return fv


def task_manager(include_path: str | None, names: list[str]):
    """The harness's TaskManager that knows `names`: bmjax's example tasks (bmjax/evals/tasks) and those under
    --include_path alone when they hold every name (the harness's own index, thousands of YAML files, takes tens
    of seconds to build), else the harness's as well."""
    from lm_eval.tasks import TaskManager

    paths = [str(TASKS_DIR)]
    if include_path is not None:
        if not os.path.isdir(include_path):
            raise ConfigError("--include_path", f"{include_path} is not a directory")
        paths.append(include_path)
    local = TaskManager(include_path=paths, include_defaults=False)
    if set(names) <= set(local.all_tasks):
        return local
    manager = TaskManager(include_path=paths)
    unknown = [name for name in names if name not in set(manager.all_tasks)]
    if unknown:
        raise ConfigError("--tasks", f"unknown task(s) {', '.join(unknown)} (not among the harness's tasks, "
                                     f"bmjax's{' or those under ' + include_path if include_path else ''})")
    return manager


def run_mesh(config):
    """(mesh, logical-axis rules) the run trained with, over this machine's devices."""
    from bmjax.parallel import mesh as mesh_lib
    from bmjax.parallel import rules as rules_lib

    return mesh_lib.make_mesh(config.mesh), rules_lib.rules_from_config(config.mesh)


def scores(results: dict) -> dict:
    """task -> metric -> value from the harness's results (its `alias` and standard errors left out)."""
    return {task: {key.split(",")[0] if key.endswith(",none") else key: value
                   for key, value in metrics.items()
                   if key != "alias" and "_stderr" not in key and isinstance(value, (int, float))}
            for task, metrics in results["results"].items()}


def evaluate(workdir, task_names: list[str], *, limit: int | None = None, include_path: str | None = None,
             batch_size: int = 16, num_fewshot: int | None = None) -> dict:
    """Runs the tasks on the run in `workdir`; writes DIR/lm_eval.json and summary.json's lm_eval; returns the
    scores (task -> metric -> value) and the adapter's throughput."""
    import lm_eval

    from bmjax import runtime
    from bmjax import workdir as workdir_lib
    from bmjax.cli.sample import load_run
    from bmjax.evals.lm_harness import BmjaxLM

    if not task_names:
        raise ConfigError("--tasks", "required: one or more harness task names")
    if limit is not None and limit < 1:
        raise ConfigError("--limit", f"must be >= 1, got {limit}")
    if batch_size < 1:
        raise ConfigError("--batch_size", f"must be >= 1, got {batch_size}")
    manager = task_manager(include_path, task_names)
    # the CPU devices bmjax-train gives the run (before jax starts), so its mesh fits here as it did there
    runtime.use_cpu_devices(workdir_lib.read_config(workdir))
    step = int(workdir_lib.newest_checkpoint(workdir).name)  # the checkpoint load_run reads
    config, tokenizer, model = load_run(workdir)
    mesh, rules = run_mesh(config)
    lm = BmjaxLM(model, tokenizer, batch_size=batch_size, mesh=mesh, rules=rules)
    start = time.perf_counter()
    results = lm_eval.simple_evaluate(model=lm, tasks=task_names, limit=limit, task_manager=manager,
                                      num_fewshot=num_fewshot, log_samples=False, bootstrap_iters=0)
    seconds = time.perf_counter() - start
    workdir_lib.write_atomic(os.path.join(workdir, workdir_lib.LM_EVAL_FILE),
                             json.dumps(results, indent=2, default=str) + "\n")
    found = scores(results)
    workdir_lib.update_summary(workdir, {"lm_eval": found, "lm_eval_step": step})
    return {"scores": found, "seconds": seconds, "scored_tokens": lm.scored_tokens,
            "tokens_per_sec": lm.scored_tokens / lm.scoring_seconds if lm.scoring_seconds else float("nan"),
            "generated_tokens": lm.generated_tokens,
            "generated_per_sec": lm.generated_tokens / lm.generation_seconds if lm.generation_seconds else float("nan")}


def run(fv: flags.FlagValues):
    if not fv.workdir:
        raise ConfigError("--workdir", "required (a bmjax-train workdir)")
    out = evaluate(fv.workdir, fv.tasks or [], limit=fv.limit, include_path=fv.include_path,
                   batch_size=fv.batch_size, num_fewshot=fv.num_fewshot)
    for task, metrics in out["scores"].items():
        print(f"{task}: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
    generated = (f", {out['generated_tokens']} generated at {out['generated_per_sec']:,.0f} tokens/s"
                 if out["generated_tokens"] else "")
    print(f"[{out['scored_tokens']} tokens scored at {out['tokens_per_sec']:,.0f} tokens/s{generated} (compilation "
          f"included); {out['seconds']:.1f}s in all; results in {os.path.join(fv.workdir, 'lm_eval.json')}]",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    return common.run(define_flags, run, argv, usage=__doc__)


if __name__ == "__main__":
    sys.exit(main())
