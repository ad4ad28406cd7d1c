"""What every bmjax command does the same way: its flags, --help, one-line errors and exit codes.

    def define_flags(argv) -> flags.FlagValues:   # a fresh set per call: main() may run twice in one process
        fv = flags.FlagValues()
        flags.DEFINE_string("workdir", None, "...", flag_values=fv)
        return fv

    def main(argv=None) -> int:                    # the console script; argv without the program name
        return common.run(define_flags, body, argv, usage=__doc__)

`run` answers --help with the command's usage (its module docstring, with examples) and its own flags, and
--helpfull with absl's flags too, exit 0. Otherwise it sets the process defaults (bmjax.runtime) before anything
asks jax for a device, parses the flags and calls `body(fv)` (or `body(fv, positional)`). A bad flag, a stray
argument or a ConfigError prints one line, `error: KEY: what is wrong`, and returns USAGE (2). Flags are spelled
in snake_case; `aliases` maps older spellings (`--params-col`) onto them.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Callable

from absl import flags

from bmjax import runtime
from bmjax.errors import ConfigError

# Every command's exit codes.
OK = 0
FAILED = 1  # a checkpoint that cannot be restored; compile-check: the plan does not fit; sweep: a run failed
USAGE = 2  # bad config or input, before anything compiles: one line `error: KEY: what is wrong`
NONFINITE = 3  # train.on_nonfinite=halt stopped at a NaN/inf loss or gradient norm
PREEMPTED = 143  # 128 + SIGTERM: a checkpoint was saved at that step and the same command resumes from it

HELP = ("-h", "--help", "-help")
HELPFULL = ("--helpfull", "-helpfull")


class UsageError(Exception):
    """A command line absl cannot parse, or one with stray arguments: its message is the whole line."""


def error(message: str, code: int = USAGE) -> int:
    """Print `error: MESSAGE` as the one line on stderr; returns `code` for main() to return."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def fail(message: str, code: int = USAGE):
    """`error()`, then exit: for code that is not a command's main() (tools)."""
    sys.exit(error(message, code))


def exit_on_config_error(run: Callable[[], object]):
    """`run()`'s result; a ConfigError it raises becomes the one line on stderr and exit status 2 (tools)."""
    try:
        return run()
    except ConfigError as e:
        fail(str(e))


def help_text(fv: flags.FlagValues, usage: str, full: bool = False) -> str:
    # absl heads each module's flags with the module's file name; one command has one module
    own = [line for line in fv.get_help(include_special_flags=False).splitlines() if line.startswith(" ")]
    text = usage.strip() + "\n\nflags:\n" + "\n".join(own)
    if full:
        from absl import logging  # noqa: F401  (defines absl's logging flags, part of the full list)

        text += "\n\nabsl's flags (and those of the libraries loaded so far):\n" + flags.FLAGS.get_help()
    return text


def spell(argv: list[str], aliases: dict[str, str]) -> list[str]:
    """`argv` with each alias (`--params-col=X`, `--params-col X`) in its flag's own spelling."""
    out = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        out.append(aliases.get(name, name) + sep + value if arg.startswith("--") else arg)
    return out


def one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
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


def parse(fv: flags.FlagValues, argv: list[str], positional: bool = False) -> list[str]:
    """Parse `argv` (without the program name) into `fv`; returns the positional arguments where `positional`,
    else any is an error. A command with an ml_collections `--config` has its file loaded here, so a missing
    file, a broken one or an unknown key is one line too."""
    has_config = "config" in fv and fv["config"].__class__.__name__ == "_ConfigFlag"
    if has_config:
        path = _config_path(argv)
        if path is not None and not os.path.isfile(path):
            raise ConfigError("--config", f"config file {path!r} does not exist")
    try:
        rest = fv([sys.argv[0] if sys.argv else "bmjax", *argv])[1:]
        if has_config and fv["config"].value is not None:
            fv["config"].value.to_dict()  # a lazily loaded config raises its loading error here
    except flags.Error as e:
        raise UsageError(one_line(e)) from None
    except (KeyError, AttributeError) as e:
        raise UsageError(_unknown_key_message(argv, e)) from None
    except (OSError, ImportError, SyntaxError, ValueError, TypeError) as e:
        raise ConfigError("--config", f"{type(e).__name__}: {one_line(e)}") from None
    if rest and not positional:
        raise UsageError(f"unexpected arguments: {' '.join(rest)}")
    return rest


def parse_or_exit(fv: flags.FlagValues, argv: list[str], usage: str = "", positional: bool = False) -> list[str]:
    """`parse`, for the tools under tools/ that parse flags themselves: --help prints the usage and exits 0, a bad
    command line is the one line and exit 2."""
    if any(arg in HELP + HELPFULL for arg in argv):
        print(help_text(fv, usage, full=any(arg in HELPFULL for arg in argv)), flush=True)
        sys.exit(OK)
    fv.unparse_flags()  # a second call in one process (tests) must not keep the first call's values
    try:
        return parse(fv, argv, positional)
    except (ConfigError, UsageError) as e:
        fail(str(e))


def parse_config_flags(argv: list[str]) -> list[str]:
    """absl's parsing of the global flags for a tool with an ml_collections `--config` run by
    `app.run(main, flags_parser=common.parse_config_flags)`: a bad command line is the one line and exit 2."""
    try:
        return [argv[0], *parse(flags.FLAGS, argv[1:], positional=True)]
    except (ConfigError, UsageError) as e:
        fail(str(e))


def run(define_flags: Callable[[list[str]], flags.FlagValues], body: Callable[..., int | None],
        argv: list[str] | None = None, usage: str = "", *, positional: bool = False,
        aliases: dict[str, str] | None = None) -> int:
    """The command: see the module doc. `define_flags(argv)` gets the full argv (program name first), which an
    ml_collections config flag needs to find its `--config.KEY=VALUE` overrides."""
    argv = spell(sys.argv[1:] if argv is None else list(argv), aliases or {})
    full_argv = [sys.argv[0] if sys.argv else "bmjax", *argv]
    if any(arg in HELP + HELPFULL for arg in argv):
        print(help_text(define_flags(full_argv), usage, full=any(arg in HELPFULL for arg in argv)), flush=True)
        return OK
    runtime.set_process_defaults()
    try:
        fv = define_flags(full_argv)
        rest = parse(fv, argv, positional)
        code = body(fv, rest) if positional else body(fv)
    except (ConfigError, UsageError) as e:
        return error(str(e))
    return OK if code is None else code
