"""The training loop: `train_and_evaluate(config, workdir)`, from config to finished run, in named pieces:

    start_up      validate everything cheap (config, files, mesh, tokenizer, a branch against its parent; what
                  validation built is used, not built again) -> data -> training (optimizer, abstract state and
                  shardings, jitted steps) -> `restore_or_init` (resume from the run's own newest checkpoint, else
                  branch from the parent's, else initialise; record the config)
    open_run      metrics writers, the run record (summary.json; a context manager closing it "failed" on an
                  exception), progress bar
    train         the loop body: steps through the throughput window (throughput.py) and the non-finite guard
                  (faults.NonFiniteGuard), then at boundaries `log`, `eval_and_record` and the checkpoint
    finish        the last checkpoint committed, for GPT a text sample, the record closed "finished"
"""
import contextlib
import dataclasses
import pathlib
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from bmjax import checkpoint as ckpt_lib
from bmjax import data as data_lib
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
from bmjax.train import throughput
from bmjax.train.setup import total_train_steps


def stack_batches(batches: list[dict]) -> dict:
    return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def evaluate(eval_step, state, data, batch_sharding, seq_len, finalize=tasks_lib.finalize) -> dict:
    """One pass over the eval batches; metrics summed over batches, then `finalize`d (the task's). Data made of
    several sources (`eval_parts`, a mixture) is scored source by source: the metrics are over all of them, and
    each source's own are added as `<source>/<metric>` (eval/<source>/loss in W&B and TensorBoard). Each named
    eval set (`eval_sets`, data.eval_sets) is scored on its own and adds `<name>/<metric>`, outside the totals."""
    parts = data.eval_parts()
    totals, by_source = None, {}
    for name, batches in parts:
        part = _summed_metrics(eval_step, state, batches, batch_sharding, seq_len)
        if part is None:
            continue
        totals = part if totals is None else jax.tree.map(jnp.add, totals, part)
        if len(parts) > 1:
            by_source.update({f"{name}/{k}": v for k, v in finalize(jax.device_get(part)).items()})
    for name, batches in data.eval_sets():
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
    `allow_config_change` names every changed key (bmjax/train/run_config.py).
    summary.json's status: finished, preempted (written where the loop stops) or failed (any other exception
    once the run's record exists, re-raised: RunRecord's `with`). A run halted on a non-finite loss closed its
    writers first."""
    config = run_config.resolve_paths(config)  # relative paths are the starting directory's, from here on
    workdir = pathlib.Path(run_config.absolute(str(workdir)))
    runtime.use_cpu_devices(config)  # before anything asks jax for a device
    started = start_up(config, workdir, allow_config_change)
    if started.start.finished is not None:
        return _nothing_to_do(started)
    run = open_run(started)
    with run.record:
        state, step, eval_metrics = train(run, started.start)
        finish(run, state, step)
    return eval_metrics


@dataclasses.dataclass(frozen=True)
class StartUp:
    """What start-up built: the checked config's data, training and checkpointer, and where training starts."""
    config: object
    workdir: pathlib.Path
    is_primary: bool
    data: data_lib.Data
    input_rows: object  # parallel.batches' InputShard: this process's rows of each batch
    total_steps: int
    training: setup.Training
    checkpointer: ckpt_lib.Checkpointer
    start: "Start"


def start_up(config, workdir: pathlib.Path, allow_config_change) -> StartUp:
    """Validate (what it built is the run's: the config with model.vocab_size resolved, the mesh and rules, the
    tokenizer, the abstract model), load the data, build the training, then restore or initialise the state.
    A refused start leaves the workdir as it found it."""
    checked = validate.validate_config(config, workdir)
    config = checked.config  # model.vocab_size resolved from the tokenizer where unset: what config.json records
    init_from_lib.check_init_from(config)
    run_config.check_allowed_keys(config, allow_config_change)
    # A branch is checked against its parent before anything loads, unless it resumes from checkpoints of its own.
    parent = branch_lib.check(config) if not workdir_lib.checkpoint_steps(workdir) else None
    is_primary = jax.process_index() == 0
    with _refused_start_leaves_workdir_as_found(workdir, is_primary):
        workdir.mkdir(parents=True, exist_ok=True)
        data, input_rows = setup.load_data(config, str(workdir), checked.mesh, checked.rules, checked.tokenizer)
        total_steps = total_train_steps(config, data)
        training = setup.build_training(config, checked.mesh, total_steps, rules=checked.rules,
                                        abstract_model=checked.abstract_model)
        checkpointer = ckpt_lib.Checkpointer(workdir, keep=int(config.train.keep_ckpts),
                                             keep_steps=config.train.ckpt_steps)
        start = restore_or_init(config, workdir, training, data, checkpointer, total_steps, parent,
                                allow_config_change, is_primary)
    return StartUp(config, workdir, is_primary, data, input_rows, total_steps, training, checkpointer, start)


