"""Where the repository is: tests read its configs, data and tools from there and run commands in it."""
import pathlib

TESTS = pathlib.Path(__file__).resolve().parents[1]  # tests/helpers/ -> tests/
REPO_ROOT = TESTS.parent
REPO_DATA = REPO_ROOT / "data"  # small data shipped with the repository (data/README.md)
