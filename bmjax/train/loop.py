"""The training loop: `train_and_evaluate(config, workdir)`, one flat function from config to finished run.

Order of work: validate everything cheap (config, files, mesh, a branch against its parent) -> data and tokenizer
-> abstract model and shardings -> `restore_or_init` (resume from the run's own newest checkpoint, else branch from
the parent's, else initialise; record the config) -> jitted steps -> loop (log, eval, checkpoint) -> final eval,
checkpoint and, once it is committed, for GPT a text sample.
"""
import contextlib
import dataclasses
import math
import pathlib
import shutil
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from bmjax import checkpoint as ckpt_lib
from bmjax import metrics as metrics_lib
from bmjax import runtime, validate
from bmjax import workdir as workdir_lib
from bmjax.data.mlm import max_predictions
from bmjax.errors import ConfigError
from bmjax.models import flops
from bmjax.parallel.batches import to_global
from bmjax.train import branch as branch_lib
from bmjax.train import faults
from bmjax.train import init_from as init_from_lib
from bmjax.train import mfu as mfu_lib
from bmjax.train import optim as optim_lib
from bmjax.train import run_config, sample, setup
from bmjax.train import summary as summary_lib
from bmjax.train import tasks as tasks_lib
from bmjax.train.setup import total_train_steps


def stack_batches(batches: list[dict]) -> dict:
    return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def evaluate(eval_step, state, data, batch_sharding, seq_len, finalize=tasks_lib.finalize) -> dict:
    """One pass over the eval batches; metrics summed over batches, then `finalize`d (the task's). Data made of
    several sources (`eval_parts`, a mixture) is scored source by source: the metrics are over all of them, and
    each source's own are added as `<source>/<metric>` (eval/<source>/loss in W&B and TensorBoard). Each named
    eval set (`eval_sets`, data.eval_sets) is scored on its own and adds `<name>/<metric>`, outside the totals."""
    parts = data.eval_parts() if hasattr(data, "eval_parts") else [("", data.eval_batches())]
    totals, by_source = None, {}
    for name, batches in parts:
        part = _summed_metrics(eval_step, state, batches, batch_sharding, seq_len)
        if part is None:
            continue
        totals = part if totals is None else jax.tree.map(jnp.add, totals, part)
        if len(parts) > 1:
            by_source.update({f"{name}/{k}": v for k, v in finalize(jax.device_get(part)).items()})
    for name, batches in data.eval_sets() if hasattr(data, "eval_sets") else ():
        part = _summed_metrics(eval_step, state, batches, batch_sharding, seq_len)
        if part is not None:
            by_source.update({f"{name}/{k}": v for k, v in finalize(jax.device_get(part)).items()})
    return dict(finalize(jax.device_get(totals)), **by_source)


def _summed_metrics(eval_step, state, batches, batch_sharding, seq_len):
    """The eval step's metrics summed over `batches` (None for no batch)."""
    total = None
    for batch in batches:
        metrics = eval_step(state.params, state.rest, to_global(batch, batch_sharding, seq_len))
        total = metrics if total is None else jax.tree.map(jnp.add, total, metrics)
    return total


def train_and_evaluate(config, workdir: str, allow_config_change=()) -> dict:
    """Train `config` in `workdir`, resuming from its newest checkpoint; returns the last eval metrics.

    A resume whose config changes the maths against the run's saved config stops with a ConfigError unless
    `allow_config_change` names every changed key (bmjax/train/run_config.py)."""
    # summary.json's status: finished, preempted (written where the loop stops) or failed (any other exception
    # once the run's record exists; re-raised). A run halted on a non-finite loss closed its writers first.
    config = run_config.resolve_paths(config)  # relative paths are the starting directory's, from here on
    workdir = run_config.absolute(str(workdir))
    records = []
    try:
        return _train_and_evaluate(config, workdir, records, allow_config_change)
    except faults.Preempted:
        raise
    except BaseException:
        if records:
            records[0].close(records[0].step, "failed", reopen=lambda: metrics_lib.MetricWriters(
                config, pathlib.Path(workdir), records[0].is_primary))
        raise