def _nothing_to_do(started: StartUp) -> dict:
    """A finished run started again: restored and read only, the run's files stay as they were."""
    started.checkpointer.close()
    if started.is_primary:
        print(f"{started.workdir} is finished (step {started.start.step} of {started.total_steps}); nothing to do. "
              f"{_results_line(started.workdir)}", flush=True)
    return {"loss": started.start.finished.get("final_eval_loss")}


@dataclasses.dataclass
class Run:
    """A run being trained: start-up's products, its outputs (metrics writers, run record, progress bar) and what
    its metrics rows are computed from."""
    config: object
    workdir: pathlib.Path
    is_primary: bool
    data: data_lib.Data
    input_rows: object
    total_steps: int
    training: setup.Training
    checkpointer: ckpt_lib.Checkpointer
    writers: metrics_lib.MetricWriters
    record: summary_lib.RunRecord
    progress: object  # a tqdm bar, or None
    flops_per_token: float
    peak_flops: float  # NaN for an unknown device: mfu is logged as NaN

    def logs_at(self, step: int) -> bool:
        return step % int(self.config.train.log_every) == 0 or step == self.total_steps

    def evaluates_at(self, step: int) -> bool:
        return step % int(self.config.train.eval_every) == 0 or step == self.total_steps

    def saves_at(self, step: int) -> bool:
        return (step % int(self.config.train.ckpt_every) == 0 or step in tuple(self.config.train.ckpt_steps)
                or step == self.total_steps)

    def source_tokens(self) -> dict:
        """`tokens/<source>` over every process; empty for data without per-source counts."""
        return source_token_counts(self.data, self.input_rows.count)


def open_run(started: StartUp) -> Run:
    """The run's outputs, opened once start-up succeeded: schedule warnings, metrics rows after the restored
    step dropped, writers, the run record (summary.json) and the progress bar."""
    config, workdir, is_primary, start = started.config, started.workdir, started.is_primary, started.start
    if is_primary and start.step < started.total_steps:  # about to train: what its schedule will not do
        for line in optim_lib.schedule_warnings(config.optim, started.total_steps):
            print(f"warning: {line}", file=sys.stderr, flush=True)
    if is_primary:  # rows a killed run logged after its last complete checkpoint are logged again from here
        workdir_lib.truncate_metrics(workdir, start.step)
    writers = metrics_lib.MetricWriters(config, workdir, is_primary)
    seq_len = int(config.data.seq_len)
    flops_per_token = flops.train_flops_per_token(build_model_config(config), seq_len, flops.output_fraction(
        config.data.task, seq_len, max_predictions(seq_len)))
    if is_primary:
        print(mfu_lib.describe_peak(config.model.dtype), flush=True)
    peak_flops = mfu_lib.total_peak_flops(config.model.dtype)
    data, input_rows = started.data, started.input_rows
    real_tokens = None
    if data.source_tokens() is not None:  # packed: padding is no token (D counts what was trained on)
        real_tokens = lambda: sum(source_token_counts(data, input_rows.count).values())  # noqa: E731
    progress = _progress_bar(config, start.step, started.total_steps, is_primary)
    # Last: once the record exists (summary.json "running"), train_and_evaluate's `with` closes it on failure.
    record = summary_lib.RunRecord(config, workdir, writers, start.step, is_primary, flops_per_token, real_tokens)
    return Run(config, workdir, is_primary, data, input_rows, started.total_steps, started.training,
               started.checkpointer, writers, record, progress, flops_per_token, peak_flops)


def train(run: Run, start: "Start"):
    """The train loop from `start` to train.steps: steps, then at their boundaries log, eval and checkpoint;
    returns (state, step, the last eval's metrics). A preemption notice saves a checkpoint and raises
    faults.Preempted; a non-finite step under train.on_nonfinite=halt raises faults.NonFiniteError."""
    config, training, data = run.config, run.training, run.data
    k, seq_len = int(config.train.steps_per_call), int(config.data.seq_len)
    window = throughput.ThroughputWindow(int(config.data.batch_size) * seq_len)
    guard = faults.NonFiniteGuard(config.train.on_nonfinite == "halt", halt=lambda: _halt(run))
    # train.steps need not be a multiple of steps_per_call: the last call runs the steps left (compiled once).
    step_fns = {k: (training.step_fn, training.feed_sharding)}
    pending = []  # (step, metrics) not yet fetched from the device
    step, state, eval_metrics = start.step, start.state, {}
    with faults.PreemptionWatch() as preemption:
        while step < run.total_steps:
            steps_now = min(k, run.total_steps - step)
            if steps_now not in step_fns:
                step_fns[steps_now] = training.step_fn_for(config, steps_now)
            fn, sharding = step_fns[steps_now]
            feed = to_global(next_feed(data, steps_now), sharding, seq_len)
            state, out = window.call(fn, state, feed, steps_now)
            step += steps_now
            pending.append((step, out))
            guard.add(step, out)
            if len(pending) > 2:  # keep few steps in flight: bounded memory, and no collective queue pile-up
                jax.block_until_ready(pending[-3][1])
            preempted = preemption.reached(step)
            # No checkpoint may hold parameters a non-finite step produced: checked before a boundary's work.
            guard.check(boundary=preempted or run.logs_at(step) or run.evaluates_at(step) or run.saves_at(step))
            if run.logs_at(step):
                log(run, jax.device_get(pending), window)
                pending = []
            if run.progress is not None:
                run.progress.update(steps_now)
            if run.evaluates_at(step):
                eval_metrics = eval_and_record(run, state, step, window)
            if run.saves_at(step) or preempted:
                run.checkpointer.save(step, state, data.train_iter, force=preempted)
            if preempted:
                run.record.close(step, "preempted")
                _stop(run)
                raise faults.Preempted(step, str(run.checkpointer.path(step)))
    return state, step, eval_metrics


