"""Config validation: every check that can run before anything compiles, each failing with one ConfigError
that names the key, what was given and what is allowed.

`validate_config(config, workdir)` is the one entry point: it checks the resolved config against itself, the
machine (device count, backend), the filesystem (data and tokenizer files, workdir writable) and the tokenizer
(its ids fit model.vocab_size: `bmjax.data.tokenizers.check_vocab_fits`, the one place of that check), and
raises the first problem. It runs before anything compiles; the CLI prints the error as one line and exits with
status 2. It returns what it built to check them (`Validated`): the config with an unset model.vocab_size
resolved from the tokenizer (`bmjax.data.model_vocab_size`), the mesh, the logical-axis rules, the tokenizer
and the abstract model, for the trainer to use rather than build again.
`train.init_from`'s source is checked by `bmjax.train.init_from.check_init_from`, which the loop runs next:
this module sits below the trainer and imports nothing from `bmjax.train`.
"""
import collections
import dataclasses
import math
import pathlib
import re
import tempfile

import jax
from absl import logging

from bmjax import data as data_lib
from bmjax.errors import ConfigError
from bmjax.models import attention as attention_lib
from bmjax.models import mup
from bmjax.parallel import batches
from bmjax.parallel import mesh as mesh_lib
from bmjax.parallel import rules as rules_lib

CHOICES = {
    "model.name": ("gpt", "bert"),
    "model.heads": ("pretraining", "mlm", "classification", "none"),
    "model.attention": tuple(attention_lib.IMPLEMENTATIONS),
    "model.dtype": ("float32", "bfloat16", "float16"),
    "model.param_dtype": ("float32", "bfloat16"),
    "model.remat": ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable", "save_attention_out"),
    "model.norm": ("layernorm", "rmsnorm"),
    "model.mlp": ("gelu", "swiglu"),
    "model.position": ("learned", "rotary"),
    "model.parametrization": mup.PARAMETRIZATIONS,
    "data.task": ("lm", "mlm", "classification"),
    "optim.schedule": ("cosine", "linear", "constant", "wsd"),
    "optim.cooldown_shape": ("linear", "sqrt", "cosine"),
    "wandb.mode": ("disabled", "offline", "online"),
    "train.on_nonfinite": ("halt", "skip"),
}
# Float keys that must be finite numbers (an inf or NaN here would only show up as a diverged run).
FINITE = ("model.dropout", "model.init_std", "model.norm_eps", "model.rope_theta", "optim.lr", "optim.min_lr",
          "optim.weight_decay", "optim.b1", "optim.b2", "optim.eps", "optim.grad_clip", "data.eval_fraction")


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def _require(condition: bool, key: str, message: str):
    if not condition:
        raise ConfigError(key, message)


def check_choices(config):
    for key, allowed in CHOICES.items():
        value = _get(config, key)
        _require(value in allowed, key, f"got {value!r}; allowed: {', '.join(map(str, allowed))}")