def _train_and_evaluate(config, workdir, records: list, allow_config_change=()) -> dict:
    workdir = pathlib.Path(workdir)
    runtime.use_cpu_devices(config)  # before anything asks jax for a device
    checked = validate.validate_config(config, workdir)  # the mesh and rules it built are the run's
    init_from_lib.check_init_from(config)
    run_config.check_allowed_keys(config, allow_config_change)
    # A branch is checked against its parent before anything loads, unless it resumes from checkpoints of its own.
    parent = branch_lib.check(config) if not workdir_lib.checkpoint_steps(workdir) else None
    mesh = checked.mesh
    is_primary = jax.process_index() == 0
    with _refused_start_leaves_workdir_as_found(workdir, is_primary):
        workdir.mkdir(parents=True, exist_ok=True)
        data, input_rows = setup.load_data(config, str(workdir), mesh, checked.rules)
        total_steps = total_train_steps(config, data)
        training = setup.build_training(config, mesh, total_steps, rules=checked.rules)

        checkpointer = ckpt_lib.Checkpointer(workdir, keep=int(config.train.keep_ckpts),
                                             keep_steps=config.train.ckpt_steps)
        start = restore_or_init(config, workdir, training, data, checkpointer, total_steps, parent,
                                allow_config_change, is_primary)
        if start.finished is not None:
            checkpointer.close()  # restored and read only: the run's files stay as they were
            if is_primary:
                print(f"{workdir} is finished (step {start.step} of {total_steps}); nothing to do. "
                      f"{_results_line(workdir)}", flush=True)
            return {"loss": start.finished.get("final_eval_loss")}
        start_step, state = start.step, start.state
    if is_primary and start_step < total_steps:  # about to train: what its schedule will not do
        for line in optim_lib.schedule_warnings(config.optim, total_steps):
            print(f"warning: {line}", file=sys.stderr, flush=True)
    if is_primary:  # rows a killed run logged after its last complete checkpoint are logged again from here
        workdir_lib.truncate_metrics(workdir, start_step)
    writers = metrics_lib.MetricWriters(config, workdir, is_primary)

    k = int(config.train.steps_per_call)

    model_cfg = build_model_config(config)
    seq_len = int(config.data.seq_len)
    flops_per_token = flops.train_flops_per_token(model_cfg, seq_len, flops.output_fraction(
        config.data.task, seq_len, max_predictions(seq_len)))
    peak = mfu_lib.total_peak_flops(config.model.dtype)  # NaN for an unknown device: mfu is logged as NaN
    if is_primary:
        print(mfu_lib.describe_peak(config.model.dtype), flush=True)
    tokens_per_step = int(config.data.batch_size) * int(config.data.seq_len)
    log_every, eval_every, ckpt_every = (int(config.train.log_every), int(config.train.eval_every),
                                         int(config.train.ckpt_every))
    ckpt_steps = set(config.train.ckpt_steps)
    real_tokens = None
    if hasattr(data, "source_tokens"):  # packed: padding is no token (D counts what was trained on)
        real_tokens = lambda: sum(source_token_counts(data, input_rows.count).values())  # noqa: E731
    record = summary_lib.RunRecord(config, workdir, writers, start_step, is_primary, flops_per_token, real_tokens)
    records.append(record)

    progress = _progress_bar(config, start_step, total_steps, is_primary)
    eval_metrics: dict = {}
    pending = []  # (step, metrics) not yet fetched from the device
    halt_on_nonfinite = config.train.on_nonfinite == "halt"
    unchecked = []  # (step, loss, grad_norm) not yet checked for NaN/inf (train.on_nonfinite=halt)
    window_start, window_steps = time.perf_counter(), 0
    step = start_step
    # train.steps need not be a multiple of steps_per_call: the last call runs the steps left (compiled once).
    step_fns = {k: (training.step_fn, training.feed_sharding)}
    compiled = set()  # call sizes whose step function has run (and compiled)
    with faults.PreemptionWatch() as preemption:
        while step < total_steps:
            steps_now = min(k, total_steps - step)
            if steps_now not in step_fns:
                step_fns[steps_now] = training.step_fn_for(config, steps_now)
            batches = [next(data.train_iter) for _ in range(steps_now)]
            batch = stack_batches(batches) if steps_now > 1 else batches[0]
            compiles = steps_now not in compiled  # a function's first call compiles it: left out of tokens/s
            if compiles:
                jax.block_until_ready(state)  # the steps before it finish inside the window
                call_started = time.perf_counter()
            fn, sharding = step_fns[steps_now]
            state, out = fn(state, to_global(batch, sharding, int(config.data.seq_len)))
            step += steps_now
            if compiles:
                jax.block_until_ready(out)
                window_start += time.perf_counter() - call_started
                compiled.add(steps_now)
            else:
                window_steps += steps_now
            pending.append((step, out))
            if halt_on_nonfinite:
                unchecked.append((step, out["loss"], out["grad_norm"]))
            if len(pending) > 2:  # keep few steps in flight: bounded memory, and no collective queue pile-up
                jax.block_until_ready(pending[-3][1])
            preempted = preemption.reached(step)
            boundary = preempted or step == total_steps or step in ckpt_steps or any(
                step % n == 0 for n in (log_every, eval_every, ckpt_every))
            if unchecked and (boundary or len(unchecked) > 2):
                # Steps that finished are checked as they go; all of them before anything is logged, evaluated or
                # saved, so a checkpoint never holds parameters a non-finite step produced.
                _halt_if_nonfinite(unchecked if boundary else unchecked[:-2], checkpointer, writers, progress)
                unchecked = [] if boundary else unchecked[-2:]
            if step % log_every == 0 or step == total_steps:
                rows = jax.device_get(pending)
                pending = []
                elapsed = time.perf_counter() - window_start
                # A window holding only compiling calls has no rate to report: NaN, not a number near zero.
                tokens_per_sec = window_steps * tokens_per_step / max(elapsed, 1e-9) if window_steps else math.nan
                last_step, last = rows[-1]
                last = {name: np.asarray(v).reshape(-1)[-1] for name, v in last.items()}
                scalars = dict(last, **record.counts(last_step), tokens_per_sec=tokens_per_sec,
                               mfu=tokens_per_sec * flops_per_token / peak)
                if hasattr(data, "source_tokens"):  # a mixture: how many tokens each source delivered
                    scalars.update(source_token_counts(data, input_rows.count))
                writers.write(last_step, "train", scalars)
                if progress is not None:
                    progress.set_postfix(loss=f"{float(last['loss']):.4f}", tok_s=f"{tokens_per_sec:,.0f}")
                window_start, window_steps = time.perf_counter(), 0
            if progress is not None:
                progress.update(steps_now)
            if step % eval_every == 0 or step == total_steps:
                jax.block_until_ready(state)  # train steps still running belong to the window, not the eval
                eval_started = time.perf_counter()
                eval_metrics = evaluate(training.eval_step, state, data, training.batch_sharding,
                                        int(config.data.seq_len), tasks_lib.get_task(config.data.task).finalize)
                record.add_eval(step, eval_metrics)
                writers.write(step, "eval", dict(eval_metrics, **record.counts(step)))
                if progress is not None:
                    progress.write(f"step {step}: eval {_eval_line(eval_metrics)}")
                # The eval's time leaves the throughput window; the window's steps stay counted.
                window_start += time.perf_counter() - eval_started
            if step % ckpt_every == 0 or step in ckpt_steps or step == total_steps or preempted:
                checkpointer.save(step, state, data.train_iter, force=preempted)
            if preempted:
                record.close(step, "preempted")
                _stop(checkpointer, writers, progress)
                raise faults.Preempted(step, str(checkpointer.path(step)))
    checkpointer.close()
    if progress is not None:
        progress.close()

    if config.model.name == "gpt" and int(config.train.sample_tokens) > 0:
        text = sample.sample_text(training.graphdef, state.params, state.rest, data.tokenizer, config)
        if is_primary:
            workdir_lib.sample_file(workdir).write_text(text)
            print("--- sample ---\n" + text + "\n--------------", flush=True)
    record.close(step, "finished")
    writers.close()
    if is_primary:
        print(_results_line(workdir), flush=True)
    return eval_metrics