def next_feed(data, steps: int) -> dict:
    """The next `steps` batches of the train iterator, stacked [steps, ...] when a call fuses several."""
    batches = [next(data.train_iter) for _ in range(steps)]
    return stack_batches(batches) if steps > 1 else batches[0]


def log(run: Run, rows: list, window: throughput.ThroughputWindow):
    """One train row: the last step's metrics, the cumulative tokens and FLOPs, the window's tokens/s and MFU,
    and a mixture's tokens per source; then a new throughput window."""
    tokens_per_sec = window.tokens_per_sec()
    last_step, last = rows[-1]
    last = {name: np.asarray(v).reshape(-1)[-1] for name, v in last.items()}
    scalars = dict(last, **run.record.counts(last_step), tokens_per_sec=tokens_per_sec,
                   mfu=tokens_per_sec * run.flops_per_token / run.peak_flops, **run.source_tokens())
    run.writers.write(last_step, "train", scalars)
    if run.progress is not None:
        run.progress.set_postfix(loss=f"{float(last['loss']):.4f}", tok_s=f"{tokens_per_sec:,.0f}")
    window.reset()


def eval_and_record(run: Run, state, step: int, window: throughput.ThroughputWindow) -> dict:
    """The eval at `step`, written to the metrics and the run record; its time leaves the throughput window."""
    jax.block_until_ready(state)  # train steps still running belong to the window, not the eval
    with window.excluded():
        metrics = evaluate(run.training.eval_step, state, run.data, run.training.batch_sharding,
                           int(run.config.data.seq_len), tasks_lib.get_task(run.config.data.task).finalize)
        run.record.add_eval(step, metrics)
        run.writers.write(step, "eval", dict(metrics, **run.record.counts(step)))
        if run.progress is not None:
            run.progress.write(f"step {step}: eval {_eval_line(metrics)}")
    return metrics


def finish(run: Run, state, step: int):
    """After the last step: the checkpoint committed, for GPT a text sample, the record closed "finished"."""
    run.checkpointer.close()
    if run.progress is not None:
        run.progress.close()
    config = run.config
    if config.model.name == "gpt" and int(config.train.sample_tokens) > 0:
        text = sample.sample_text(run.training.graphdef, state.params, state.rest, run.data.tokenizer, config)
        if run.is_primary:
            workdir_lib.sample_file(run.workdir).write_text(text)
            print("--- sample ---\n" + text + "\n--------------", flush=True)
    run.record.close(step, "finished")
    run.writers.close()
    if run.is_primary:
        print(_results_line(run.workdir), flush=True)


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
    if counts is None:
        return {}
    values = np.array(list(counts.values()), dtype=np.int64)
    if jax.process_count() > 1:
        values = multihost_utils.process_allgather(values).sum(0) * row_groups // jax.process_count()
    return {f"tokens/{name}": int(v) for name, v in zip(counts, values)}


def _stop(run: Run):
    """Finish the checkpoint being written and flush the metrics, before stopping early."""
    run.checkpointer.close()
    run.writers.close()
    if run.progress is not None:
        run.progress.close()


def _halt(run: Run) -> str | None:
    """Stops the run at a non-finite step; the newest checkpoint's path (None without one), left as it was."""
    _stop(run)
    last = run.checkpointer.latest_step()
    return None if last is None else str(run.checkpointer.path(last))


def build_model_config(config):
    """The model's own config dataclass (e.g. GPTConfig), for FLOP counts."""
    from bmjax.models import model_config

    return model_config(config.model)


def _progress_bar(config, start_step: int, total_steps: int, is_primary: bool):
    if not (is_primary and config.train.progress):
        return None
    from tqdm import tqdm

    return tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, mininterval=1.0)
