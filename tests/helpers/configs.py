"""A shipped config file's get_config(arg), as bmjax-train loads it."""
import importlib.util

from conftest import REPO_ROOT


def load_config(name: str):
    """The config of `name`, "PATH[:ARG]" relative to the repository (e.g. "configs/gpt/tiny.py:runlocal")."""
    path, _, arg = name.partition(":")
    spec = importlib.util.spec_from_file_location("shipped_config", REPO_ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)
