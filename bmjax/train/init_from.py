"""`train.init_from`: start a new run from the parameters of a finished one, or of a Hugging Face model.

`train.init_from=DIR` where DIR is
- a bmjax workdir (it has `checkpoints/`): the parameters of its newest checkpoint, and nothing else (the
  optimizer state, step count and data position start afresh, as fine-tuning wants);
- a Hugging Face model directory (config.json + safetensors): read by `bmjax.models.from_pretrained`
  with the heads its architecture has (BertForPreTraining: MLM + NSP, BertModel: none, ...).

Parameters are matched by name. Where this model and the source disagree, the rule is:
- the encoder (everything outside the heads) must match exactly: the structural model keys are compared
  before anything compiles (`check_init_from`), and a parameter the source lacks or holds with another shape
  is a ConfigError naming it;
- task heads (`HEADS`: BERT's MLM, NSP and classifier) that the source lacks or holds with another shape
  (a new classification head, a different number of labels) keep their fresh initialisation; source heads
  this model lacks (MLM and NSP when fine-tuning) are left out. Both are reported in one line.
Only used for a fresh run: a workdir that already has checkpoints resumes from them instead.

`model_keys_of(DIR)` and `tokenizer_of(DIR)` let a config start from DIR itself (configs/bert/finetune.py's
`init=DIR`): the encoder's shape from DIR's config.json, the tokenizer DIR was trained with.
"""
import pathlib

import jax
import numpy as np

from bmjax import workdir as workdir_lib
from bmjax.checkpoint import RestoreError, path_name, read_arrays
from bmjax.errors import ConfigError

KEY = "train.init_from"
HEADS = ("mlm", "nsp", "classifier")  # top-level parameter groups that belong to a task, not the encoder
# Model keys that change parameter shapes or meaning: they must agree with the source.
STRUCTURE_KEYS = ("name", "vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "d_ff", "max_len",
                  "type_vocab_size", "norm", "mlp", "position", "use_bias", "tie_embeddings", "parametrization",
                  "mup_base_width", "mup_output_mult")
# Taken from the source when a config starts from it: the structure, and the norm's epsilon it was trained with.
SOURCE_MODEL_KEYS = (*STRUCTURE_KEYS, "norm_eps")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")  # a Hugging Face directory's tokenizer, in order of preference


def _is_workdir(path: pathlib.Path) -> bool:
    return workdir_lib.checkpoint_dir(path).is_dir()


def source_model_keys(path: pathlib.Path) -> dict:
    """The source's model config: from a workdir's config.json, or converted from a Hugging Face config."""
    if _is_workdir(path):
        return workdir_lib.read_config(path, KEY)["model"].to_dict()
    if (path / "config.json").is_file():
        from bmjax.models import config_from_hf

        try:
            return config_from_hf(path)
        except ConfigError as e:
            raise ConfigError(KEY, f"{e.key}: {e.message}") from None
    raise ConfigError(KEY, f"{path} is neither a bmjax workdir (no checkpoints/) nor a Hugging Face model "
                           "directory (no config.json)")


def _existing_dir(init_from: str) -> pathlib.Path:
    path = pathlib.Path(init_from).expanduser()
    if not path.is_dir():
        raise ConfigError(KEY, f"no such directory: {path}")
    return path


def model_keys_of(init_from: str) -> dict:
    """The model keys a run started from `init_from` must have: its shape (SOURCE_MODEL_KEYS it sets)."""
    source = source_model_keys(_existing_dir(init_from))
    return {key: source[key] for key in SOURCE_MODEL_KEYS if source.get(key) is not None}


def tokenizer_of(init_from: str) -> str | None:
    """The tokenizer `init_from` was trained with: a workdir's data.tokenizer, a Hugging Face directory's
    tokenizer.json or vocab.txt; None if it names none."""
    path = _existing_dir(init_from)
    if _is_workdir(path):
        return workdir_lib.read_config(path, KEY).to_dict().get("data", {}).get("tokenizer")
    return next((str(path / name) for name in TOKENIZER_FILES if (path / name).is_file()), None)


