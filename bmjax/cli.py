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

import os
import re
import sys
from typing import Callable

from absl import flags

from bmjax import runtime
from bmjax.errors import ConfigError

USAGE_ERROR = 2


def fail(message: str, code: int = USAGE_ERROR) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and "Traceback" in lines[1]:
        return f"{lines[0]} {lines[-1]}"  # an error raised inside get_config(): its own message is the last line
    return " ".join(lines)


def parse(flag_values: flags.FlagValues, argv: list[str], usage: str = "", positional: bool = False) -> list[str]:
    """Parse `argv` (without the program name) into `flag_values`, every flag from its default again; returns
    the positional arguments (e.g. a subcommand) where `positional`, else any is an error."""
    if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv):
        print(usage.strip() + "\n\nflags:\n" + flag_values.get_help(), flush=True)
        sys.exit(0)
    flag_values.unparse_flags()  # a second call in one process (tests) must not keep the first call's values
    try:
        rest = flag_values([sys.argv[0] if sys.argv else "bmjax", *argv])
    except flags.Error as e:
        fail(_one_line(e))
    if positional:
        return rest[1:]
    if len(rest) > 1:
        fail(f"unexpected arguments: {' '.join(rest[1:])}")
    return []


def run(flag_values: flags.FlagValues, main: Callable[[], object], argv: list[str] | None = None,
        usage: str = ""):
    """The command: process defaults, flags from `argv` (default sys.argv[1:]), then main(); see the module doc."""
    runtime.set_process_defaults()
    parse(flag_values, sys.argv[1:] if argv is None else list(argv), usage)
    try:
        return main()
    except ConfigError as e:
        fail(str(e))


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


def parse_config_flags(argv: list[str]) -> list[str]:
    """absl's parsing of the global flags of a command with an ml_collections `--config` (bmjax-train and the
    tools that take a training config: `app.run(main, flags_parser=cli.parse_config_flags)`), with a missing
    file, a bad flag or an unknown config key reported in one line instead of a traceback or a usage dump."""
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
