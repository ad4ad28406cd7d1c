"""What many test files need, in one place: shipped config files (configs.py), a run's metrics rows (metrics.py)
and bmjax's commands in subprocesses (commands.py). The fake devices are set once, in tests/conftest.py."""
