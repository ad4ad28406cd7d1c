"""bmjax's commands run as a user runs them: `python -m bmjax.cli.NAME ...` (or a tool's script) from the
repository root, in a subprocess with this checkout's bmjax."""
import os
import subprocess
import sys

from helpers.paths import REPO_ROOT


def run(*args, devices: int | None = None, env: dict | None = None, timeout: float = 300):
    """`python ARGS...` in the repository root: args start with "-m", "bmjax.cli.NAME" or a script's path.
    `devices`: fake CPU devices for the child (None: the environment's)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def train(*args, timeout: float = 300):
    """`bmjax-train ARGS...` on 8 fake CPU devices."""
    return run("-m", "bmjax.cli.train", *args, devices=8, timeout=timeout)
