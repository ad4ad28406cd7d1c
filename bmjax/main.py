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
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from bmjax import cli, runtime
from bmjax.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file: path.py[:args].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and config.json.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "HOST:PORT of process 0 (multi-process runs).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Number of processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index in a multi-process run.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_list(
    "allow_config_change", [], "On a resume: config keys (KEY,KEY,...) allowed to differ from the run's saved "
    "config although they change the maths; without it such a difference stops the run.")


def main(argv):
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax and grain log every save at INFO; --verbosity=0 shows it
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if _CONFIG.value is None:
        cli.fail("--config: required (a config file such as configs/gpt/tiny.py)")
    if not _WORKDIR.value:
        cli.fail("--workdir: required (where checkpoints and metrics go)")
    from bmjax.checkpoint import RestoreError  # imports jax and orbax; no jax call before distributed.initialize
    from bmjax.train import faults

    try:
        from bmjax.parallel import distributed

        distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        from bmjax.train.loop import train_and_evaluate

        train_and_evaluate(_CONFIG.value, _WORKDIR.value, allow_config_change=tuple(_ALLOW_CONFIG_CHANGE.value))
    except ConfigError as e:
        cli.fail(str(e))
    except RestoreError as e:
        # When one of orbax's concurrent reads fails it abandons the others, and Python would print each one's
        # traceback as it finalises them at exit; the first failure is the line below.
        sys.unraisablehook = lambda unraisable: None
        cli.fail(f"checkpoint: {e}", 1)
    except faults.NonFiniteError as e:
        cli.fail(str(e), faults.NONFINITE_EXIT_CODE)
    except faults.Preempted as e:
        print(str(e), file=sys.stderr, flush=True)
        sys.exit(faults.PREEMPTED_EXIT_CODE)


def run_main():
    runtime.set_process_defaults()  # PJRT_NPROC and malloc settings, before jax starts
    app.run(main, flags_parser=cli.parse_config_flags)


if __name__ == "__main__":
    run_main()
