"""Chinchilla's IsoFLOP sweep (Hoffmann et al. 2022, approach 2), for a TPU pod or a GPU cluster.

GPT models from ~16M to ~1.1B parameters (embeddings included: Chinchilla's N; ~3M to ~1B non-embedding) at
six training budgets C from 1e17 to 3e19 counted FLOPs (the C of each run's summary.json: D times
bmjax.models.flops' per-token FLOPs, see bmjax/scaling/sweep.py); each run trains the D that meets its budget,
with a cosine that ends where the run ends. Per budget only the sizes with 2 <= D/N <= 400 run, a bracket
around Chinchilla's ~20 tokens per parameter wide enough for a parabola in log N to find its minimum (27 runs
in all). Every run is scored on one pass over the same
held-out file.

    bmjax-sweep --config configs/sweeps/chinchilla_isoflop.py:train=TRAIN.txt,eval=EVAL.txt,tokenizer=TOK.json \\
        --workdir /shared/runs/isoflop --launcher slurm --slurm_args "--nodes=1"
    bmjax-scaling fit --runs /shared/runs/isoflop --law chinchilla --approach 2

Arguments (comma-separated): train=, eval= UTF-8 text files (the eval file is scored whole: keep it to a few
million tokens), tokenizer= a tokenizer.json of 50,257 ids or fewer (GPT-2's). `runlocal` shrinks the sweep
to two tiny byte-level runs on the shipped Shakespeare, a CPU smoke test of the same path.
"""
from bmjax.defaults import base_config, parse_arg
from bmjax.scaling.sweep import axis, budget_steps, counted_flops_per_token, product

# name: (d_model, num_layers, num_heads, global batch in sequences of 2048, FSDP over all devices, lr)
SIZES = {
    "3m": (256, 4, 4, 128, False, 3e-3),
    "10m": (384, 6, 6, 128, False, 2e-3),
    "25m": (512, 8, 8, 128, False, 1.5e-3),
    "50m": (640, 10, 10, 256, False, 1e-3),
    "85m": (768, 12, 12, 256, False, 8e-4),
    "200m": (1024, 16, 16, 256, False, 6e-4),
    "400m": (1280, 20, 20, 512, True, 4e-4),
    "680m": (1536, 24, 16, 512, True, 3e-4),
    "1b": (2048, 20, 16, 512, True, 2.5e-4),
}
BUDGETS = (1e17, 3e17, 1e18, 3e18, 1e19, 3e19)
TOKENS_PER_PARAM = (2, 400)  # the D/N bracket kept at each budget
LOCAL_SIZES = {"tiny": (32, 1, 2, 8, False, 3e-3), "small": (40, 1, 2, 8, False, 3e-3)}
LOCAL_BUDGET = 1.6e9  # counted FLOPs: 19 and 14 steps of 8 x 64 byte tokens for the two local models


def _args(arg: str) -> dict:
    return dict(part.split("=", 1) if "=" in part else (part, True) for part in arg.split(",") if part)


def get_config(arg: str = ""):
    args = parse_arg(arg, train="", eval="", tokenizer="", runlocal=False)
    c = base_config()
    c.model.name = "gpt"
    c.data.source = "text"
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 100  # each run's own value comes from get_sweep (a share of its steps)
    c.optim.weight_decay = 0.1
    c.optim.b2 = 0.95
    c.optim.grad_clip = 1.0
    c.train.log_every = 50
    c.train.eval_every = 1000
    c.train.eval_steps = 0  # the whole held-out file, once per eval
    c.train.ckpt_every = 1000
    c.train.sample_tokens = 0
    c.wandb.mode = "online"
    c.wandb.project = "bmjax-isoflop"
    if args.get("runlocal"):
        c.model.vocab_size = 320
        c.model.max_len = 64
        c.data.path = "data/tinyshakespeare.txt"  # relative to the repository root
        c.data.tokenizer = "byte"
        c.data.seq_len = 64
        c.optim.min_lr = 3e-4
        c.train.log_every = 5
        c.train.eval_every = 10
        c.train.ckpt_every = 5
        c.train.progress = False
        c.wandb.mode = "disabled"
        return c
    c.model.vocab_size = 50304  # GPT-2's 50,257 ids, padded to a multiple of 64
    c.model.max_len = 2048
    c.model.dtype = "bfloat16"
    c.data.path = args.get("train", "")
    c.data.eval_path = args.get("eval", "")
    c.data.tokenizer = args.get("tokenizer", "")
    c.data.seq_len = 2048
    return c


def _size_overrides(size) -> dict:
    d_model, layers, heads, batch, fsdp, lr = size
    overrides = {"model.d_model": d_model, "model.num_layers": layers, "model.num_heads": heads,
                 "data.batch_size": batch, "optim.lr": lr, "optim.min_lr": round(lr / 10, 12)}
    if fsdp:  # parameters, gradients and optimizer state sharded over every device; activations rematerialised
        overrides.update({"mesh.data": 1, "mesh.fsdp": -1, "model.remat": "dots_saveable"})
    return overrides


def _tokens_per_param(config, size, budget) -> float:
    """D / N_total of a size at a budget: the D that meets it in counted FLOPs over all the parameters."""
    from bmjax.models import flops, model_config

    for key, value in _size_overrides(size).items():
        section, name = key.split(".")
        config[section][name] = value
    n_total = flops.param_counts(model_config(config.model))["total"]
    return budget / counted_flops_per_token(config) / n_total


def get_sweep(arg: str = ""):
    local = bool(_args(arg).get("runlocal"))
    sizes, budgets = (LOCAL_SIZES, (LOCAL_BUDGET,)) if local else (SIZES, BUDGETS)
    runs = []
    for budget in budgets:
        for name, size in sizes.items():
            ratio = _tokens_per_param(get_config(arg), size, budget)
            if not local and not TOKENS_PER_PARAM[0] <= ratio <= TOKENS_PER_PARAM[1]:
                continue
            config = get_config(arg)
            overrides = _size_overrides(size)
            for key, value in overrides.items():
                section, field = key.split(".")
                config[section][field] = value
            steps = budget_steps(config, "budget.flops", budget)
            warmup = max(1, min(1000, steps // 20))  # 5% of the run, at most 1000 steps
            runs += product(axis("budget.flops", [budget]), [dict(overrides, **{"optim.warmup_steps": warmup})])
    return runs
