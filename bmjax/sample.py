"""Sample text from a trained GPT run.

    bmjax-sample --workdir DIR --prompt "ROMEO:" [--max_new_tokens 200 --temperature 0.8
                 --top_k 0 --top_p 1.0 --seed 0]
    python -m bmjax.sample ...            (the same)

Reads DIR/config.json, the run's tokenizer (DIR/vocab.json for `char`) and the parameters of the
newest checkpoint in DIR/checkpoints (parameters only, onto one device), and prints the prompt and
its continuation. Generation stops early at the tokenizer's end-of-text token, if it has one.
Bad input (no such workdir, no checkpoint, a prompt the tokenizer cannot encode) prints one line,
`error: ...`, and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import bmjax  # noqa: F401  (sets PJRT_NPROC before jax starts)
from bmjax.errors import ConfigError


def load_run(workdir):
    """(config, tokenizer, model) of a run: its config.json, tokenizer and newest checkpoint's parameters."""
    import jax
    import ml_collections
    import orbax.checkpoint as ocp
    from flax import nnx

    from bmjax.checkpoint import read_tree
    from bmjax.data import build_tokenizer
    from bmjax.models import build_model

    workdir = pathlib.Path(workdir)
    if not workdir.is_dir():
        raise ConfigError("--workdir", f"{workdir} does not exist")
    config_path = workdir / "config.json"
    try:
        config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    except (OSError, ValueError) as e:
        raise ConfigError("--workdir", f"cannot read {config_path}: {e}") from None
    if config.model.name != "gpt":
        raise ConfigError("--workdir", f"{workdir} holds a {config.model.name!r} model; sampling needs a gpt")
    ckpt_dir = (workdir / "checkpoints").resolve()
    if not ckpt_dir.is_dir():
        raise ConfigError("--workdir", f"no checkpoint in {ckpt_dir}")
    # Read only: never clean up or create anything in a run that may still be training.
    manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(read_only=True))
    step = manager.latest_step()
    manager.close()
    if step is None:
        raise ConfigError("--workdir", f"no checkpoint in {ckpt_dir}")
    tokenizer = build_tokenizer(config, str(workdir))

    abstract = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(0)))
    graphdef, abstract_params, rest = nnx.split(abstract, nnx.Param, ...)
    # The checkpoint holds the whole train state; read its params only (the optimizer state stays on disk).
    params = jax.device_put(read_tree(ckpt_dir / str(step), abstract_params, "params/"), jax.devices()[0])
    model = nnx.merge(graphdef, params, rest)
    return config, tokenizer, model


def sample(workdir, prompt: str, *, max_new_tokens: int, temperature: float, top_k: int, top_p: float,
           seed: int) -> tuple[str, int, float]:
    """(prompt + continuation as text, number of new tokens, seconds spent generating)."""
    import jax
    import numpy as np

    from bmjax.models.generate import Sampling, generate

    if max_new_tokens < 1:
        raise ConfigError("--max_new_tokens", f"must be >= 1, got {max_new_tokens}")
    try:
        sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    except ValueError as e:
        flag = str(e).split("=")[0]
        raise ConfigError(f"--{flag}", str(e)) from None
    config, tokenizer, model = load_run(workdir)
    try:
        ids = np.asarray(tokenizer.encode(prompt), np.int32)
    except ConfigError as e:
        raise ConfigError("--prompt", e.message) from None
    if ids.size == 0:
        raise ConfigError("--prompt", "encodes to no tokens; give at least one character")
    start = time.perf_counter()
    tokens, lengths = generate(model, ids[None], max_new_tokens=max_new_tokens, key=jax.random.key(seed),
                               sampling=sampling, stop_token=tokenizer.eos_id)
    tokens, length = np.asarray(tokens[0]), int(lengths[0])
    seconds = time.perf_counter() - start
    if tokenizer.eos_id is not None and length > ids.size and tokens[length - 1] == tokenizer.eos_id:
        length -= 1  # the stop token ends the sample; it is not part of the text
    return tokenizer.decode(tokens[:length]), int(lengths[0]) - ids.size, seconds


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="bmjax-sample", description="Sample text from a trained GPT run.")
    parser.add_argument("--workdir", required=True, help="a bmjax-train workdir (config.json, checkpoints/)")
    parser.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    parser.add_argument("--max_new_tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 for greedy decoding")
    parser.add_argument("--top_k", type=int, default=0, help="keep the k most likely tokens (0: all)")
    parser.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling mass (1: all)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        text, new_tokens, seconds = sample(args.workdir, args.prompt, max_new_tokens=args.max_new_tokens,
                                           temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                           seed=args.seed)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    print(text, flush=True)
    # Timing includes compilation: it is what the user waited for, not the steady-state decode speed.
    print(f"[{new_tokens} tokens in {seconds:.2f}s]", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
