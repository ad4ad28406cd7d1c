"""The BERT demo: a small byte-level BERT pretrained (masked LM + next sentence) on the builtin corpus.

    bmjax-train --config configs/bert/tiny.py --workdir runs/bert-tiny

A few minutes on 2 CPU cores. Byte-level: the byte tokenizer's BOS and EOS ids serve as [CLS] and [SEP],
and it has [MASK] and [PAD], so nothing has to be trained or downloaded first. For WordPiece, train one
(`bmjax-train-tokenizer --out runs/tok/tokenizer.json`) and pass
`--config.data.tokenizer=runs/tok/tokenizer.json --config.model.vocab_size=8000`.
Fine-tune the result with `configs/bert/finetune.py:data=FILE,labels=N,model=tiny,init=runs/bert-tiny`.
Add `:runlocal` for a 20-step smoke run.
"""
from bmjax.defaults import base_config, parse_arg


def get_config(arg: str = ""):
    c = base_config()
    c.model.name = "bert"
    c.model.heads = "pretraining"
    c.model.vocab_size = 320  # 260 byte-level ids, rounded up to a multiple of 64
    c.model.d_model = 128
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.d_ff = 512
    c.model.max_len = 128
    c.model.type_vocab_size = 2
    c.model.norm_eps = 1e-12  # BERT's
    # BERT's 0.02 is tuned for width 768; at width 128 it leaves attention uniform for hundreds of steps
    # (the model sits at unigram accuracy). A larger init lets a short CPU run learn from context.
    c.model.init_std = 0.05
    c.model.dropout = 0.0  # a short CPU run learns faster without it
    c.data.task = "mlm"
    c.data.source = "builtin"
    c.data.tokenizer = "byte"
    c.data.seq_len = 64  # short pairs learn fastest on CPU; model.max_len (128) leaves room to fine-tune longer
    c.data.batch_size = 32
    c.optim.lr = 2e-3
    c.optim.min_lr = 0.0
    c.optim.schedule = "linear"  # BERT's: linear warmup, then linear decay to 0
    c.optim.warmup_steps = 40
    c.optim.weight_decay = 0.01
    c.optim.b2 = 0.99
    c.optim.eps = 1e-6
    c.train.steps = 600
    c.train.log_every = 25
    c.train.eval_every = 300
    c.train.eval_steps = 10
    c.train.ckpt_every = 300
    if parse_arg(arg, runlocal=False)["runlocal"]:
        c.data.batch_size = 8
        c.train.steps = 20
        c.train.log_every = 5
        c.train.eval_every = 10
        c.train.eval_steps = 2
        c.train.ckpt_every = 10
    return c
