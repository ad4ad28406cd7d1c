"""Multi-process start-up: `jax.distributed.initialize` from flags, or from the cluster jax detects itself.

One process per host (TPU VM worker, GPU node, or for tests a local process with fake CPU devices). Every
process runs the same program; jax.distributed joins them into one set of global devices, and the mesh spans
all of them. Each process then feeds only the rows of every batch its devices hold (bmjax/parallel/batches.py),
writes its own checkpoint shards, and only process 0 writes metrics.
"""
import jax

from bmjax.errors import ConfigError


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> str:
    """Join the job; must run before any other jax call. Returns how: "flags", "cluster" or "single".

    With a coordinator address the three values come from the flags (`--coordinator_address HOST:PORT
    --num_processes N --process_id I`). Without one, jax's own cluster detection finds them (SLURM, Cloud TPU
    VMs and GKE, Open MPI, Kubernetes); where it finds no cluster this is a single process.
    """
    if coordinator_address:
        if num_processes < 1:
            raise ConfigError("--num_processes", f"--coordinator_address needs --num_processes >= 1, "
                                                 f"got {num_processes}")
        if not 0 <= process_id < num_processes:
            raise ConfigError("--process_id", f"must be in [0, --num_processes={num_processes}), got {process_id}")
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
        return "flags"
    try:
        jax.distributed.initialize()
    except ValueError:  # "coordinator_address should be defined": no cluster around this process
        return "single"
    return "cluster"
