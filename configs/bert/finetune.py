"""Fine-tune a BERT for sequence classification: `configs/bert/finetune.py:data=PATH,labels=N[,...]`.

    bmjax-train --config configs/bert/finetune.py:data=train.csv,labels=2,init=runs/bert-base \
        --workdir runs/finetune

Arguments (comma-separated):
  data=PATH     a .csv/.tsv (source csv) or .jsonl/.json (source jsonl) file with columns text and label
                (see data.text_column, data.text_pair_column, data.label_column), or a TFDS name such as
                glue/sst2 (source tfds, prepared locally; its text column is `sentence`, as in GLUE).
  labels=N      the number of classes; file labels are then "0" .. "N-1". For named labels set
                --config.data.labels=negative,positive (and model.num_labels to their number).
  init=DIR      train.init_from: a bmjax pretraining workdir or a Hugging Face BERT directory (config.json,
                model.safetensors and its tokenizer.json or vocab.txt, e.g. bert-base-uncased or
                all-MiniLM-L6-v2). The encoder's shape (width, depth, heads, d_ff, vocabulary, positions,
                token types, norm eps) comes from DIR's config.json and the tokenizer from DIR (a workdir's
                data.tokenizer), so DIR alone is enough; --config.model.* / --config.data.tokenizer still
                override (a shape that does not match DIR's parameters is one line before anything compiles).
  model=NAME    the encoder's shape and tokenizer from configs/bert/NAME.py instead (tiny: the demo's; base:
                bert-base-uncased's shape with the byte tokenizer); the default without init=DIR is base.
  tokenizer=FILE  the tokenizer, where DIR names none (a Hugging Face directory without tokenizer files).
  runlocal      a few steps, for a CPU smoke run.

The recipe is the seed guide's (Hugging Face Trainer defaults plus its settings): 3 epochs (train.epochs;
the steps follow from the data set's size), batch 16, AdamW lr 2e-5 (betas 0.9/0.999, eps 1e-8) with 500
warmup steps then linear decay to 0, weight decay 0.01, gradient clipping at 1.0, dropout 0.1,
sequences of 128 tokens. Eval reports accuracy and F1 on the whole eval split.
"""
import importlib.util
import pathlib

from bmjax.defaults import parse_arg
from bmjax.errors import ConfigError
from bmjax.train import init_from

HERE = pathlib.Path(__file__).resolve().parent


def model_config(name: str):
    """configs/bert/NAME.py's config (its model keys are the encoder's shape)."""
    path = HERE / f"{name}.py"
    if name == "finetune" or not path.is_file():
        raise ValueError(f"model={name!r}: no configs/bert/{name}.py to take the model shape from")
    spec = importlib.util.spec_from_file_location(f"bmjax_config_bert_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("")


def from_source(init: str):
    """bert-base's config with the shape and tokenizer of `init` (a workdir or a Hugging Face directory)."""
    c = model_config("base")
    for key, value in init_from.model_keys_of(init).items():
        if key in c.model:
            c.model[key] = value
    c.data.tokenizer = init_from.tokenizer_of(init)
    return c


def source_of(path: str) -> str:
    suffix = pathlib.Path(path).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    return "tfds"


def get_config(arg: str = ""):
    args = parse_arg(arg, data="", labels="", model="", init="", tokenizer="", runlocal=False)
    for required in ("data", "labels"):
        if not args[required] or args[required] is True:
            raise ValueError(f"finetune.py needs {required}=...: configs/bert/finetune.py:data=PATH,labels=N")
    if not str(args["labels"]).isdigit():
        raise ValueError(f"labels={args['labels']!r}: the number of classes (named labels: --config.data.labels)")
    if args["model"] or not args["init"]:
        c = model_config(args["model"] or "base")  # the encoder's shape and tokenizer; the rest is set below
    else:
        c = from_source(args["init"])
    if args["tokenizer"]:
        c.data.tokenizer = args["tokenizer"]
    elif c.data.tokenizer is None:
        raise ConfigError("data.tokenizer", f"{args['init']} names no tokenizer (no "
                                            f"{' or '.join(init_from.TOKENIZER_FILES)}): add tokenizer=FILE")
    c.model.heads = "classification"
    c.model.num_labels = int(args["labels"])
    c.model.dropout = 0.1
    c.data.task = "classification"
    c.data.path = args["data"]
    c.data.source = source_of(args["data"])
    if c.data.source == "tfds":
        c.data.text_column = "sentence"
    c.data.labels = str(args["labels"])
    c.data.seq_len = 128
    c.data.batch_size = 16
    c.optim.lr = 2e-5
    c.optim.min_lr = 0.0
    c.optim.schedule = "linear"
    c.optim.warmup_steps = 500
    c.optim.weight_decay = 0.01
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.grad_clip = 1.0
    c.train.epochs = 3
    c.train.steps = 0  # from the epochs
    c.train.steps_per_call = 10  # ten updates per jitted call (lax.scan): fewer host round trips on small models
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.eval_steps = 1_000_000  # at most this many eval batches: the whole eval split
    c.train.ckpt_every = 1000
    c.train.init_from = args["init"]
    if args["runlocal"]:
        c.data.seq_len = min(c.data.seq_len, c.model.max_len)
        c.optim.warmup_steps = 2
        c.train.epochs = 0
        c.train.steps = 10
        c.train.steps_per_call = 5
        c.train.log_every = 5
        c.train.eval_every = 10
        c.train.ckpt_every = 10
    return c
