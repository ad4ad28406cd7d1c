"""What stops a run early: preemption (SIGTERM) and non-finite losses or gradients.

Preemption. TPU VMs, SLURM and most schedulers send SIGTERM some seconds before they kill a job. The loop
asks `PreemptionWatch.reached(step)` after every step; once it says yes, the loop saves a checkpoint at that
step, waits for the write, and raises `Preempted`, which bmjax-train turns into exit code 143 (128 + SIGTERM,
what a shell reports for a job SIGTERM ended, so schedulers that requeue preempted jobs recognise it; the table
of exit codes is bmjax/cli/common.py). Running the same command again resumes from that checkpoint.
- One process: a Python SIGTERM handler sets a flag; the step in flight finishes first.
- Several processes: each host may see the signal at a different step, so they must agree on one. jax's
  preemption service (started by `jax.distributed.initialize`, listening for SIGTERM) does that:
  `reached_preemption_sync_point(step)` is true on every host at the same step.

Non-finite values. With `train.on_nonfinite="halt"` the loop checks every step's loss and gradient norm
(a few steps behind the device, with no extra synchronisation) and before anything is logged, evaluated or
saved, so no checkpoint ever holds parameters from a non-finite step: the run stops with `NonFiniteError`
naming the step and the newest checkpoint, which is left as it was. With `"skip"` the train step itself keeps
the old parameters and optimizer state for such a step and counts it (bmjax/train/step.py); nothing here
is needed.
"""
import signal

import jax
import numpy as np

class Preempted(Exception):
    """The run saved a checkpoint at `step` after a preemption notice and stopped."""

    def __init__(self, step: int, checkpoint: str):
        super().__init__(f"preempted: saved checkpoint {checkpoint} at step {step}; "
                         "run the same command again to resume")
        self.step = step
        self.checkpoint = checkpoint


class NonFiniteError(Exception):
    """A step's loss or gradient norm was NaN or infinite under train.on_nonfinite=halt."""

    def __init__(self, step: int, loss: float, grad_norm: float, last_checkpoint: str | None):
        where = (f"the last good checkpoint is {last_checkpoint}" if last_checkpoint
                 else "there is no checkpoint yet")
        super().__init__(f"non-finite values at step {step} (loss {loss}, grad_norm {grad_norm}); {where}, "
                         "left intact; halting (train.on_nonfinite=skip drops such updates instead)")
        self.step = step
        self.last_checkpoint = last_checkpoint


class PreemptionWatch:
    """Answers "should the run stop at this step?" after SIGTERM; a context manager that restores the old
    signal handler on exit."""

    def __init__(self):
        self.signalled = False
        self._previous = None
        self._multi_host = jax.process_count() > 1

    def __enter__(self):
        if not self._multi_host:
            try:
                self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            except ValueError:  # not the main thread (e.g. a notebook worker): no handler, the default applies
                self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _on_sigterm(self, signum, frame):
        del signum, frame
        self.signalled = True

    def reached(self, step: int) -> bool:
        """Call after every step with the step count; every host must call it with the same steps."""
        if self._multi_host:
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        return self.signalled


def first_nonfinite(entries):
    """The first (step, loss, grad_norm) among `entries` whose loss or grad norm is not finite, else None.

    `entries` are (step after the call, loss, grad_norm), with one value per step of the call when steps are
    fused (the last call of a run may hold fewer steps than the others).
    """
    for last_step, loss, grad_norm in entries:
        losses = np.asarray(jax.device_get(loss), np.float64).reshape(-1)
        norms = np.asarray(jax.device_get(grad_norm), np.float64).reshape(-1)
        bad = ~(np.isfinite(losses) & np.isfinite(norms))
        if bad.any():
            i = int(np.argmax(bad))
            return last_step - losses.size + 1 + i, float(losses[i]), float(norms[i])
    return None


class NonFiniteGuard:
    """train.on_nonfinite=halt: every call's loss and gradient norm checked a couple of calls behind the device
    (no extra synchronisation), and all of them before anything is logged, evaluated or saved.

    `halt()` runs before the error is raised: it stops the run's writers and checkpointer and returns the newest
    checkpoint's path (None without one), which the error names. Disabled, it checks nothing."""

    IN_FLIGHT = 2  # calls left unchecked between boundaries: by then the ones before them have finished

    def __init__(self, enabled: bool, halt):
        self.enabled = enabled
        self.halt = halt
        self.unchecked = []  # (step after the call, loss, grad_norm), still on the device

    def add(self, step: int, metrics: dict):
        if self.enabled:
            self.unchecked.append((step, metrics["loss"], metrics["grad_norm"]))

    def check(self, boundary: bool):
        """At a boundary (a log, eval or checkpoint step) every call so far; otherwise those that finished."""
        if not self.unchecked or not (boundary or len(self.unchecked) > self.IN_FLIGHT):
            return
        entries = self.unchecked if boundary else self.unchecked[:-self.IN_FLIGHT]
        self.unchecked = [] if boundary else self.unchecked[-self.IN_FLIGHT:]
        bad = first_nonfinite(entries)
        if bad is not None:
            raise NonFiniteError(*bad, last_checkpoint=self.halt())
