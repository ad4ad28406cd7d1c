"""bmjax-sample: text from a trained GPT run, for one prompt or a file of prompts.

    bmjax-sample --workdir DIR --prompt "ROMEO:" [--max_new_tokens 200 --temperature 0.8 --top_k 0
                 --top_p 1.0 --seed 0]
    bmjax-sample --workdir DIR --prompts FILE [--batch_size 32 ...]
    bmjax-sample --workdir runs/shakespeare --prompt "ROMEO:" --max_new_tokens 200 --temperature 0.8
    python -m bmjax.cli.sample ...       (the same)

Reads DIR/config.json, the run's tokenizer (DIR/vocab.json for `char`) and the parameters of the newest
checkpoint in DIR/checkpoints (onto one device). With --prompt it prints the prompt and its continuation.
With --prompts, FILE holds one prompt per line; they are generated --batch_size at a time (left-padded, so
prompts of any lengths share a batch) and printed as JSON lines, {"prompt", "completion", "new_tokens"},
in the file's order. Prompt i samples from the random stream (--seed, i): the batch size does not change
the text. Generation stops early at the tokenizer's end-of-text token, if it has one. Timing goes to
stderr. Bad input (no such workdir, no checkpoint, a prompt the tokenizer cannot encode) prints one line,
`error: ...`, and exits with status 2.
"""
from __future__ import annotations

import json
import pathlib
import sys
import time

from absl import flags

from bmjax.cli import common
from bmjax.errors import ConfigError


def define_flags(argv: list[str]) -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "A bmjax-train workdir (config.json, checkpoints/).", flag_values=fv)
    flags.DEFINE_string("prompt", "\n", "Text to continue (default: a newline).", flag_values=fv)
    flags.DEFINE_string("prompts", None, "A file of prompts, one per line (instead of --prompt).", flag_values=fv)
    flags.DEFINE_integer("batch_size", 32, "Prompts generated together (with --prompts).", flag_values=fv)
    flags.DEFINE_integer("max_new_tokens", 200, "Tokens to generate per prompt.", flag_values=fv)
    flags.DEFINE_float("temperature", 0.8, "0 for greedy decoding.", flag_values=fv)
    flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens (0: all).", flag_values=fv)
    flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (1: all).", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Random seed.", flag_values=fv)
    return fv


def load_run(workdir):
    """(config, tokenizer, model) of a GPT run: its config.json, tokenizer and newest checkpoint's parameters."""
    from bmjax import workdir as workdir_lib
    from bmjax.data import build_tokenizer

    config = workdir_lib.read_config(workdir)
    if config.model.name != "gpt":
        raise ConfigError("--workdir", f"{workdir} holds a {config.model.name!r} model; sampling needs a gpt")
    workdir_lib.newest_checkpoint(workdir)  # before the tokenizer: a run without a checkpoint is the likelier mistake
    tokenizer = build_tokenizer(config, str(workdir))
    return config, tokenizer, workdir_lib.load_model(workdir, config)


def _sampling(temperature: float, top_k: int, top_p: float):
    from bmjax.models.generate import Sampling

    try:
        return Sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    except ValueError as e:
        raise ConfigError(f"--{str(e).split('=')[0]}", str(e)) from None


def _encode(tokenizer, text: str, flag: str):
    import numpy as np

    try:
        ids = np.asarray(tokenizer.encode(text), np.int32)
    except ConfigError as e:
        raise ConfigError(flag, e.message) from None
    if ids.size == 0:
        raise ConfigError(flag, "encodes to no tokens; give at least one character")
    return ids


def sample(workdir, prompts: list[str], *, max_new_tokens: int, temperature: float, top_k: int, top_p: float,
           seed: int, batch_size: int = 1, flag: str = "--prompt") -> tuple[list[tuple[str, int]], float]:
    """([(continuation text, number of new tokens) per prompt], seconds spent generating).

    Prompts are encoded up front (a bad one fails before any generation, named by `flag` and its line).
    """
    import jax

    from bmjax.models.generate import generate_each

    if max_new_tokens < 1:
        raise ConfigError("--max_new_tokens", f"must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ConfigError("--batch_size", f"must be >= 1, got {batch_size}")
    sampling = _sampling(temperature, top_k, top_p)
    _, tokenizer, model = load_run(workdir)
    encoded = [_encode(tokenizer, text, flag if len(prompts) == 1 else f"{flag}: line {i + 1}")
               for i, text in enumerate(prompts)]
    eos = tokenizer.eos_id
    start = time.perf_counter()
    news = generate_each(model, encoded, max_new_tokens=max_new_tokens, key=jax.random.key(seed),
                         sampling=sampling, stop_token=eos, batch_size=batch_size)
    results = []
    for new in news:
        count = int(new.size)
        if eos is not None and count and new[-1] == eos:
            new = new[:-1]  # the stop token ends the sample; it is not part of the text
        results.append((tokenizer.decode(new), count))
    return results, time.perf_counter() - start


def _read_prompts(path: str) -> list[str]:
    try:
        lines = pathlib.Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("--prompts", f"cannot read {path}: {e}") from None
    if not lines:
        raise ConfigError("--prompts", f"{path} holds no prompts (one per line)")
    return lines


def run(fv: flags.FlagValues):
    if not fv.workdir:
        raise ConfigError("--workdir", "required (a bmjax-train workdir)")
    if fv.prompts is not None and fv["prompt"].present:
        raise ConfigError("--prompts", "give --prompt or --prompts, not both")
    prompts = [fv.prompt] if fv.prompts is None else _read_prompts(fv.prompts)
    results, seconds = sample(fv.workdir, prompts, max_new_tokens=fv.max_new_tokens, temperature=fv.temperature,
                              top_k=fv.top_k, top_p=fv.top_p, seed=fv.seed, batch_size=fv.batch_size,
                              flag="--prompt" if fv.prompts is None else "--prompts")
    if fv.prompts is None:
        print(prompts[0] + results[0][0], flush=True)
    else:
        for text, (completion, count) in zip(prompts, results):
            print(json.dumps({"prompt": text, "completion": completion, "new_tokens": count}), flush=True)
    new_tokens = sum(count for _, count in results)
    # Timing includes compilation: it is what the user waited for, not the steady-state decode speed.
    print(f"[{len(results)} prompt(s), {new_tokens} tokens in {seconds:.2f}s: {new_tokens / seconds:.1f} tokens/s]",
          file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    return common.run(define_flags, run, argv, usage=__doc__)


if __name__ == "__main__":
    sys.exit(main())