def check_ranges(config):
    m, d, o, t = config.model, config.data, config.optim, config.train
    for key in FINITE:
        value = _get(config, key)
        _require(isinstance(value, (int, float)) and math.isfinite(value), key,
                 f"must be a finite number, got {value!r}")
    _require(m.init_std > 0, "model.init_std", f"must be > 0, got {m.init_std}")
    _require(m.norm_eps > 0, "model.norm_eps", f"must be > 0, got {m.norm_eps}")
    # Unset (None): the tokenizer's, resolved after the tokenizer is built (bmjax.data.model_vocab_size).
    _require(m.vocab_size is None or isinstance(m.vocab_size, int) and m.vocab_size > 0, "model.vocab_size",
             f"must be a positive integer, got {m.vocab_size!r}")
    for key in ("model.d_model", "model.num_layers", "model.num_heads", "model.max_len",
                "data.seq_len", "data.batch_size", "optim.grad_accum", "train.log_every",
                "train.eval_every", "train.ckpt_every", "train.keep_ckpts",
                "train.steps_per_call"):
        value = _get(config, key)
        _require(isinstance(value, int) and value > 0, key, f"must be a positive integer, got {value!r}")
    # 0: one pass over the whole held-out set (bmjax/data/lm.py), which only the LM pipeline makes.
    _require(isinstance(t.eval_steps, int) and (t.eval_steps > 0 or t.eval_steps == 0 and d.task == "lm"),
             "train.eval_steps", f"must be a positive integer (or 0 with data.task=lm), got {t.eval_steps!r}")
    _require(0.0 <= m.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {m.dropout}")
    _require(o.lr >= 0, "optim.lr", f"must be >= 0, got {o.lr}")
    _require(0 <= o.min_lr <= o.lr or o.schedule == "constant", "optim.min_lr",
             f"must be in [0, optim.lr={o.lr}], got {o.min_lr}")
    _require(o.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {o.warmup_steps}")
    _require(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    _require(o.grad_clip >= 0, "optim.grad_clip", f"must be >= 0 (0 turns clipping off), got {o.grad_clip}")
    _require(0 <= o.b1 < 1 and 0 <= o.b2 < 1, "optim.b1" if not 0 <= o.b1 < 1 else "optim.b2",
             f"Adam betas must be in [0, 1), got ({o.b1}, {o.b2})")
    _require(isinstance(o.cooldown_fraction, (int, float)) and 0 < o.cooldown_fraction <= 1, "optim.cooldown_fraction",
             f"must be in (0, 1], got {o.cooldown_fraction!r}")
    if o.decay_steps is not None:
        _require(o.decay_steps > 0, "optim.decay_steps", f"must be positive, got {o.decay_steps}")
    _require(0.0 < d.eval_fraction < 1.0, "data.eval_fraction", f"must be in (0, 1), got {d.eval_fraction}")
    _require(t.sample_tokens >= 0, "train.sample_tokens", f"must be >= 0, got {t.sample_tokens}")
    k = t.steps_per_call
    for key in ("train.log_every", "train.eval_every", "train.ckpt_every"):
        _require(_get(config, key) % k == 0, key, f"must be a multiple of train.steps_per_call={k}")
    steps = tuple(t.ckpt_steps) if isinstance(t.ckpt_steps, (tuple, list)) else None
    _require(steps is not None and all(isinstance(n, int) and 0 < n and n % k == 0 and (not t.steps or n <= t.steps)
                                       for n in steps), "train.ckpt_steps",
             f"must be a list of steps in [1, train.steps={t.steps}], multiples of train.steps_per_call={k}; "
             f"got {t.ckpt_steps!r}")


def check_steps(config):
    """train.steps, or train.epochs (classification only) with train.steps = 0: one of them says how long."""
    t = config.train
    if not t.epochs:
        _require(isinstance(t.steps, int) and t.steps > 0, "train.steps",
                 f"must be a positive integer, got {t.steps!r}")
        return
    _require(isinstance(t.epochs, int) and t.epochs > 0, "train.epochs",
             f"must be a positive integer, got {t.epochs!r}")
    _require(config.data.task == "classification", "train.epochs",
             f"counts passes over a classification data set; task {config.data.task!r} trains for train.steps")
    _require(t.steps == 0, "train.steps", f"must be 0 when train.epochs is set (the epochs decide), got {t.steps}")


def check_task(config):
    """The model fits the task: GPT for lm; BERT with the task's heads for mlm and classification."""
    m, task = config.model, config.data.task
    if task == "lm":
        _require(m.name == "gpt", "model.name", f"task 'lm' trains a GPT, got {m.name!r}")
        return
    _require(m.name == "bert", "model.name", f"task {task!r} trains a BERT, got {m.name!r}")
    heads = {"mlm": "pretraining", "classification": "classification"}[task]
    _require(m.heads == heads, "model.heads", f"task {task!r} needs heads={heads!r}, got {m.heads!r}")
    if task == "classification":
        from bmjax.data.classification import label_names

        names = label_names(config)
        _require(m.num_labels == len(names), "model.num_labels",
                 f"{m.num_labels} does not match the {len(names)} labels of data.labels ({', '.join(names)})")


def check_shapes(config):
    m, d = config.model, config.data
    _require(m.d_model % m.num_heads == 0, "model.num_heads",
             f"{m.num_heads} heads do not divide model.d_model={m.d_model}")
    if m.num_kv_heads is not None:
        _require(m.num_kv_heads > 0 and m.num_heads % m.num_kv_heads == 0, "model.num_kv_heads",
                 f"{m.num_kv_heads} kv heads do not divide model.num_heads={m.num_heads}")
    if m.d_ff is not None:
        _require(m.d_ff > 0, "model.d_ff", f"must be positive, got {m.d_ff}")
    if m.position == "rotary":
        _require((m.d_model // m.num_heads) % 2 == 0, "model.position",
                 f"rotary needs an even head dimension, got {m.d_model // m.num_heads}")
    _require(d.seq_len <= m.max_len, "data.seq_len",
             f"sequence length {d.seq_len} is longer than model.max_len={m.max_len}")
    _require(m.attention != "splash" or m.dropout == 0, "model.dropout",
             f"splash attention has no attention dropout, got {m.dropout}")
    check_mup(m)


def check_mup(m):
    """model.mup_base_width: a positive width that num_heads divides, set iff model.parametrization=mup;
    model.mup_output_mult: a positive number, left at 1.0 unless model.parametrization=mup."""
    base = m.mup_base_width
    if m.parametrization != "mup":
        _require(base is None, "model.mup_base_width", f"is only read with model.parametrization=mup, got {base}")
        _require(m.mup_output_mult == 1.0, "model.mup_output_mult",
                 f"is only read with model.parametrization=mup, got {m.mup_output_mult}")
        return
    alpha = m.mup_output_mult
    _require(isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0, "model.mup_output_mult",
             f"must be a positive number, got {alpha!r}")
    _require(isinstance(base, int) and base > 0, "model.mup_base_width",
             f"must be a positive integer with model.parametrization=mup, got {base!r}")
    _require(base % m.num_heads == 0, "model.mup_base_width",
             f"{base} is not divisible by model.num_heads={m.num_heads} (the base head size)")


def check_mesh(config, devices=None, *, loads_data=True):
    """The mesh fits `devices` (default: jax.devices(); bmjax-compile-check passes a target's) and the batch;
    returns (the mesh, the logical-axis rules). `loads_data=False` (a compile-only check, which feeds no
    pipeline) leaves out the check that each process's rows of a batch are one consecutive range."""
    devices = jax.devices() if devices is None else devices
    shape = mesh_lib.mesh_shape(config.mesh, len(devices))
    mesh_lib.check_dcn(config.mesh, devices)
    rules = rules_lib.rules_from_config(config.mesh)
    sizes = dict(zip(mesh_lib.AXES, shape))
    batch_ways = sizes["data"] * sizes["fsdp"]
    b, accum = config.data.batch_size, config.optim.grad_accum
    _require(b % accum == 0, "optim.grad_accum", f"{accum} micro-batches do not divide data.batch_size={b}")
    _require((b // accum) % batch_ways == 0, "data.batch_size",
             f"{b} (per micro-batch {b // accum}) is not divisible by mesh data x fsdp = {batch_ways}")
    _require(config.data.seq_len % sizes["sequence"] == 0, "data.seq_len",
             f"{config.data.seq_len} is not divisible by mesh.sequence={sizes['sequence']}")
    _require(config.model.attention != "splash" or sizes["sequence"] == 1, "model.attention",
             f"splash keeps the sequence whole on each device; mesh.sequence={sizes['sequence']} needs ring")
    # Every process must hold one consecutive range of rows of each batch, for its pipeline to load.
    mesh = mesh_lib.make_mesh(config.mesh, devices)
    if loads_data:
        batches.row_shard(rules_lib.batch_sharding(mesh, rules=rules))
    return mesh, rules


def abstract_model(config):
    """The config's model as shapes and dtypes (nothing allocated), built as the trainer initialises it."""
    from flax import nnx

    from bmjax.models import build_model

    return nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(params=jax.random.key(0))))


def check_parameter_layout(config, mesh=None, rules=None, abstract=None):
    """Every parameter dimension the rules shard divides over its mesh axes; otherwise an error naming the
    parameter, or with mesh.allow_replication one warning per parameter group (the dimension stays whole).
    Returns the abstract model it checked (`abstract`, or built here)."""
    from flax import nnx

    mesh = mesh_lib.make_mesh(config.mesh) if mesh is None else mesh
    rules = rules_lib.rules_from_config(config.mesh) if rules is None else rules
    abstract = abstract_model(config) if abstract is None else abstract
    problems = rules_lib.indivisible(nnx.state(abstract), mesh, rules)
    groups = collections.defaultdict(list)  # blocks.*.attn.query.kernel: the same parameter of every layer
    for name, axis, size, axes, ways in problems:
        groups[(re.sub(r"\.\d+\.", ".*.", name), axis, size, axes, ways)].append(name)
    for (group, axis, size, axes, ways), names in groups.items():
        where = " x ".join(f"{a}={mesh.shape[a]}" for a in axes)
        if not config.mesh.allow_replication:
            raise ConfigError(f"mesh.{axes[0]}" if len(axes) == 1 else f"mesh.rules.{axis}",
                              f"parameter {names[0]}: its {axis!r} dimension of {size} does not divide over mesh "
                              f"{where}; choose sizes that divide it, or set mesh.allow_replication=True to keep it "
                              f"whole on every device")
        logging.warning("mesh.allow_replication: %s (%d parameters): the %r dimension of %d does not divide over "
                        "mesh %s, so it is replicated on every device", group, len(names), axis, size, where)
    return abstract


def check_machine(config):
    """What the config asks of the hardware: cuDNN attention runs only on NVIDIA GPUs."""
    backend = jax.default_backend()
    elsewhere = ", ".join(a for a in CHOICES["model.attention"] if a != "cudnn")
    _require(config.model.attention != "cudnn" or backend == "gpu", "model.attention",
             f"'cudnn' needs an NVIDIA GPU, this machine runs on {backend}; allowed here: {elsewhere}")


def check_tokenizer(config, workdir: pathlib.Path):
    """The run's tokenizer, checked: its ids fit model.vocab_size (where set), the sampling prompt is encodable.

    A char vocabulary comes from the data (or from WORKDIR/vocab.json, saved by an earlier run of this
    workdir), so this reads the corpus; the reads are cached for the pipeline that follows. Nothing is written.
    """
    from bmjax.data import tokenizers

    saved_vocab = workdir / tokenizers.VOCAB_FILE
    if config.data.tokenizer == "char" and saved_vocab.is_file():
        tokenizer = tokenizers.CharTokenizer.load(str(saved_vocab))
        tokenizers.check_vocab_fits(tokenizer, config)
    else:
        tokenizer = data_lib.build_tokenizer(config, None)  # checks that its ids fit the model
    if config.model.name == "gpt" and config.train.sample_tokens > 0:
        try:
            tokenizer.encode(config.train.sample_prompt)
        except ConfigError as e:
            raise ConfigError("train.sample_prompt", e.message) from None
    return tokenizer


def check_workdir(workdir: pathlib.Path):
    existing = workdir
    while not existing.exists():
        existing = existing.parent
    _require(existing.is_dir(), "workdir", f"{existing} is not a directory")
    # Write a file rather than trust os.access, which says yes to root even where writes fail (/sys, read-only
    # mounts).
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ConfigError("workdir", f"{existing} is not writable ({e.strerror})") from None


@dataclasses.dataclass(frozen=True)
class Validated:
    """What validation built to check a config, for the trainer to use rather than build again."""
    config: object  # the config checked, model.vocab_size resolved (bmjax.data.model_vocab_size)
    mesh: jax.sharding.Mesh
    rules: tuple  # the logical-axis rules (bmjax/parallel/rules.py)
    abstract_model: object  # the model as shapes (an nnx.Module of jax.ShapeDtypeStruct), as the trainer builds it
    tokenizer: object = None  # the run's tokenizer; None for a compile-only check, which reads no files


def validate_compile_target(config, devices) -> Validated:
    """The checks a compile-only run needs (bmjax-compile-check, `bmjax-scaling plan --compile`): choices,
    shapes, the mesh over `devices` (a TPU topology's, say) and the parameters' layout on it; no files or data
    (but the tokenizer's, where model.vocab_size is unset and comes from it)."""
    check_choices(config)
    check_shapes(config)
    config = data_lib.with_model_vocab_size(config)
    mesh, rules = check_mesh(config, devices, loads_data=False)  # feeds no pipeline
    abstract = check_parameter_layout(config, mesh, rules)
    return Validated(config=config, mesh=mesh, rules=rules, abstract_model=abstract)


def validate_config(config, workdir: pathlib.Path) -> Validated:
    """Everything checkable before data is tokenized or anything compiles; raises the first ConfigError."""
    check_choices(config)
    check_ranges(config)
    check_steps(config)
    check_task(config)
    check_shapes(config)
    mesh, rules = check_mesh(config)
    data_lib.check_data_config(config)
    check_machine(config)
    check_workdir(pathlib.Path(workdir))
    tokenizer = check_tokenizer(config, pathlib.Path(workdir))
    config = data_lib.with_model_vocab_size(config, tokenizer)
    abstract = check_parameter_layout(config, mesh, rules)
    return Validated(config=config, mesh=mesh, rules=rules, abstract_model=abstract, tokenizer=tokenizer)
