"""The demo: a small byte-level GPT on the builtin corpus; a minute or two on 2 CPU cores.

    bmjax-train --config configs/gpt/tiny.py --workdir runs/demo
"""
from ml_collections import config_dict

from bmjax.defaults import base_config, parse_arg


def get_config(arg: str = ""):
    c = base_config()
    # Unset: the tokenizer's ids rounded up to a multiple of 64 (320 for the byte tokenizer's 260; a tokenizer file's
    # own, e.g. 8000, with --config.data.tokenizer=PATH).
    c.model.vocab_size = config_dict.placeholder(int)
    c.model.d_model = 128
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.max_len = 128
    c.data.source = "builtin"
    c.data.tokenizer = "byte"
    c.data.seq_len = 128
    c.data.batch_size = 16
    c.optim.lr = 2e-3
    c.optim.min_lr = 2e-4
    c.optim.warmup_steps = 30
    c.optim.b2 = 0.99
    c.train.steps = 400
    c.train.log_every = 25
    c.train.eval_every = 200
    c.train.eval_steps = 10
    c.train.ckpt_every = 200
    c.train.sample_tokens = 160
    c.train.sample_prompt = "def "
    if parse_arg(arg, runlocal=False)["runlocal"]:
        c.train.steps = 20
        c.train.log_every = 5
        c.train.eval_every = 10
        c.train.eval_steps = 2
        c.train.ckpt_every = 10
        c.train.sample_tokens = 16
    return c
