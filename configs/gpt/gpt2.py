"""GPT-2 shapes (Radford et al. 2019) for real hardware: `configs/gpt/gpt2.py:size=124m|350m|774m|1.5b`.

Data: prepared ArrayRecord token shards and the BPE tokenizer they were written with, e.g. GPT-2's own
byte-level BPE (its `tokenizer.json`, 50,257 ids; the model's 50,304 rows are that padded to a multiple of
128) or one trained with `bmjax-train-tokenizer --kind bpe --vocab_size 50257 --input ...`:

    bmjax-prepare-data --format jsonl --field text --input web-*.jsonl \
        --tokenizer prepared/gpt2/tokenizer.json --out prepared/gpt2/train --num_shards 256
    bmjax-train --config configs/gpt/gpt2.py:size=124m,data=prepared/gpt2/train,tokenizer=prepared/gpt2/tokenizer.json

`data=` is a directory of shards or a glob (default prepared/gpt2/train, relative to where you run); the last
data.eval_fraction of its documents is held out unless --config.data.eval_path names other shards. The
tokenizer must be the one in the shards' metadata.json (checked before anything compiles). Documents are
joined with <|endoftext|> and cut into 1024-token windows (data.packing=concat, as GPT-2 and nanoGPT);
`--config.data.packing=segments` packs them without crossing documents instead.

Add `,runlocal` to shrink any of them for a CPU smoke run (same code path, tiny sizes): it tokenises
data/tinyshakespeare.txt (relative to the repository root) into byte-level shards in the workdir on first use.
"""
from bmjax.defaults import base_config, parse_arg

SIZES = {  # layers, width, heads
    "124m": (12, 768, 12),
    "350m": (24, 1024, 16),
    "774m": (36, 1280, 20),
    "1.5b": (48, 1600, 25),
}


def get_config(arg: str = ""):
    args = parse_arg(arg, size="124m", data="prepared/gpt2/train", tokenizer="prepared/gpt2/tokenizer.json",
                     runlocal=False)
    size = args["size"]
    if size not in SIZES:
        raise ValueError(f"size={size!r}: expected one of {', '.join(SIZES)}")
    layers, width, heads = SIZES[size]
    c = base_config()
    c.model.vocab_size = 50304  # GPT-2's 50257 padded to a multiple of 128 for fast matmuls
    c.model.num_layers = layers
    c.model.d_model = width
    c.model.num_heads = heads
    c.model.max_len = 1024
    c.model.dtype = "bfloat16"
    c.data.source = "arrayrecord"
    c.data.path = args["data"]
    c.data.tokenizer = args["tokenizer"]
    c.data.packing = "concat"
    c.data.seq_len = 1024
    c.data.batch_size = 512
    c.optim.lr = 6e-4
    c.optim.min_lr = 6e-5
    c.optim.warmup_steps = 2000
    c.optim.weight_decay = 0.1
    c.optim.b2 = 0.95
    c.train.steps = 600_000
    c.train.log_every = 100
    c.train.eval_every = 2000
    c.train.eval_steps = 50
    c.train.ckpt_every = 2000
    if args["runlocal"]:
        c.model.num_layers = 2
        c.model.d_model = 64
        c.model.num_heads = 4
        c.model.vocab_size = 320  # the byte tokenizer's 260 ids, padded
        c.data.path = ""
        c.data.prepare_from = "data/tinyshakespeare.txt"
        c.data.tokenizer = "byte"
        c.model.max_len = 64
        c.model.dtype = "float32"
        c.data.seq_len = 64
        c.data.batch_size = 8
        c.optim.warmup_steps = 2
        c.train.steps = 10
        c.train.log_every = 5
        c.train.eval_every = 10
        c.train.eval_steps = 2
        c.train.ckpt_every = 10
        c.train.sample_tokens = 8
    return c
