"""Multi-process start-up: `jax.distributed.initialize` from flags, or from the environment on TPU VMs / SLURM.

One process per host (TPU VM worker, GPU node, or for tests a local process with fake CPU devices). Every
process runs the same program; jax.distributed joins them into one set of global devices, and the mesh spans
all of them. Each process then feeds only its rows of every batch (`jax.make_array_from_process_local_data`),
writes its own checkpoint shards, and only process 0 writes metrics.
"""
import glob
import os

import jax

from bmjax.errors import ConfigError

GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips show up as PCI devices of Google's vendor id


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> str:
    """Join the job; must run before any other jax call. Returns how: "flags", "slurm", "tpu" or "single".

    With a coordinator address the three values come from the flags (`--coordinator_address HOST:PORT
    --num_processes N --process_id I`). Without one, a SLURM job step of several tasks or a Cloud TPU VM is
    detected from its environment and jax finds the values itself; anything else is a single process.
    """
    if coordinator_address:
        if num_processes < 1:
            raise ConfigError("--num_processes", f"--coordinator_address needs --num_processes >= 1, "
                                                 f"got {num_processes}")
        if not 0 <= process_id < num_processes:
            raise ConfigError("--process_id", f"must be in [0, --num_processes={num_processes}), got {process_id}")
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
        return "flags"
    if in_slurm_job():
        jax.distributed.initialize()
        return "slurm"
    if on_cloud_tpu_vm():
        jax.distributed.initialize()
        return "tpu"
    return "single"


def in_slurm_job() -> bool:
    """Inside `srun` with more than one task (a single-task job needs no coordinator)."""
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ


def on_cloud_tpu_vm() -> bool:
    """A Cloud TPU VM: its TPU chips are PCI devices of Google's vendor id (what libtpu itself checks)."""
    if os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return True
    for path in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(path) as f:
                if f.read().strip() == GOOGLE_PCI_VENDOR:
                    return True
        except OSError:
            continue
    return False
