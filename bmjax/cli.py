"""What every bmjax command does the same way: absl flags, the process set-up, one-line errors.

    FLAGS = flags.FlagValues()  # the command's own flags, so two commands can be imported into one process
    flags.DEFINE_string("workdir", None, "...", flag_values=FLAGS)

    def run_main(argv=None):   # the entry point in pyproject.toml; argv without the program name (tests)
        cli.run(FLAGS, main, argv, usage=__doc__)

`run` sets the process defaults (bmjax.runtime) before anything asks jax for a device, parses the flags,
and runs `main()`. A bad flag, a stray argument or a ConfigError prints one line, `error: ...`, and exits
with status 2; --help prints the usage and the flags.
"""
from __future__ import annotations

import sys
from typing import Callable

from absl import flags

from bmjax import runtime
from bmjax.errors import ConfigError

USAGE_ERROR = 2


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(USAGE_ERROR)


def _one_line(error: BaseException) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def parse(flag_values: flags.FlagValues, argv: list[str], usage: str = "") -> None:
    """Parse `argv` (without the program name) into `flag_values`, every flag from its default again."""
    if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv):
        print(usage.strip() + "\n\nflags:\n" + flag_values.get_help(), flush=True)
        sys.exit(0)
    flag_values.unparse_flags()  # a second call in one process (tests) must not keep the first call's values
    try:
        rest = flag_values([sys.argv[0] if sys.argv else "bmjax", *argv])
    except flags.Error as e:
        fail(_one_line(e))
    if len(rest) > 1:
        fail(f"unexpected arguments: {' '.join(rest[1:])}")


def run(flag_values: flags.FlagValues, main: Callable[[], object], argv: list[str] | None = None,
        usage: str = ""):
    """The command: process defaults, flags from `argv` (default sys.argv[1:]), then main(); see the module doc."""
    runtime.set_process_defaults()
    parse(flag_values, sys.argv[1:] if argv is None else list(argv), usage)
    try:
        return main()
    except ConfigError as e:
        fail(str(e))
