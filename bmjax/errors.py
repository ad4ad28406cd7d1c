"""The one error type that bad user input raises: it names the config key (or file) at fault.

The CLI catches it and prints a single line, `error: KEY: MESSAGE`, with exit code 2 and no traceback.
"""


class ConfigError(Exception):
    """A bad config value, file or machine setting, found before anything compiles."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def exit_on_config_error(run):
    """`run()`'s result; a ConfigError it raises becomes the CLI's one line on stderr and exit status 2."""
    import sys

    try:
        return run()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