@dataclasses.dataclass
class Start:
    """Where training starts: the step (0 for a fresh run) and the state there; `finished`, the summary of a run
    that has nothing left to train."""
    step: int
    state: object
    finished: dict | None = None


def restore_or_init(config, workdir: pathlib.Path, training, data, checkpointer, total_steps: int, parent,
                    allow_config_change, is_primary: bool) -> Start:
    """The state training starts from, the first that applies:
    1. the workdir's newest complete checkpoint (a resume: the config is compared with the run's saved one first);
    2. for a branch (train.branch_from) the parent's checkpoint at the branch point, `data`'s iterator moved to
       the parent's position there, and the parent's metrics rows up to it copied;
    3. a fresh initialisation from train.seed (with train.init_from's parameters where set).
    Then records the config it trains with (config.json, or config.stepNNNNNN.json for a resume)."""
    if checkpointer.latest_step() is not None:  # compared before the restore: a refused resume changes nothing
        run_config.check_resume(workdir, config, allow_config_change)
    abstract = ckpt_lib.abstract_like(training.abstract_state, training.state_shardings)
    step, state = checkpointer.restore_latest(abstract, data.train_iter, log=lambda line: print(line, flush=True))
    resumed = step is not None
    if resumed:
        finished = workdir_lib.read_summary(workdir) or {}
        if step >= total_steps and finished.get("status") == "finished":
            return Start(step, state, finished)
        logging.info("Resuming from checkpoint at step %d", step)
        print(f"resuming from {checkpointer.path(step)} (the newest complete checkpoint)", flush=True)
    elif config.train.branch_from:
        parent = parent or branch_lib.check(config)  # unchecked when checkpoints of its own were all incomplete
        step, state = parent.step, _restore_parent(parent, abstract, data)
        if is_primary:
            branch_lib.copy_metrics(parent, workdir)
            print(f"branching from {parent.workdir} at step {step}", flush=True)
    else:
        step, state = 0, training.init(int(config.train.seed))
        if config.train.init_from:
            params, message = init_from_lib.init_params(config, state.params)
            state = state.replace(params=params)
            if is_primary:
                print(message, flush=True)
    if is_primary:  # after the restore (or the init) succeeded: a refused start leaves every file as it was
        run_config.record(workdir, config, step if resumed else None)
    return Start(step, state)


