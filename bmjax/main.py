"""The training CLI.

    bmjax-train --config configs/gpt/tiny.py[:ARGS] --workdir DIR [--config.KEY=VALUE ...]
    python -m bmjax.main ...            (the same)

Re-running with the same workdir resumes from its newest complete checkpoint, if the config does not change
the maths (--allow_config_change=KEY,... names keys that may; bmjax/train/run_config.py). Bad input (an unknown
key, a bad value, a missing file) prints one line, `error: ...`, and exits with status 2 before anything
compiles.

Exit codes: 0 finished; 1 a complete-looking checkpoint could not be restored (the line says why; no file was
changed); 2 bad config or input; 3 halted at a NaN/inf loss or gradient norm
(train.on_nonfinite=halt; the line names the step and the last good checkpoint); 143 preempted: SIGTERM
arrived, a checkpoint was saved at that step, and the same command resumes from it.
"""
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from bmjax import runtime
from bmjax.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file: path.py[:args].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and config.json.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "HOST:PORT of process 0 (multi-process runs).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Number of processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index in a multi-process run.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_list(
    "allow_config_change", [], "On a resume: config keys (KEY,KEY,...) allowed to differ from the run's saved "
    "config although they change the maths; without it such a difference stops the run.")


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and "Traceback" in lines[1]:
        return f"{lines[0]} {lines[-1]}"  # an error raised inside get_config(): its own message is the last line
    return " ".join(lines)


def _config_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1].split(":", 1)[0]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1].split(":", 1)[0]
    return None


def _unknown_key_message(argv: list[str], error: BaseException) -> str:
    """Name the override that asked for a key the config does not have."""
    # ml_collections says 'Key "NAME" does not exist ... Did you mean "OTHER" instead of "NAME"?' for a locked
    # config (a typo in a config file), or just the quoted name (a typo in an override).
    match = re.search(r'Key "([A-Za-z0-9_]+)"', str(error)) or re.search(r"'([A-Za-z0-9_]+)", str(error))
    name = match.group(1) if match else str(error)
    suggestion = re.search(r'Did you mean "([A-Za-z0-9_]+)"', str(error))
    hint = f" (did you mean {suggestion.group(1)!r}?)" if suggestion else ""
    for arg in argv:
        path = arg.split("=", 1)[0].removeprefix("--config.")
        if arg.startswith("--config.") and name in path.split("."):
            return f"--config.{path}: unknown config key {name!r}{hint}"
    return f"--config: unknown config key {name!r}{hint}"


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with a bad flag or config reported in one line instead of a usage dump."""
    path = _config_path(argv)
    if path is not None and not os.path.isfile(path):
        fail(f"--config: config file {path!r} does not exist")
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(_one_line(e))
    except (KeyError, AttributeError) as e:
        fail(_unknown_key_message(argv, e))
    except (OSError, ImportError, SyntaxError, ValueError, TypeError) as e:
        fail(f"--config: {type(e).__name__}: {_one_line(e)}")


def main(argv):
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax and grain log every save at INFO; --verbosity=0 shows it
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if _CONFIG.value is None:
        fail("--config: required (a config file such as configs/gpt/tiny.py)")
    if not _WORKDIR.value:
        fail("--workdir: required (where checkpoints and metrics go)")
    from bmjax.checkpoint import RestoreError  # imports jax and orbax; no jax call before distributed.initialize
    from bmjax.train import faults

    try:
        from bmjax.parallel import distributed

        distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        from bmjax.train.loop import train_and_evaluate

        train_and_evaluate(_CONFIG.value, _WORKDIR.value, allow_config_change=tuple(_ALLOW_CONFIG_CHANGE.value))
    except ConfigError as e:
        fail(str(e))
    except RestoreError as e:
        # When one of orbax's concurrent reads fails it abandons the others, and Python would print each one's
        # traceback as it finalises them at exit; the first failure is the line below.
        sys.unraisablehook = lambda unraisable: None
        fail(f"checkpoint: {e}", 1)
    except faults.NonFiniteError as e:
        fail(str(e), faults.NONFINITE_EXIT_CODE)
    except faults.Preempted as e:
        print(str(e), file=sys.stderr, flush=True)
        sys.exit(faults.PREEMPTED_EXIT_CODE)


def run_main():
    runtime.set_process_defaults()  # PJRT_NPROC and malloc settings, before jax starts
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run_main()
