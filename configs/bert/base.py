"""BERT-base pretraining (Devlin et al. 2019), the shape of bert-base-uncased: 12 layers, width 768,
12 heads, d_ff 3072, 30522 WordPiece ids, 512 positions, 2 token types.

    bmjax-train --config configs/bert/base.py --workdir runs/bert-base \
        --config.data.tokenizer=PATH/bert-base-uncased/vocab.txt --config.data.source=text \
        --config.data.path=corpus.txt

The recipe is the paper's first phase: masked LM + next sentence on sequences of 128, batch 256, Adam
lr 1e-4 (beta2 0.999, eps 1e-6), weight decay 0.01, 10k warmup steps then linear decay, dropout 0.1,
bfloat16 compute. The defaults read the builtin corpus with the byte tokenizer (which fits in the 30522
ids), so the config runs anywhere; a real run sets `data.tokenizer` to bert-base-uncased's vocab.txt
(or a tokenizer.json) and its own text.
Add `:runlocal` for a CPU smoke run of the same code path (2 small layers, a few steps).
"""
from bmjax.defaults import base_config, parse_arg


def get_config(arg: str = ""):
    c = base_config()
    c.model.name = "bert"
    c.model.heads = "pretraining"
    c.model.vocab_size = 30522
    c.model.d_model = 768
    c.model.num_layers = 12
    c.model.num_heads = 12
    c.model.d_ff = 3072
    c.model.max_len = 512
    c.model.type_vocab_size = 2
    c.model.dropout = 0.1
    c.model.norm_eps = 1e-12
    c.model.init_std = 0.02
    c.model.dtype = "bfloat16"
    c.data.task = "mlm"
    c.data.source = "builtin"
    c.data.tokenizer = "byte"
    c.data.seq_len = 128
    c.data.batch_size = 256
    c.optim.lr = 1e-4
    c.optim.min_lr = 0.0
    c.optim.schedule = "linear"
    c.optim.warmup_steps = 10_000
    c.optim.weight_decay = 0.01
    c.optim.b2 = 0.999
    c.optim.eps = 1e-6
    c.train.steps = 1_000_000
    c.train.log_every = 100
    c.train.eval_every = 5000
    c.train.eval_steps = 50
    c.train.ckpt_every = 5000
    if parse_arg(arg, runlocal=False)["runlocal"]:
        c.model.num_layers = 2
        c.model.d_model = 128
        c.model.num_heads = 2
        c.model.d_ff = 512
        c.model.max_len = 128
        c.model.dtype = "float32"
        c.data.seq_len = 128
        c.data.batch_size = 8
        c.optim.warmup_steps = 2
        c.train.steps = 10
        c.train.log_every = 5
        c.train.eval_every = 10
        c.train.eval_steps = 2
        c.train.ckpt_every = 10
    return c