def _restore_parent(parent, abstract, data):
    """The parent's state at the branch point, read without changing any of the parent's files."""
    source = ckpt_lib.Checkpointer(parent.workdir, keep=None, read_only=True)
    try:
        missing = ckpt_lib.missing_part(source.path(parent.step))
        if missing:
            raise ConfigError(branch_lib.KEY, f"{source.path(parent.step)} is incomplete ({missing})")
        return source.restore_complete(parent.step, abstract, data.train_iter)
    finally:
        source.close()


EVAL_CONSOLE_METRICS = ("loss", "accuracy", "f1", "bits_per_byte")  # what a task reports, in this order


def _eval_line(metrics: dict) -> str:
    """'loss 0.6931 accuracy 0.5000 f1 0.3333': the eval metrics the task has, for the console."""
    return " ".join(f"{name} {float(metrics[name]):.4f}" for name in EVAL_CONSOLE_METRICS if name in metrics)


def _results_line(workdir: pathlib.Path) -> str:
    """Where a finished run's results are: the files of its workdir a user reads."""
    files = [name for name in ("summary.json", "metrics.jsonl", "sample.txt") if (workdir / name).is_file()]
    return f"results: {', '.join(str(workdir / name) for name in files)}"


@contextlib.contextmanager
def _refused_start_leaves_workdir_as_found(workdir: pathlib.Path, is_primary: bool):
    """Start-up: if it raises (a config refused, a checkpoint unreadable), what it created in `workdir` is removed
    again, and `workdir` itself if it is new, so a refused run leaves the workdir as it was. A checkpoint that
    restore set aside as incomplete is never removed."""
    before = set(workdir.iterdir()) if workdir.is_dir() else None
    try:
        yield
    except BaseException:
        if is_primary and workdir.is_dir():
            for path in set(workdir.iterdir()) - (before or set()):
                if path.name == ckpt_lib.INCOMPLETE_DIR:
                    continue
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            if before is None and not any(workdir.iterdir()):
                workdir.rmdir()
        raise


def source_token_counts(data, row_groups: int) -> dict:
    """`tokens/<source>`: target tokens each source delivered to the run so far. Every process calls this at
    the same step; processes that load the same rows (one row group) are counted once."""
    counts = data.source_tokens()
    values = np.array(list(counts.values()), dtype=np.int64)
    if jax.process_count() > 1:
        values = multihost_utils.process_allgather(values).sum(0) * row_groups // jax.process_count()
    return {f"tokens/{name}": int(v) for name, v in zip(counts, values)}


def _stop(checkpointer, writers, progress):
    """Finish the checkpoint being written and flush the metrics, before stopping early."""
    checkpointer.close()
    writers.close()
    if progress is not None:
        progress.close()


def _halt_if_nonfinite(entries, checkpointer, writers, progress):
    bad = faults.first_nonfinite(entries)
    if bad is None:
        return
    _stop(checkpointer, writers, progress)
    last = checkpointer.latest_step()
    raise faults.NonFiniteError(*bad, last_checkpoint=None if last is None else str(checkpointer.path(last)))


def build_model_config(config):
    """The model's own config dataclass (e.g. GPTConfig), for FLOP counts."""
    from bmjax.models import model_config

    return model_config(config.model)


def _progress_bar(config, start_step: int, total_steps: int, is_primary: bool):
    if not (is_primary and config.train.progress):
        return None
    from tqdm import tqdm

    return tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, mininterval=1.0)
