"""Configs as bmjax-train gets them: a shipped config file's get_config(arg), dotted keys set on a config, a
sweep's runs, and the tiny built-in-data GPT that the in-process training tests run."""
import importlib.util

from bmjax.defaults import base_config
from helpers.paths import REPO_ROOT


def load_file(path: str):
    """The Python file at `path` (relative to the repository: a config file, a tool's script) as a module."""
    spec = importlib.util.spec_from_file_location(path.rpartition("/")[2].removesuffix(".py"), REPO_ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(name: str, arg: str | None = None):
    """The config of `name`, "PATH[:ARG]" relative to the repository (e.g. "configs/gpt/tiny.py:runlocal"), or
    of PATH with the argument given apart (`load_config("configs/bert/finetune.py", "data=x.csv,labels=2")`)."""
    path, _, inline_arg = name.partition(":")
    return load_file(path).get_config(inline_arg if arg is None else arg)


def set_keys(config, changes: dict):
    """`config` with each dotted key of `changes` ("optim.lr") set to its value, as --config.KEY=VALUE does."""
    for key, value in changes.items():
        *sections, name = key.split(".")
        node = config
        for section in sections:
            node = node[section]
        node[name] = value
    return config


def tiny_gpt_config(steps: int, steps_per_call: int = 1):
    """A one-layer GPT on the built-in data, logging, evaluating and checkpointing after every call."""
    c = base_config()
    c.model.vocab_size = 320
    c.model.d_model = 32
    c.model.num_layers = 1
    c.model.num_heads = 2
    c.model.max_len = 32
    c.data.source = "builtin"
    c.data.seq_len = 32
    c.data.batch_size = 8
    c.optim.warmup_steps = 2
    c.train.steps = steps
    c.train.steps_per_call = steps_per_call
    c.train.log_every = steps_per_call
    c.train.eval_every = steps_per_call
    c.train.ckpt_every = steps_per_call
    c.train.eval_steps = 1
    c.train.sample_tokens = 0
    c.train.progress = False
    return c


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