def check_init_from(config) -> None:
    """Cheap checks before anything compiles: the directory exists and its model has this config's shape."""
    if not config.train.init_from:
        return
    path = _existing_dir(config.train.init_from)
    source = source_model_keys(path)
    if _is_workdir(path) and _newest_step(path) is None:
        raise ConfigError(KEY, f"workdir {path} has no checkpoint yet")
    for key in STRUCTURE_KEYS:
        ours, theirs = config.model.get(key), source.get(key)
        if ours is not None and theirs is not None and ours != theirs:
            raise ConfigError(KEY, f"{path} holds a model with model.{key}={theirs!r}; this config has {ours!r}")
    if _is_workdir(path):  # embeddings learnt for one tokenizer's ids mean nothing under another's
        theirs = workdir_lib.read_config(path, KEY).to_dict().get("data", {}).get("tokenizer")
        if theirs is not None and theirs != config.data.tokenizer:
            raise ConfigError(KEY, f"{path} was trained with data.tokenizer={theirs!r}; this config has "
                                   f"{config.data.tokenizer!r}")


def _newest_step(workdir: pathlib.Path) -> int | None:
    steps = [int(p.name) for p in workdir_lib.checkpoint_dir(workdir).iterdir() if p.name.isdigit() and p.is_dir()]
    return max(steps) if steps else None


def _name(path) -> str:
    """'blocks/0/attn/query/kernel' for a pytree path (nnx.State, or orbax's nested dicts)."""
    return _strip_value(path_name(path))


def _strip_value(name: str) -> str:
    return name.removesuffix("/value")


def flat_params(tree) -> dict:
    return {_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def workdir_params(workdir: pathlib.Path) -> tuple[dict, str]:
    """{name: np.ndarray} of the newest checkpoint's params (read alone: optimizer state stays on disk)."""
    step_dir = workdir_lib.checkpoint_dir(workdir) / str(_newest_step(workdir))
    try:
        saved = read_arrays(step_dir, "params/")
    except Exception as e:  # noqa: BLE001  a damaged or unreadable checkpoint: one line naming it
        raise RestoreError(f"{KEY}: could not read the parameters of checkpoint {step_dir} "
                           f"({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]})") from None
    return {_strip_value(name.removeprefix("params/")): array for name, array in saved.items()}, f"{step_dir}"


def hf_params(path: pathlib.Path) -> tuple[dict, str]:
    """{name: np.ndarray} of a Hugging Face directory, loaded with its own heads (merge sorts them out)."""
    from flax import nnx

    from bmjax.models import from_pretrained

    model = from_pretrained(path)
    return {k: np.asarray(v) for k, v in flat_params(nnx.state(model, nnx.Param)).items()}, str(path)


def merge(params, source: dict, where: str):
    """`params` with every leaf the source holds in the same shape replaced by the source's value.

    Returns (params, message). Heads missing from or shaped differently in the source keep their values;
    anything else missing or misshaped is a ConfigError.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    new_leaves, fresh = [], []
    for path, leaf in leaves:
        name = _name(path)
        value = source.get(name)
        is_head = name.split("/")[0] in HEADS
        if value is not None and tuple(value.shape) == tuple(leaf.shape):
            value = np.asarray(value, dtype=leaf.dtype)
            new_leaves.append(jax.make_array_from_callback(leaf.shape, leaf.sharding, lambda idx, v=value: v[idx]))
            continue
        if not is_head:
            found = "lacks it" if value is None else f"has shape {tuple(value.shape)}, this model {tuple(leaf.shape)}"
            raise ConfigError(KEY, f"{where}: parameter {name!r}: the source {found}")
        fresh.append(name)
        new_leaves.append(leaf)
    ours = {_name(path) for path, _ in leaves}
    unused = sorted({n.split("/")[0] for n in source if n not in ours})
    message = (f"initialised {len(leaves) - len(fresh)} of {len(leaves)} parameters from {where}"
               f"; fresh: {', '.join(sorted({n.split('/')[0] for n in fresh})) or 'none'}"
               f"; not used: {', '.join(unused) or 'none'}")
    return jax.tree_util.tree_unflatten(treedef, new_leaves), message


def init_params(config, params):
    """`params` (a fresh run's, sharded) overwritten from `train.init_from`; returns (params, message)."""
    path = pathlib.Path(config.train.init_from).expanduser()
    source, where = workdir_params(path) if _is_workdir(path) else hf_params(path)
    return merge(params, source, where)
