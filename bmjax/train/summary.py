"""A run's record for scaling laws: cumulative tokens and FLOPs on every metrics row, and `DIR/summary.json`
(mirrored into the W&B run summary) with what a fit needs.

summary.json keys:
    N            non-embedding parameters (Kaplan's N, as bmjax.models.flops counts them)
    N_total      all parameters, embeddings included (Chinchilla's N; bmjax/scaling/points.py holds the convention)
    D            training tokens: the real target tokens trained on, so packing's padding (data.packing=segments)
                 is not counted (the packed pipeline's per-source counts, summed); steps * batch_size * seq_len
                 for pipelines without padding. As of the last metrics row.
    C            training FLOPs: D * train_flops_per_token (6N plus the output projection plus attention, the
                 PaLM convention of bmjax.models.flops)
    C_6ND        the 6 * N * D approximation beside it
    final_eval_loss, best_eval_loss, bits_per_byte (of the final eval)
    eval/NAME/METRIC  the final eval's figures of each eval set (data.eval_sets) and each source of a mixture,
                 e.g. eval/shakespeare/loss, eval/shakespeare/bits_per_byte
    steps        train steps done
    wall_time    seconds from the end of set-up (data loaded, state restored or initialised) to this summary,
                 summed over the attempts of a resumed run (an attempt killed without warning counts up to its
                 last summary)
    status       running | finished | preempted (SIGTERM; the same command resumes) | failed (an exception)
    branch_from  {"workdir": "<absolute path>", "step": N}: the run this one branched from (train.branch_from),
                 whose first N steps it shares (they count in D, C and steps; wall_time is this run's own);
                 null for a run that is no branch
    lm_eval      bmjax-eval's scores (task -> metric -> value), and lm_eval_step the checkpoint step they were
                 computed at; absent until bmjax-eval ran. A resumed or extended run keeps both as they were, so
                 scores older than the run's last steps stay, with their step saying so (lm_eval_step < steps),
                 until bmjax-eval runs again (bmjax-sweep --eval_tasks re-runs it on such a run)

The summary is written when the run starts (or resumes), after every eval and when it ends; only process 0
writes it.
"""
import pathlib
import time

from bmjax import metrics as metrics_lib
from bmjax import workdir as workdir_lib
from bmjax.models import flops, model_config
from bmjax.train import branch as branch_lib
from bmjax.train import faults

LM_EVAL_KEYS = ("lm_eval", "lm_eval_step")  # written by bmjax-eval (bmjax/cli/eval.py), kept by every summary


class RunRecord:
    """Counts a run's tokens and FLOPs and keeps its summary; `close(status)` writes the last one.

    A context manager: an exception leaving the `with` block closes the record "failed" (and propagates), except
    `faults.Preempted`, raised after the loop closed the record "preempted" itself."""

    def __init__(self, config, workdir, writers, start_step: int, is_primary: bool, flops_per_token: float,
                 real_tokens=None):
        """`real_tokens()`: the run's real training tokens so far (every process calls it at the same steps: it
        may gather over processes); None: every position of every batch is a real token."""
        self.config = config
        self.workdir = pathlib.Path(workdir)
        self.writers = writers
        self.is_primary = is_primary
        self.tokens_per_step = int(config.data.batch_size) * int(config.data.seq_len)
        self.flops_per_token = float(flops_per_token)
        self.real_tokens = real_tokens
        counts = flops.param_counts(model_config(config.model))
        self.n, self.n_total = counts["non_embedding"], counts["total"]
        self.branch_from = branch_lib.record(branch_lib.parse(config.train.branch_from))
        self.step, self.tokens = start_step, self._tokens(start_step)
        self.started = time.monotonic()
        previous = workdir_lib.read_summary(self.workdir) if is_primary else None
        self.earlier_wall_time = float(previous["wall_time"]) if previous and start_step > 0 else 0.0
        # bmjax-eval's scores of a checkpoint this run resumes from or after; a run started afresh has none
        self.lm_eval = {k: previous[k] for k in LM_EVAL_KEYS if k in previous} if previous and start_step > 0 else {}
        # Evals up to the restored step, read back from metrics.jsonl (rows after it were dropped on resume).
        self.eval_losses, self.final = [], {}
        if is_primary and start_step > 0:
            for row in workdir_lib.read_metrics(self.workdir):
                if row["split"] == "eval":
                    self.eval_losses.append(row["loss"])
                    self.final = row
        self.write("running")

    def _tokens(self, step: int) -> int:
        return int(self.real_tokens()) if self.real_tokens is not None else step * self.tokens_per_step

    def counts(self, step: int) -> dict:
        """The cumulative `tokens` and `flops` to put on a metrics row of `step` (called by every process)."""
        self.step, self.tokens = step, self._tokens(step)
        return {"tokens": self.tokens, "flops": self.tokens * self.flops_per_token}

    def add_eval(self, step: int, metrics: dict) -> None:
        """Records an eval's metrics (bits_per_byte among them where the task reports it); updates the summary."""
        self.step = step
        self.eval_losses.append(metrics["loss"])
        self.final = metrics
        self.write("running")

    def summary(self, status: str) -> dict:
        tokens = self.tokens
        return {
            "N": self.n, "N_total": self.n_total, "D": tokens, "C": tokens * self.flops_per_token,
            "C_6ND": 6.0 * self.n * tokens,
            "final_eval_loss": self.final.get("loss"),
            "best_eval_loss": min(self.eval_losses) if self.eval_losses else None,
            "bits_per_byte": self.final.get("bits_per_byte"),
            "steps": self.step,
            "wall_time": self.earlier_wall_time + time.monotonic() - self.started,
            "status": status,
            "branch_from": self.branch_from,
            **{f"eval/{k}": v for k, v in self.final.items() if "/" in k and not k.startswith("tokens/")},
            **self.lm_eval,
        }

    def write(self, status: str):
        if not self.is_primary:
            return
        values = self.summary(status)
        workdir_lib.write_summary(self.workdir, values)  # a kill mid-write leaves the previous summary whole
        self.writers.summary(values)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is not None and not issubclass(exc_type, faults.Preempted):
            self.close(self.step, "failed", reopen=lambda: metrics_lib.MetricWriters(
                self.config, self.workdir, self.is_primary))
        return False  # the exception goes on

    def close(self, step: int, status: str, reopen=None):
        """The final summary. `reopen()` makes new writers when the run's were closed already (a run that
        stopped on a non-finite loss), so W&B still gets the status."""
        self.step = step
        if self.writers.closed and reopen is not None and self.is_primary:
            self.writers = reopen()
            self.write(status)
            self.writers.close()
            return
        self.write(status)
