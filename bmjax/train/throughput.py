"""The throughput window: training tokens per second between two log rows, over the time the train steps ran.

Left out of the window's time: a call's compilation (the first call of each call size: its steps are not
counted either, so a window of only compiling calls has no rate, NaN rather than a number near zero) and the
evals. Train steps still running when an eval starts finish inside the window first.
"""
import contextlib
import math
import time

import jax


class ThroughputWindow:
    """Counts the steps trained since `reset()` and the seconds they took; `tokens_per_sec()` is their rate."""

    def __init__(self, tokens_per_step: int):
        self.tokens_per_step = int(tokens_per_step)
        self.compiled = set()  # call sizes whose step function has run (and so compiled)
        self.reset()

    def reset(self):
        self.started, self.steps = time.perf_counter(), 0

    @contextlib.contextmanager
    def excluded(self):
        """The time spent inside leaves the window (its steps stay counted)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.started += time.perf_counter() - started

    def call(self, step_fn, state, feed, steps: int):
        """`step_fn(state, feed)`, a call of `steps` train steps, counted in the window. A call size's first call
        compiles: it runs alone (the steps before it finish inside the window) and leaves the window."""
        if steps in self.compiled:
            self.steps += steps
            return step_fn(state, feed)
        jax.block_until_ready(state)
        with self.excluded():
            result = jax.block_until_ready(step_fn(state, feed))
        self.compiled.add(steps)
        return result

    def tokens_per_sec(self) -> float:
        """The window's rate; NaN when it holds no counted step (only compiling calls)."""
        if not self.steps:
            return math.nan
        return self.steps * self.tokens_per_step / max(time.perf_counter() - self.started, 1e-9)
