"""nanoGPT's CPU recipe for shakespeare_char: a 4-layer, 128-wide character-level GPT.

    bmjax-train --config configs/gpt/shakespeare_char.py --workdir runs/shakespeare

It reads data/tinyshakespeare.txt, shipped with the repository (run from the repository root, or point
--config.data.path at another copy).

The first 90% of the file trains and the last 10% evaluates, as in nanoGPT's prepare script.
"""
from bmjax.defaults import base_config, parse_arg


def get_config(arg: str = ""):
    c = base_config()
    c.model.vocab_size = 65  # tinyshakespeare's characters; a file with more is a config error
    c.model.d_model = 128
    c.model.num_layers = 4
    c.model.num_heads = 4
    c.model.max_len = 64
    c.model.dropout = 0.0
    c.model.use_bias = False  # nanoGPT's default `bias = False`
    c.data.source = "text"
    c.data.path = "data/tinyshakespeare.txt"  # relative to the repository root (data/README.md)
    c.data.tokenizer = "char"
    c.data.eval_fraction = 0.1
    c.data.seq_len = 64
    c.data.batch_size = 12
    c.optim.lr = 1e-3
    c.optim.min_lr = 1e-4
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 100
    c.optim.b1 = 0.9
    c.optim.b2 = 0.99
    c.optim.weight_decay = 0.1
    c.optim.grad_clip = 1.0
    # mesh.cpu_devices is left unset: one CPU device per core, so on 2 cores each step's 12 sequences split 6 + 6
    # (one gradient all-reduce), ~25% faster than one device splitting every small op (experiments/shakespeare_char).
    c.train.steps = 2000
    # 10 updates per jitted call (lax.scan): fewer host round trips, ~5-10% faster here; the numbers are the
    # same as one update per call. log/eval/ckpt intervals stay multiples of it.
    c.train.steps_per_call = 10
    c.train.log_every = 100
    c.train.eval_every = 250
    c.train.eval_steps = 20
    c.train.ckpt_every = 1000
    c.train.sample_tokens = 300
    c.train.sample_prompt = "\n"
    if parse_arg(arg, runlocal=False)["runlocal"]:
        c.train.steps = 20
        c.train.steps_per_call = 5
        c.train.log_every = 5
        c.train.eval_every = 10
        c.train.eval_steps = 2
        c.train.ckpt_every = 10
        c.optim.warmup_steps = 5
        c.train.sample_tokens = 16
    return c
