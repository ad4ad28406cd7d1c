"""The one error type that bad user input raises: it names the config key (or file, or flag) at fault.

Every command (bmjax/cli/) catches it and prints a single line, `error: KEY: MESSAGE`, with exit code 2 and no
traceback.
"""


class ConfigError(Exception):
    """A bad config value, file or machine setting, found before anything compiles."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message
