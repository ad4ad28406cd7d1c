"""bmjax's commands run as a user runs them: `python -m bmjax.cli.NAME ...` (or a tool's script) from the
repository root, in a subprocess with this checkout's bmjax."""
import os
import subprocess
import sys

from helpers.compile import FAST_COMPILE_FLAGS
from helpers.paths import REPO_ROOT


def child_env(devices: int | None = None, fast_compile: bool = False, env: dict | None = None) -> dict:
    """The environment of a command in a subprocess: `env` (default: this one) with this checkout first on
    PYTHONPATH. `devices`: fake CPU devices for the child (None: the environment's, i.e. conftest's 8; 0: none
    forced, so one, or what the command itself sets). `fast_compile`: XLA's quickest CPU compile
    (helpers/compile.py) on top."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    flags = env.get("XLA_FLAGS", "").split()
    if devices is not None:
        flags = [f for f in flags if not f.startswith("--xla_force_host_platform_device_count=")]
        flags += [f"--xla_force_host_platform_device_count={devices}"] if devices else []
    if fast_compile:
        flags += FAST_COMPILE_FLAGS
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def run(*args, devices: int | None = None, fast_compile: bool = False, env: dict | None = None, cwd=REPO_ROOT,
        timeout: float = 300):
    """`python ARGS...` in `cwd` (the repository root): args start with "-m", "bmjax.cli.NAME" or a script's path.
    `devices`, `fast_compile`, `env`: as child_env's."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=child_env(devices, fast_compile, env),
                          capture_output=True, text=True, timeout=timeout)


def train(*args, timeout: float = 300):
    """`bmjax-train ARGS...` on 8 fake CPU devices."""
    return run("-m", "bmjax.cli.train", *args, devices=8, timeout=timeout)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one line a command prints for bad input (docs/design.md: one line naming the culprit, exit 2);
    asserts that it is one line, starts with "error: " and that the exit status is 2."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), \
        (result.returncode, result.stderr[-2000:])
    return lines[0]
