"""bmjax-train: train a GPT or BERT from a config file.

    bmjax-train --config configs/gpt/tiny.py[:ARGS] --workdir DIR [--config.KEY=VALUE ...]
    bmjax-train --config configs/gpt/shakespeare_char.py --workdir runs/shakespeare \
        --config.data.path=data/tinyshakespeare.txt --config.train.steps=200
    python -m bmjax.cli.train ...            (the same)

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

from absl import flags, logging
from ml_collections import config_flags

from bmjax.cli import common
from bmjax.errors import ConfigError


def define_flags(argv: list[str]) -> flags.FlagValues:
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Config file: path.py[:args].", flag_values=fv,
                                    lock_config=True, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and config.json.", flag_values=fv)
    flags.DEFINE_string("coordinator_address", "", "HOST:PORT of process 0 (multi-process runs).", flag_values=fv)
    flags.DEFINE_integer("num_processes", 0, "Number of processes in a multi-process run.", flag_values=fv)
    flags.DEFINE_integer("process_id", -1, "This process's index in a multi-process run.", flag_values=fv)
    flags.DEFINE_list("allow_config_change", [], "On a resume: config keys (KEY,KEY,...) allowed to differ from "
                      "the run's saved config although they change the maths; without it such a difference stops "
                      "the run.", flag_values=fv)
    flags.DEFINE_integer("verbosity", -1, "absl's logging level: -1 warnings, 0 info (orbax and grain log every "
                         "save at info), 1 debug.", flag_values=fv)
    return fv


def train(fv: flags.FlagValues) -> int:
    logging.use_absl_handler()  # as absl's app.run did: library log lines keep absl's format
    flags.FLAGS.mark_as_parsed()  # absl's logging and grain's workers read absl's own flags
    logging.set_verbosity(fv.verbosity)
    if fv.config is None:
        raise ConfigError("--config", "required (a config file such as configs/gpt/tiny.py)")
    if not fv.workdir:
        raise ConfigError("--workdir", "required (where checkpoints and metrics go)")
    from bmjax.checkpoint import RestoreError  # imports jax and orbax; no jax call before distributed.initialize
    from bmjax.train import faults

    try:
        from bmjax.parallel import distributed

        distributed.initialize(fv.coordinator_address, fv.num_processes, fv.process_id)
        from bmjax.train.loop import train_and_evaluate

        train_and_evaluate(fv.config, fv.workdir, allow_config_change=tuple(fv.allow_config_change))
    except RestoreError as e:
        # When one of orbax's concurrent reads fails it abandons the others, and Python would print each one's
        # traceback as it finalises them at exit; the first failure is the line below.
        sys.unraisablehook = lambda unraisable: None
        return common.error(f"checkpoint: {e}", common.FAILED)
    except faults.NonFiniteError as e:
        return common.error(str(e), common.NONFINITE)
    except faults.Preempted as e:
        print(str(e), file=sys.stderr, flush=True)
        return common.PREEMPTED
    return common.OK


def main(argv: list[str] | None = None) -> int:
    return common.run(define_flags, train, argv, usage=__doc__)


if __name__ == "__main__":
    sys.exit(main())
