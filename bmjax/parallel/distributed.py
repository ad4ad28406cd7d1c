"""Multi-process start-up: `jax.distributed.initialize` from flags, or from the environment on TPU VMs / SLURM."""
import os

import jax


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1):
    """Join the job. Must run before any other jax call.

    With a coordinator address, the three values come from the flags. Without one, a TPU VM pod slice or a
    SLURM allocation is detected from its environment and jax finds the values itself; a single process does
    nothing.
    """
    if coordinator_address:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    elif _in_slurm_job() or _on_tpu_pod():
        jax.distributed.initialize()


def _in_slurm_job() -> bool:
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ


def _on_tpu_pod() -> bool:
    return bool(os.environ.get("TPU_WORKER_HOSTNAMES", "").count(","))
