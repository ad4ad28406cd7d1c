"""The PyTorch reference for the shakespeare_char benchmark: a nanoGPT-style model and CPU training loop.

    python tools/bench_nanogpt_torch.py --data data/tinyshakespeare.txt [--steps 60 --warmup 10]
    python tools/bench_nanogpt_torch.py --data data/tinyshakespeare.txt --full   # 2000 steps + val loss

A re-implementation (written for this repository) of the recipe nanoGPT runs on CPU for shakespeare_char:
4 layers, 4 heads, width 128, context 64, batch 12, no biases, dropout 0, tied embeddings, GELU MLP, AdamW
(lr 1e-3, betas 0.9/0.99, weight decay 0.1 on every >=2-d tensor), linear warmup 100 then cosine to 1e-4 at
step 2000, gradient clipping at 1.0, eager PyTorch on 2 threads. Data: characters of the first 90% of the file
train, the last 10% evaluate; batches are random windows, as in nanoGPT's loader.

It reports the median milliseconds per iteration (each iteration: draw a batch, forward, backward, clip, AdamW
step, read the loss back), so the bmjax trainer can be compared with it on the same machine in one sitting
(tools/bench_compare.py).
"""
import json
import math
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's bmjax comes first

import numpy as np  # noqa: E402
import torch  # noqa: E402
from absl import flags  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from bmjax.cli import common  # noqa: E402

FLAGS = flags.FlagValues()
flags.DEFINE_string("data", "data/tinyshakespeare.txt", "The tinyshakespeare text file.", flag_values=FLAGS)
flags.DEFINE_integer("steps", 60, "Timed iterations (ignored with --full).", flag_values=FLAGS)
flags.DEFINE_integer("warmup", 10, "Untimed iterations first.", flag_values=FLAGS)
flags.DEFINE_bool("full", False, "Train 2000 steps and report the val loss.", flag_values=FLAGS)
flags.DEFINE_integer("threads", 2, "Torch threads.", flag_values=FLAGS)
flags.DEFINE_integer("eval_iters", 20, "Val batches for the val loss.", flag_values=FLAGS)
flags.DEFINE_integer("seed", 1337, "Random seed.", flag_values=FLAGS)
flags.DEFINE_bool("json", False, "Print one JSON line instead of text.", flag_values=FLAGS)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)  # q, k and v in one matmul
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        # [b, t, c] -> [b, heads, t, head_dim]
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, bias=False)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, bias=False)
        self.up = nn.Linear(width, 4 * width, bias=False)
        self.down = nn.Linear(4 * width, width, bias=False)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class CharGPT(nn.Module):
    def __init__(self, vocab: int, context: int, width: int, layers: int, heads: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.ModuleList([Block(width, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(width, bias=False)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied input and output embeddings
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                # GPT-2 init: N(0, 0.02), residual-stream output projections scaled by 1/sqrt(2 * layers).
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "down.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def learning_rate(step: int, lr=1e-3, min_lr=1e-4, warmup=100, decay_steps=2000) -> float:
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if step > decay_steps:
        return min_lr
    ratio = (step - warmup) / (decay_steps - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def load_splits(path: str):
    text = open(path, encoding="utf-8").read()
    chars = sorted(set(text))
    index = {ch: i for i, ch in enumerate(chars)}
    ids = np.array([index[ch] for ch in text], dtype=np.int64)
    cut = int(0.9 * len(ids))
    return ids[:cut], ids[cut:], len(chars)


def batch(ids: np.ndarray, rng: np.random.Generator, size: int, context: int):
    starts = rng.integers(0, len(ids) - context, size)
    x = np.stack([ids[s:s + context] for s in starts])
    y = np.stack([ids[s + 1:s + 1 + context] for s in starts])
    return torch.from_numpy(x), torch.from_numpy(y)


def main():
    common.parse_or_exit(FLAGS, sys.argv[1:], usage=__doc__)

    torch.set_num_threads(FLAGS.threads)
    torch.manual_seed(FLAGS.seed)
    rng = np.random.default_rng(FLAGS.seed)
    train_ids, val_ids, vocab = load_splits(FLAGS.data)
    context, batch_size = 64, 12
    model = CharGPT(vocab, context, width=128, layers=4, heads=4)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))

    total = 2000 if FLAGS.full else FLAGS.warmup + FLAGS.steps
    times, cpu_times = [], []
    load_before = os.getloadavg()[0]
    for step in range(total):
        t0, c0 = time.perf_counter(), time.process_time()
        for group in opt.param_groups:
            group["lr"] = learning_rate(step)
        x, y = batch(train_ids, rng, batch_size, context)
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        last_loss = loss.item()
        if step >= FLAGS.warmup:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)

    result = {"ms_per_step": statistics.median(times) * 1e3, "cpu_ms_per_step": statistics.median(cpu_times) * 1e3,
              "timed_steps": len(times), "threads": torch.get_num_threads(), "load_before": load_before,
              "load_after": os.getloadavg()[0], "train_loss": last_loss}
    if FLAGS.full:
        model.eval()
        with torch.no_grad():
            losses = [model(*batch(val_ids, rng, batch_size, context)).item() for _ in range(FLAGS.eval_iters)]
        result["steps"] = total
        result["val_loss"] = float(np.mean(losses))
    if FLAGS.json:
        print(json.dumps(result))
    else:
        print(f"torch nanoGPT-style loop: ms/iter median {result['ms_per_step']:.2f} over {len(times)} iters "
              f"(cpu ms/iter {result['cpu_ms_per_step']:.2f}, {FLAGS.threads} threads), train loss {last_loss:.4f}"
              + (f", val loss {result['val_loss']:.4f} at step {total}" if FLAGS.full else "")
              + f"; load average {load_before:.2f} -> {result['load_after']:.2f}")


if __name__ == "__main__":
    main()
