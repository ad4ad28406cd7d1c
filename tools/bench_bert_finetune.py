"""BERT fine-tuning side by side: bmjax's recipe against transformers' BertForSequenceClassification (eager PyTorch).

    python tools/bench_bert_finetune.py [--rounds 3] [--steps 300] [--torch_threads 2] [--json]

Both train the tiny encoder of `configs/bert/finetune.py:...,model=tiny` from the same random-init recipe on the
same data: a synthetic two-class CSV the tool writes (label 1 when a row holds more "positive" than "negative"
words), byte tokens, sequences of 128, batch 16, AdamW (lr, betas 0.9/0.999, eps 1e-8, weight decay 0.01 off
biases and layer norms), linear warmup then linear decay to 0, gradient clipping at 1.0, dropout 0.1. bmjax runs
as a user runs it (`python -m bmjax.cli.train`, CPU devices as its defaults pick them) and its ms/step is read from
metrics.jsonl's train rows (the first window, with compilation, left out); transformers runs in this process
with `--torch_threads` threads on the same encoded examples. Rounds alternate which goes first (A B, B A, ...),
each figure is printed beside the load average over its run, and the summary is the median over rounds. Final
accuracy is each side's on the same held-out rows after the last step.
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

POSITIVE = ("good", "great", "fine", "bright", "happy", "calm", "kind", "warm")
NEGATIVE = ("bad", "awful", "poor", "dark", "sad", "angry", "cruel", "cold")
NEUTRAL = ("the", "a", "river", "house", "walked", "under", "table", "green", "seven", "window", "slowly",
           "before", "music", "paper", "station", "winter")


def write_data(directory: pathlib.Path, train_rows: int, eval_rows: int, seed: int) -> tuple[str, str]:
    """train.csv and eval.csv: 8-40 words a row; label 1 when positive words outnumber negative ones."""
    rng = np.random.default_rng(seed)
    paths = []
    for name, n in (("train.csv", train_rows), ("eval.csv", eval_rows)):
        lines = ["text,label"]
        for _ in range(n):
            words = list(rng.choice(NEUTRAL, size=rng.integers(6, 30)))
            pos, neg = rng.integers(0, 6, size=2)
            if pos == neg:
                pos += 1
            words += list(rng.choice(POSITIVE, size=pos)) + list(rng.choice(NEGATIVE, size=neg))
            rng.shuffle(words)
            lines.append(f"{' '.join(words)},{int(pos > neg)}")
        path = directory / name
        path.write_text("\n".join(lines) + "\n")
        paths.append(str(path))
    return paths[0], paths[1]


def recipe_config(train_path: str, eval_path: str, args):
    """configs/bert/finetune.py's tiny recipe on these files, with the benchmark's step budget."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune_config", REPO / "configs/bert/finetune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config(f"data={train_path},labels=2,model=tiny")
    c.data.eval_path = eval_path
    c.train.epochs, c.train.steps = 0, args.steps
    c.optim.lr, c.optim.warmup_steps = args.lr, args.warmup_steps
    return c


def overrides(args, eval_path: str) -> list[str]:
    return [f"--config.data.eval_path={eval_path}", "--config.train.epochs=0", f"--config.train.steps={args.steps}",
            f"--config.train.log_every={args.log_every}", f"--config.train.eval_every={args.steps}",
            f"--config.train.ckpt_every={args.steps}", f"--config.optim.lr={args.lr}",
            f"--config.optim.warmup_steps={args.warmup_steps}"]


