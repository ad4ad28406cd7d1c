"""Every config key bmjax knows, with its default. Config files start from `base_config()`.

The dict is locked: a config file or a `--config.KEY=VALUE` override that names a key not listed here is an
error, so a typo never silently does nothing. Values are plain data (numbers, strings, tuples).

`parse_arg` reads a config file's own argument (`configs/gpt/gpt2.py:size=350m,runlocal`), the same way for
every config file (after big_vision's `parse_arg`), and refuses an argument the file does not take.
"""
from ml_collections import config_dict


def parse_arg(arg: str, **takes) -> dict:
    """`"size=350m,runlocal"` -> {"size": "350m", "runlocal": True, ...}: every argument in `takes` (name=default),
    given ones converted to their default's type (a bare name is True). An argument `takes` does not name is a
    ValueError listing the ones it does, so a typo (`runlcal`) never silently runs the full config."""
    out = dict(takes)
    for part in filter(None, (p.strip() for p in arg.split(","))):
        name, eq, value = part.partition("=")
        if name not in takes:
            raise ValueError(f"unknown config argument {name!r}; this config file takes: "
                             f"{', '.join(sorted(takes)) or 'no arguments'}")
        default = takes[name]
        if not eq:
            out[name] = True
        elif isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"config argument {name}={value!r}: expected true or false")
            out[name] = value.lower() in ("true", "1")
        elif isinstance(default, (int, float)):
            try:
                out[name] = type(default)(value)
            except ValueError:
                raise ValueError(f"config argument {name}={value!r}: expected a{'n' if isinstance(default, int) else ''}"
                                 f" {type(default).__name__}") from None
        else:
            out[name] = value
    return out


