"""A shipped config file's get_config(arg), as bmjax-train loads it."""
import importlib.util

from conftest import REPO_ROOT


def load_config(name: str, arg: str | None = None):
    """The config of `name`, "PATH[:ARG]" relative to the repository (e.g. "configs/gpt/tiny.py:runlocal"), or
    of PATH with the argument given apart (`load_config("configs/bert/finetune.py", "data=x.csv,labels=2")`)."""
    path, _, inline_arg = name.partition(":")
    spec = importlib.util.spec_from_file_location("shipped_config", REPO_ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(inline_arg if arg is None else arg)


def sweep_run_configs(path: str):
    """(run, config) for every run of the sweep file at `path`: its get_config() with the run's overrides applied,
    as bmjax-sweep builds each run."""
    from bmjax.scaling import sweep as sweep_lib

    sweep, module = sweep_lib.load_sweep(path), sweep_lib.load_module(path)
    for run in sweep.runs:
        config = module.get_config()
        for key, value in run.args.items():
            sweep_lib.set_key(config, key, value)
        yield run, config
