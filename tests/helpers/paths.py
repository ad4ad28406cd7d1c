"""Where the repository is: tests read its configs, data and tools from there and run commands in it."""
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]  # tests/helpers/ -> tests/ -> the repository
REPO_DATA = REPO_ROOT / "data"  # small data shipped with the repository (data/README.md)