def base_config() -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()

    c.model = config_dict.ConfigDict()
    c.model.name = "gpt"  # gpt | bert
    # A config may leave it unset (config_dict.placeholder(int), as configs/gpt/tiny.py): then it is the tokenizer's
    # ids rounded up to a multiple of 64, resolved once before validation (bmjax.data.model_vocab_size).
    c.model.vocab_size = 50257
    c.model.d_model = 768
    c.model.num_layers = 12
    c.model.num_heads = 12
    c.model.num_kv_heads = config_dict.placeholder(int)  # unset: num_heads (plain multi-head attention)
    c.model.d_ff = config_dict.placeholder(int)  # unset: 4 * d_model (gelu), 8/3 * d_model (swiglu)
    c.model.max_len = 1024
    c.model.dropout = 0.0
    c.model.attention = "xla"  # xla | cudnn | splash | ring | reference (bmjax/models/attention/)
    c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 | float16
    c.model.param_dtype = "float32"
    c.model.remat = "none"  # none | full | dots_saveable | dots_with_no_batch_dims_saveable | save_attention_out
    c.model.norm = "layernorm"  # layernorm | rmsnorm
    c.model.mlp = "gelu"  # gelu | swiglu
    c.model.position = "learned"  # learned | rotary
    c.model.use_bias = True
    c.model.tie_embeddings = True
    c.model.rope_theta = 10000.0
    c.model.norm_eps = 1e-5
    c.model.init_std = 0.02
    c.model.scan_layers = False  # one lax.scan over stacked layers: compile time flat in depth
    # standard | mup: μP (bmjax/models/mup.py) rescales hidden init and learning rates, the readout and attention
    # logits by width, so optim.lr and model.init_std tuned at d_model = mup_base_width hold at every width.
    c.model.parametrization = "standard"
    c.model.mup_base_width = config_dict.placeholder(int)  # mup: the width where it equals standard (required)
    # mup: the readouts' input is multiplied by mup_output_mult * base/width (the `mup` package's output_mult); a
    # hyperparameter tuned at the base width like optim.lr. 1.0: at the base width the standard model exactly.
    c.model.mup_output_mult = 1.0
    # BERT only:
    c.model.type_vocab_size = 2  # token types (segments A and B)
    c.model.heads = "pretraining"  # pretraining (MLM + NSP) | mlm | classification | none
    c.model.num_labels = 0  # classes of the classification head (heads="classification")

    c.data = config_dict.ConfigDict()
    c.data.source = "builtin"  # builtin | text (tasks lm, mlm); csv | jsonl | tfds (task classification)
    c.data.path = ""
    c.data.eval_path = ""
    c.data.eval_fraction = 0.1
    c.data.tokenizer = "byte"  # byte | char | PATH of a tokenizer.json or WordPiece vocab.txt
    c.data.seq_len = 256
    c.data.batch_size = 32  # global, across all processes
    c.data.task = "lm"  # lm (GPT) | mlm (BERT pretraining: masked LM + next sentence) | classification
    # Classification (bmjax/data/classification.py):
    c.data.text_column = "text"
    c.data.text_pair_column = ""  # empty: single texts; else the second text of a pair
    c.data.label_column = "label"
    c.data.labels = ""  # label names "neg,pos", or their number "2" (names "0", "1")
    c.data.tfds_data_dir = ""  # source tfds: where the dataset is prepared (empty: TFDS's default)
    c.data.train_split = "train"  # source tfds: split names
    c.data.eval_split = "validation"
    # Pretraining data (bmjax/data/packed_lm.py, documents.py, packing.py); task lm also reads data.source
    # arrayrecord (data.path = a glob of token shards from bmjax-prepare-data) and tfds (data.tfds_name).
    c.data.packing = "concat"  # task lm: concat (documents joined by EOS, cut into windows) | segments (packed rows
    # with segment_ids and positions; no token attends to or predicts across a document)
    c.data.tfds_name = ""  # source tfds (task lm): the TFDS dataset, text in data.text_column, data.train_split
    c.data.mixture = ""  # "SPEC=WEIGHT;..." with SPEC arrayrecord:GLOB | tfds:NAME | text:PATH | builtin
    c.data.eval_sets = ""  # "NAME=SPEC;...": held-out domains scored at every eval as eval/NAME/... (data/eval_sets.py)
    c.data.prepare_from = ""  # source arrayrecord: a text file tokenised into WORKDIR/prepared_shards on first use
    c.data.workers = 0  # grain worker processes reading and packing (0: threads in the training process)

    c.optim = config_dict.ConfigDict()
    c.optim.lr = 3e-4
    c.optim.min_lr = 3e-5
    c.optim.schedule = "cosine"  # cosine | linear | constant | wsd (all after linear warmup)
    # wsd (warmup-stable-decay): optim.lr until the last cooldown_fraction (in (0, 1]) of the schedule's steps
    # (optim.decay_steps, unset: train.steps), then down to optim.min_lr shaped linear | sqrt | cosine
    # (sqrt: 1 - sqrt(t), Hägele et al. 2024; formulas in bmjax/train/optim.py's `schedule`).
    c.optim.cooldown_fraction = 0.2
    c.optim.cooldown_shape = "sqrt"
    c.optim.warmup_steps = 100
    c.optim.decay_steps = config_dict.placeholder(int)  # unset: train.steps
    c.optim.weight_decay = 0.1
    # Weight decay on embedding tables too, as nanoGPT (every >= 2-D tensor) and BERT's reference code do;
    # off: minGPT's choice, decay on linear layers' matrices only.
    c.optim.decay_embeddings = False
    c.optim.b1 = 0.9
    c.optim.b2 = 0.95
    c.optim.eps = 1e-8
    c.optim.grad_clip = 1.0  # global-norm clip; 0 turns it off
    c.optim.grad_accum = 1

    c.mesh = config_dict.ConfigDict()
    c.mesh.data = -1  # -1: the devices the other axes leave
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.sequence = 1
    # jax's CPU backend runs as this many devices, so the data axis splits each batch over the cores (set before
    # jax starts; bmjax/runtime.py). Unset: one per core, fewer if the batch or mesh needs (runtime.auto_cpu_devices);
    # 0: as jax starts it (one device); > 0: this many. A count set in the environment wins.
    c.mesh.cpu_devices = config_dict.placeholder(int)
    # Multi-slice TPU / multi-node GPU: how many of the data (fsdp) ways cross the data-centre network between
    # slices (processes on GPUs). Each divides its axis; their product is the number of slices.
    c.mesh.dcn_data = 1
    c.mesh.dcn_fsdp = 1
    # A parameter dimension its mesh axes do not divide (12 heads over tensor=8) is a config error; True keeps
    # such dimensions whole on every device instead (replicated), logged once per parameter group.
    c.mesh.allow_replication = False
    # Logical axis -> mesh axes ("data,fsdp"; "" = replicated), see bmjax/parallel/rules.py.
    c.mesh.rules = config_dict.ConfigDict()
    c.mesh.rules.batch = "data,fsdp"
    c.mesh.rules.length = "sequence"
    c.mesh.rules.embed = "fsdp"
    c.mesh.rules.heads = "tensor"
    c.mesh.rules.kv_heads = "tensor"
    c.mesh.rules.mlp = "tensor"
    c.mesh.rules.vocab = "tensor"
    c.mesh.rules.head_dim = ""

    c.train = config_dict.ConfigDict()
    c.train.steps = 1000
    c.train.epochs = 0  # classification: > 0 trains this many passes over the data instead (set steps to 0)
    c.train.init_from = ""  # start from the params of a bmjax workdir's newest checkpoint or a Hugging Face dir
    c.train.log_every = 50
    c.train.eval_every = 250
    c.train.eval_steps = 20  # 0: one pass over the whole held-out set (task lm; what sweeps use)
    c.train.ckpt_every = 500
    c.train.keep_ckpts = 3
    # Steps whose checkpoint is kept whatever keep_ckpts says (saved there too): the points branches start from.
    c.train.ckpt_steps = ()
    # "WORKDIR@STEP": start from that run's checkpoint at STEP (params, optimizer, data position, step) and train on
    # with this config, which may change only run/schedule lengths and cadences (bmjax/train/branch.py).
    c.train.branch_from = ""
    # A step whose loss or gradient norm is NaN/inf: "halt" stops the run there (the last checkpoint stays as
    # it was); "skip" drops that update and counts it in the train metrics as "skipped".
    c.train.on_nonfinite = "halt"
    c.train.seed = 0
    c.train.steps_per_call = 1  # train steps fused into one jit call with lax.scan (fewer host round trips)
    c.train.sample_tokens = 200  # GPT: tokens sampled at the end of training (0: none)
    c.train.sample_prompt = "\n"
    c.train.sample_temperature = 0.8
    c.train.progress = True

    c.wandb = config_dict.ConfigDict()
    c.wandb.mode = "disabled"  # disabled | offline | online
    c.wandb.project = "bmjax"
    c.wandb.group = ""
    c.wandb.tags = ()

    c.tensorboard = False

    c.lock()
    return c