def run_bmjax(train_path: str, eval_path: str, args, workdir: pathlib.Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "bmjax.cli.train", "--config",
           f"configs/bert/finetune.py:data={train_path},labels=2,model=tiny", *overrides(args, eval_path),
           f"--workdir={workdir}"]
    load = os.getloadavg()[0]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout)
    if result.returncode != 0:
        raise RuntimeError(f"bmjax run failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    config = json.loads((workdir / "config.json").read_text())
    tokens_per_step = config["data"]["batch_size"] * config["data"]["seq_len"]
    train = [r for r in rows if r.get("split") == "train" and r.get("tokens_per_sec")]
    timed = train[1:] or train  # the first window holds the compilation
    evals = [r for r in rows if r.get("split") == "eval"]
    return {"ms_per_step": statistics.median(tokens_per_step / r["tokens_per_sec"] * 1e3 for r in timed),
            "accuracy": float(evals[-1]["accuracy"]), "load": (load + os.getloadavg()[0]) / 2}


def run_torch(config, args) -> dict:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, get_linear_schedule_with_warmup

    from bmjax.data import classification

    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = classification.build_tokenizer(config, scratch)
    train_rows, eval_rows, names = classification.load_rows(config)
    seq_len, batch = int(config.data.seq_len), int(config.data.batch_size)
    train = classification.encode_rows(train_rows, names, tokenizer, seq_len)
    held_out = classification.encode_rows(eval_rows, names, tokenizer, seq_len)
    m = config.model
    model = BertForSequenceClassification(BertConfig(
        vocab_size=m.vocab_size, hidden_size=m.d_model, num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads, intermediate_size=m.d_ff, max_position_embeddings=m.max_len,
        type_vocab_size=m.type_vocab_size, layer_norm_eps=m.norm_eps, initializer_range=m.init_std,
        hidden_dropout_prob=m.dropout, attention_probs_dropout_prob=m.dropout, num_labels=len(names),
        pad_token_id=tokenizer.pad_id))
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    o = config.optim
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=o.lr, betas=(o.b1, o.b2), eps=o.eps)
    schedule = get_linear_schedule_with_warmup(optimizer, o.warmup_steps, args.steps)
    tensors = {k: torch.from_numpy(v.astype(np.int64)) for k, v in train.items()}
    rng = np.random.default_rng(args.seed)
    order = np.concatenate([rng.permutation(len(train["labels"])) for _ in range(args.steps * batch //
                                                                                   len(train["labels"]) + 1)])
    load = os.getloadavg()[0]
    model.train()
    windows, start = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        index = torch.from_numpy(order[(step - 1) * batch:step * batch])
        out = model(**{k: v[index] for k, v in tensors.items()})
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % args.log_every == 0 or step == args.steps:
            now = time.perf_counter()
            windows.append(now - start)
            start = now
    steps_per_window = [min(args.log_every, args.steps - i * args.log_every) for i in range(len(windows))]
    per_step = [w / n for w, n in zip(windows, steps_per_window)]
    timed = per_step[1:] or per_step  # as for bmjax: the first window left out
    model.eval()
    hits = 0
    with torch.no_grad():
        for i in range(0, len(held_out["labels"]), 64):
            inputs = {k: torch.from_numpy(v[i:i + 64].astype(np.int64)) for k, v in held_out.items() if k != "labels"}
            hits += int((model(**inputs).logits.argmax(-1).numpy() == held_out["labels"][i:i + 64]).sum())
    return {"ms_per_step": statistics.median(timed) * 1e3, "accuracy": hits / len(held_out["labels"]),
            "load": (load + os.getloadavg()[0]) / 2}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300, help="train steps per run (each side, each round)")
    parser.add_argument("--log_every", type=int, default=50,
                        help="steps per timing window (a multiple of the recipe's train.steps_per_call, 10)")
    parser.add_argument("--lr", type=float, default=2e-5, help="the recipe's; both sides")
    parser.add_argument("--warmup_steps", type=int, default=30, help="both sides (the recipe's 500 is for 3 epochs)")
    parser.add_argument("--train_rows", type=int, default=2000)
    parser.add_argument("--eval_rows", type=int, default=400)
    parser.add_argument("--torch_threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per bmjax run")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 2 or not 0 < args.log_every <= args.steps or args.torch_threads < 1:
        print("error: need --rounds >= 1, --steps >= 2, 0 < --log_every <= --steps, --torch_threads >= 1",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-bert-") as tmp:
        tmp = pathlib.Path(tmp)
        train_path, eval_path = write_data(tmp, args.train_rows, args.eval_rows, args.seed)
        config = recipe_config(train_path, eval_path, args)
        results = {"bmjax": [], "transformers": []}
        for r in range(args.rounds):
            order = ("bmjax", "transformers") if r % 2 == 0 else ("transformers", "bmjax")
            for side in order:
                if side == "bmjax":
                    out = run_bmjax(train_path, eval_path, args, tmp / f"run{r}")
                else:
                    out = run_torch(config, args)
                results[side].append(out)
                print(f"round {r + 1} {side:<12} {out['ms_per_step']:8.2f} ms/step  accuracy {out['accuracy']:.4f}"
                      f"  (load average {out['load']:.2f})", flush=True)
    summary = {side: {"ms_per_step": statistics.median(o["ms_per_step"] for o in runs),
                      "accuracy": runs[-1]["accuracy"], "load": statistics.median(o["load"] for o in runs)}
               for side, runs in results.items()}
    speedup = summary["transformers"]["ms_per_step"] / summary["bmjax"]["ms_per_step"]
    for side, s in summary.items():
        print(f"median {side:<12} {s['ms_per_step']:8.2f} ms/step  accuracy {s['accuracy']:.4f}"
              f"  (load average {s['load']:.2f})")
    print(f"bmjax steps/s = {speedup:.2f} x transformers'")
    if args.json:
        import jax
        import torch
        import transformers

        print(json.dumps({"args": vars(args), "rounds": results, "median": summary, "speedup": speedup,
                          "environment": {"jax": jax.__version__, "torch": torch.__version__,
                                          "transformers": transformers.__version__, "cores": os.cpu_count()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
