"""Running bmjax-train in a subprocess the way a user or a scheduler does: start it, watch metrics.jsonl,
signal it, run the same command again. Shared by the fault-tolerance tests (resume, preemption, non-finite).

Every run of a session shares one jax compilation cache, so only the first run of a config compiles; the
killed and resumed runs of the same config load the same executables. Reference (uninterrupted) runs are kept
per session under a name, so several test files compare against one run.
"""
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

from helpers.commands import child_env
from helpers.metrics import read_rows  # noqa: F401  (the fault-tolerance tests import it from here)
from helpers.paths import REPO_ROOT as REPO

# Tiny byte-level models on 60 kB of Shakespeare: every step logged, eval every 8 steps, a checkpoint every 5.
# Dropout is on, so the per-step random keys (fold_in(seed, step)) must also come back right after a restart.
STEPS, CKPT_EVERY = 40, 5
_SCHEDULE = (
    "--config.data.source=text", "--config.data.path=DATA", "--config.data.seq_len=32", "--config.data.batch_size=8",
    "--config.model.max_len=32", "--config.model.dropout=0.1",
    f"--config.train.steps={STEPS}", "--config.train.log_every=1", "--config.train.eval_every=8",
    "--config.train.eval_steps=2", f"--config.train.ckpt_every={CKPT_EVERY}", "--config.train.keep_ckpts=2",
    "--config.train.progress=False",
)
GPT_ARGS = ("--config", "configs/gpt/tiny.py", "--config.model.d_model=32", "--config.model.num_layers=1",
            "--config.model.num_heads=2", "--config.train.sample_tokens=0", *_SCHEDULE)
# Masked LM + next sentence prediction (data.task="mlm").
BERT_ARGS = ("--config", "configs/bert/tiny.py", "--config.model.d_model=32", "--config.model.num_layers=1",
             "--config.model.num_heads=2", "--config.model.d_ff=64", *_SCHEDULE)
MODEL_ARGS = {"gpt": GPT_ARGS, "bert": BERT_ARGS}


class Runner:
    """Builds commands and environments for one test session: its data file and compilation cache."""

    def __init__(self, base: pathlib.Path, repo_data: pathlib.Path):
        self.base = base
        self.data = base / "shakespeare_60k.txt"
        if not self.data.exists():
            self.data.write_text((repo_data / "tinyshakespeare.txt").read_text()[:60_000])
        self.cache = base / "jax-cache"

    def args(self, args, *extra) -> list[str]:
        return [a.replace("DATA", str(self.data)) for a in args] + list(extra)

    def env(self, devices: int) -> dict:
        # XLA's quickest CPU compile: every run of a test uses the same flags, so the programs compared are the same.
        env = child_env(devices, fast_compile=True)
        env["JAX_COMPILATION_CACHE_DIR"] = str(self.cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
        return env

    def run(self, args, workdir, devices=1, timeout=300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bmjax.cli.train", *args, "--workdir", str(workdir)], cwd=REPO,
                              env=self.env(devices), capture_output=True, text=True, timeout=timeout)

    def start(self, args, workdir, devices=1) -> subprocess.Popen:
        """Start a run in the background; its output goes to files next to the workdir (a pipe could fill)."""
        workdir = pathlib.Path(workdir)
        out = open(workdir.parent / f"{workdir.name}.stdout", "w")
        err = open(workdir.parent / f"{workdir.name}.stderr", "w")
        return subprocess.Popen([sys.executable, "-m", "bmjax.cli.train", *args, "--workdir", str(workdir)], cwd=REPO,
                                env=self.env(devices), stdout=out, stderr=err, text=True)

    def reference(self, name: str, args, devices=1) -> pathlib.Path:
        """The workdir of an uninterrupted run of `args`, made once per session."""
        workdir = self.base / "reference" / name
        if not (workdir / "DONE").exists():
            shutil.rmtree(workdir, ignore_errors=True)
            result = self.run(args, workdir, devices)
            assert result.returncode == 0, result.stderr[-3000:]
            (workdir / "DONE").write_text("")
        return workdir


def kill_seed() -> int:
    """The seed that picks a test's kill (or signal) step: BMJAX_TEST_SEED=N reruns a failure's exact step;
    otherwise a fresh one. Printed, so a failing test's captured output names it."""
    seed = int(os.environ.get("BMJAX_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    print(f"kill step seed {seed} (rerun this step with BMJAX_TEST_SEED={seed})", flush=True)
    return seed


def losses(workdir) -> list[tuple]:
    """(step, split, loss) of every row: what must be bitwise equal across interruptions."""
    return [(r["step"], r["split"], r["loss"]) for r in read_rows(workdir)]


def last_train_step(workdir) -> int:
    steps = [r["step"] for r in read_rows(workdir) if r["split"] == "train"]
    return steps[-1] if steps else 0


def wait_for_step(proc: subprocess.Popen, workdir, step: int, timeout: float = 300) -> int:
    """Block until the run has logged train step >= `step`; returns the newest logged step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = last_train_step(workdir)
        if seen >= step:
            return seen
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) at logged step {seen}, before step {step}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"no step {step} within {timeout}s")


def resumed_step(stdout: str) -> int | None:
    match = re.search(r"resuming from \S+/checkpoints/(\d+) ", stdout)
    return int(match.group(1)) if match else None


def checkpoint_steps(workdir) -> list[int]:
    root = pathlib.Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.exists() else []
