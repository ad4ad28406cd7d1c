"""Process set-up for jax's CPU backend: its thread pool, its number of devices, and glibc's malloc.

Everything here must happen before jax creates its CPU backend (the first jax call that needs a device), so
every command-line entry point (bmjax-train, bmjax-sample, bmjax-convert, the tools) calls
`set_process_defaults()` first, and the trainer runs `use_cpu_devices(config)` before it looks at any device.
A library import changes nothing: only a program's entry point may set its process's environment (tests do it
in tests/conftest.py). This module imports no jax at import time.
"""
import ctypes
import math
import os
import sys

THREAD_POOL_ENV = "PJRT_NPROC"  # read by jax's CPU client when it starts: the size of its thread pool
FORCED_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"  # XLA_FLAGS' fake CPU device count

# The pool size set_process_defaults filled in (None: it did not run, or the user had chosen one).
_default_thread_pool: str | None = None


def set_process_defaults():
    """The thread-pool default and the malloc settings every bmjax command gets; call before the first jax call."""
    global _default_thread_pool
    # jax's CPU client sizes its thread pool from the core count; with fake devices (or several
    # processes) a step holding collectives deadlocks on a 2-core machine unless the pool is larger.
    if THREAD_POOL_ENV not in os.environ:
        os.environ[THREAD_POOL_ENV] = _default_thread_pool = "64"
    keep_freed_memory_in_process()


def _user_set_thread_pool() -> bool:
    return os.environ.get(THREAD_POOL_ENV) not in (None, _default_thread_pool)


def keep_freed_memory_in_process():
    """Stop glibc handing XLA:CPU's per-call buffers back to the kernel after every call.

    glibc serves allocations above its mmap threshold (at most 32 MiB by default) with fresh mmaps and returns
    freed memory at the top of the heap to the kernel, so a jitted step whose temporaries exceed that
    page-faults all of them in again on every call (the measured cost: experiments/shakespeare_char/README.md).
    Allocations up to 256 MiB now come from the heap and up to 512 MiB of freed memory stays in the process for
    the next call.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, 256 << 20)
    mallopt(m_trim_threshold, 512 << 20)


def use_cpu_devices(config):
    """Make jax's CPU backend `mesh.cpu_devices` devices: unset (None, the default) picks them, see
    auto_cpu_devices; 0 leaves jax's own start (one device); n > 0 asks for n.

    Several CPU devices split each batch over the cores (data parallel, one all-reduce of the gradients per
    step), which on a 2-core machine beats one device whose every small op is split over two threads. The
    thread pool becomes max(2 * devices, cores) unless PJRT_NPROC was set by the user (2 per device keeps
    collectives from starving, see set_process_defaults; more only oversubscribes the cores).
    Must run before jax starts; if jax already runs (a test, a notebook), its CPU devices must already number
    an explicit `mesh.cpu_devices` (an unset one takes them as they are), or the run is not on the CPU. A
    device count set in the environment (XLA_FLAGS' --xla_force_host_platform_device_count or
    JAX_NUM_CPU_DEVICES, e.g. to try a mesh on fake devices) is the user's explicit choice and wins over the
    config's.
    """
    import jax

    from bmjax.errors import ConfigError

    n = config.mesh.cpu_devices
    if n is not None and (not isinstance(n, int) or n < 0):
        raise ConfigError("mesh.cpu_devices", f"must be unset (all cores) or an integer >= 0, got {n!r}")
    if n == 0 or _device_count_set_in_environment():
        return
    if n is None:
        # Several processes (jax.distributed) share the machine's cores: keep one device each, as jax starts.
        if jax.distributed.is_initialized():
            return
        n = auto_cpu_devices(config, os.cpu_count() or 1)
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # jax has started with another setting: fine if it has these devices anyway
        if config.mesh.cpu_devices is None:
            return
        if jax.default_backend() == "cpu" and jax.local_device_count() != n:
            raise ConfigError("mesh.cpu_devices", f"{n}, but jax already runs with {jax.local_device_count()} CPU "
                                                  "devices (set it before the first jax call, as bmjax-train does, "
                                                  "or use 0)") from None
        return
    if not _user_set_thread_pool():
        os.environ[THREAD_POOL_ENV] = str(max(2 * n, os.cpu_count() or 1))


def auto_cpu_devices(config, cores: int) -> int:
    """The most CPU devices, at most one per core, that the config's mesh and batch can use.

    A count the mesh sizes do not resolve for, or whose data x fsdp ways do not divide the (micro-)batch, or
    whose sequence ways do not divide data.seq_len, is skipped: batch 16 on 3 cores runs on 2 devices rather
    than failing validation. 1 always fits the batch; if the mesh asks for more devices than there are cores
    (a tensor=4 mesh on 2 cores), the count is the mesh's and validation reports anything else.
    """
    from bmjax.errors import ConfigError
    from bmjax.parallel import mesh as mesh_lib

    micro_batch = config.data.batch_size // max(config.optim.grad_accum, 1)
    for n in range(max(cores, 1), 0, -1):
        try:
            sizes = dict(zip(mesh_lib.AXES, mesh_lib.mesh_shape(config.mesh, n)))
        except ConfigError:
            continue
        if micro_batch % (sizes["data"] * sizes["fsdp"]) == 0 and config.data.seq_len % sizes["sequence"] == 0:
            return n
    explicit = [int(config.mesh[a]) for a in mesh_lib.AXES if int(config.mesh[a]) != -1]
    return max(1, math.prod(explicit))


def _device_count_set_in_environment() -> bool:
    return FORCED_DEVICE_COUNT_FLAG in os.environ.get("XLA_FLAGS", "") or bool(os.environ.get("JAX_NUM_CPU_DEVICES"))
