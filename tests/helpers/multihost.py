"""Two bmjax-train processes of 4 fake CPU devices each, joined by jax.distributed on this machine, and the
tiny GPT config they train (the same config trains the one-process reference in the test's own process)."""
import os
import socket
import subprocess
import sys

from bmjax.data import with_model_vocab_size
from helpers.paths import REPO_ROOT
from helpers.configs import load_config, set_keys
from helpers.metrics import read_rows

STEPS, HALF = 16, 8
OVERRIDES = {  # a small model; the schedule spans all STEPS so the first run's half is the same run's half
    "model.d_model": 32, "model.num_layers": 1, "model.num_heads": 4, "model.max_len": 32,
    "data.seq_len": 32, "data.batch_size": 16,
    "optim.lr": 3e-3, "optim.warmup_steps": 2, "optim.decay_steps": STEPS,
    "train.steps": STEPS, "train.log_every": 1, "train.eval_every": HALF, "train.eval_steps": 1,
    "train.ckpt_every": HALF, "train.sample_tokens": 0, "train.progress": False,
    "mesh.data": 2, "mesh.fsdp": 4,
}
WORKER_TIMEOUT = 300


def config_with(**changes):
    """configs/gpt/tiny.py with OVERRIDES and then `changes` (dotted keys) applied, model.vocab_size resolved
    from its tokenizer as the trainer resolves it (tiny.py leaves it unset)."""
    return with_model_vocab_size(set_keys(load_config("configs/gpt/tiny.py"), {**OVERRIDES, **changes}))


def train_losses(workdir) -> dict:
    """{step: train loss}; asserts each step was written once (only process 0 writes metrics)."""
    rows = read_rows(workdir)
    steps = [r["step"] for r in rows if r["split"] == "train"]
    assert len(steps) == len(set(steps)), "metrics written by more than one process"
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(workdir, **changes):
    """The CLI in two processes of 4 CPU devices each; returns their outputs. Leftovers are killed."""
    args = [f"--config.{k}={v}" for k, v in {**OVERRIDES, **changes}.items()]
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="4", PJRT_NPROC="64",
               # A hung collective fails in a minute instead of hanging; the lowest CPU optimisation compiles
               # this tiny model faster (it changes no number beyond float32 rounding).
               XLA_FLAGS="--xla_cpu_collective_call_terminate_timeout_seconds=60 "
                         "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false")
    address = f"127.0.0.1:{free_port()}"
    workers = [subprocess.Popen(
        [sys.executable, "-m", "bmjax.cli.train", "--config", "configs/gpt/tiny.py", "--workdir", str(workdir),
         "--coordinator_address", address, "--num_processes", "2", "--process_id", str(i), *args],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        outputs = [w.communicate(timeout=WORKER_TIMEOUT)[0] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    for w, out in zip(workers, outputs):
        assert w.returncode == 0, out[-3000:]
    return outputs
