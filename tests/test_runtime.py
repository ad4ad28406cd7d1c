"""CPU runtime set-up: only entry points change the process; mesh.cpu_devices, the kept malloc memory, and the
2-D token matmul of linear layers."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bmjax import runtime
from bmjax.defaults import base_config
from bmjax.errors import ConfigError
from bmjax.models import layers
from helpers.paths import REPO_ROOT


def _python(code: str, *args, **env) -> dict:
    """Run `code` in a fresh interpreter (jax not started) without the tests' fake devices; its last line is JSON."""
    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PJRT_NPROC")}
    environ.update(env)
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO_ROOT, env=environ, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


IMPORT_ONLY = """
import json, os
before = dict(os.environ)
import bmjax, bmjax.models, bmjax.models.generate, bmjax.checkpoint, bmjax.train.loop, bmjax.runtime
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
print(json.dumps({"changed": changed}))
"""

SET_DEFAULTS = """
import json, os
from bmjax import runtime
runtime.set_process_defaults()
print(json.dumps({"pool": os.environ["PJRT_NPROC"]}))
"""


def test_importing_bmjax_leaves_the_environment_alone():
    assert _python(IMPORT_ONLY) == {"changed": []}
    # The entry points' call fills in the thread pool, and keeps a pool size the user chose.
    assert _python(SET_DEFAULTS) == {"pool": "64"}
    assert _python(SET_DEFAULTS, PJRT_NPROC="6") == {"pool": "6"}


CPU_DEVICES = """
import json, os
from bmjax import runtime
runtime.set_process_defaults()  # as an entry point does
import jax
from bmjax.defaults import base_config
c = base_config(); c.mesh.cpu_devices = 2
runtime.use_cpu_devices(c)
print(json.dumps({"devices": jax.local_device_count(), "pool": os.environ["PJRT_NPROC"]}))
"""


def test_cpu_devices_split_the_cpu_and_size_the_pool():
    out = _python(CPU_DEVICES)
    assert out == {"devices": 2, "pool": str(max(4, os.cpu_count()))}
    # A pool size the user chose is kept.
    assert _python(CPU_DEVICES, PJRT_NPROC="16") == {"devices": 2, "pool": "16"}
    # A device count forced in XLA_FLAGS is the user's explicit choice: it wins over the config.
    assert _python(CPU_DEVICES, XLA_FLAGS="--xla_force_host_platform_device_count=4")["devices"] == 4
    assert _python(CPU_DEVICES, JAX_NUM_CPU_DEVICES="3")["devices"] == 3


def test_cpu_devices_after_jax_started_must_match(monkeypatch):
    assert jax.local_device_count() == 8  # jax has started, with the tests' 8 devices
    monkeypatch.setenv("XLA_FLAGS", "")  # as if those 8 had not been forced by the environment
    monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
    config = base_config()
    config.mesh.cpu_devices = jax.local_device_count()  # the tests' 8 fake devices: nothing to change
    runtime.use_cpu_devices(config)
    config.mesh.cpu_devices = 2
    with pytest.raises(ConfigError, match="mesh.cpu_devices.*already runs with 8 CPU devices"):
        runtime.use_cpu_devices(config)
    config.mesh.cpu_devices = -1
    with pytest.raises(ConfigError, match="mesh.cpu_devices"):
        runtime.use_cpu_devices(config)


PAGE_FAULTS = """
import json, resource, sys
from bmjax import runtime
if sys.argv[-1] == "defaults":
    runtime.set_process_defaults()
import jax, jax.numpy as jnp
def f(x, w):
    y = jnp.sin(x)  # 48 MiB (above glibc's default mmap threshold), read by two products: kept in memory
    return jnp.sum(y @ w) + jnp.sum(y.T @ w[:3072])
f = jax.jit(f)
x, w = jnp.ones((3072, 4096)), jnp.ones((4096, 8))
for _ in range(3):
    f(x, w).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    f(x, w).block_until_ready()
print(json.dumps({"faults_per_call": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10}))
"""


def test_large_temporaries_are_not_faulted_in_again_every_call():
    # Without bmjax's malloc settings every call maps its 48 MiB afresh: ~12k page faults per call. With them,
    # tens on a quiet machine; once ~2.5k in a full suite run (the kernel reclaiming pages under load).
    out = _python(PAGE_FAULTS, "defaults", PJRT_NPROC="1")
    assert out["faults_per_call"] < 4000, out
    # A plain import leaves glibc's defaults in place.
    assert _python(PAGE_FAULTS, "import_only", PJRT_NPROC="1")["faults_per_call"] > 8000


def test_token_matmul_equals_dot_general_with_gradients():
    x = jax.random.normal(jax.random.key(0), (3, 5, 4, 6))  # [batch, length, heads, head_dim]
    w = jax.random.normal(jax.random.key(1), (4, 6, 7))  # contracts (heads, head_dim)
    dims = (((2, 3), (0, 1)), ((), ()))

    def loss(fn, x, w):
        return jnp.sum(jnp.tanh(fn(x, w, dims)) ** 2)

    plain = jax.value_and_grad(lambda x, w: loss(jax.lax.dot_general, x, w), argnums=(0, 1))(x, w)
    flat = jax.jit(jax.value_and_grad(lambda x, w: loss(layers.token_matmul, x, w), argnums=(0, 1)))(x, w)
    assert layers.token_matmul(x, w, dims).shape == (3, 5, 7)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(flat)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
