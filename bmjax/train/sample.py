"""A text sample from a trained GPT at the end of training, with the cached generator."""
import jax
from jax.experimental import multihost_utils
import numpy as np
from flax import nnx

from bmjax.models.generate import Sampling, generate


def sample_text(graphdef, params, rest, tokenizer, config) -> str:
    """`train.sample_tokens` tokens after `train.sample_prompt` at `train.sample_temperature`, decoded with
    the prompt. Stops early at the tokenizer's end-of-text token (kept in the text), if it has one."""
    prompt = np.asarray(tokenizer.encode(config.train.sample_prompt), np.int32)
    if prompt.size == 0:  # an empty prompt: start from the tokenizer's begin token, or id 0
        prompt = np.array([getattr(tokenizer, "bos_id", None) or 0], np.int32)
    # Sampling runs on one device, whatever the training mesh; in a multi-process run every process gathers
    # the full parameters (they are not all addressable from one process).
    params, rest = multihost_utils.process_allgather((params, rest), tiled=True)
    model = nnx.merge(graphdef, params, rest)
    tokens, lengths = generate(
        model, prompt[None], max_new_tokens=int(config.train.sample_tokens),
        key=jax.random.key(int(config.train.seed) + 1),
        sampling=Sampling(temperature=float(config.train.sample_temperature)), stop_token=tokenizer.eos_id)
    return tokenizer.decode(np.asarray(tokens[0, : int(lengths[0])]))
