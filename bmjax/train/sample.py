"""A text sample from a trained GPT at the end of training, with the cached generator."""
import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from bmjax.models.generate import Sampling, generate


def sample_text(graphdef, params, rest, tokenizer, config) -> str:
    """`train.sample_tokens` tokens after `train.sample_prompt` at `train.sample_temperature`, decoded with
    the prompt. Stops early at the tokenizer's end-of-text token (kept in the text), if it has one.

    Generation runs where the parameters are, sharded as training left them (the jitted generator follows its
    arguments' shardings), so no device or process ever holds the whole model; only the generated ids are
    gathered. Every process takes part and returns the same text.
    """
    prompt = np.asarray(tokenizer.encode(config.train.sample_prompt), np.int32)
    if prompt.size == 0:  # an empty prompt: start from the tokenizer's begin token, or id 0
        prompt = np.array([getattr(tokenizer, "bos_id", None) or 0], np.int32)
    # The prompt and key go to every device of the parameters' mesh, the same on every process.
    replicated = _replicated_like(params)
    prompt = jax.device_put(prompt[None], replicated)
    key = jax.jit(lambda: jax.random.key(int(config.train.seed) + 1), out_shardings=replicated)()
    model = nnx.merge(graphdef, params, rest)
    tokens, lengths = generate(
        model, prompt, max_new_tokens=int(config.train.sample_tokens), key=key,
        sampling=Sampling(temperature=float(config.train.sample_temperature)), stop_token=tokenizer.eos_id)
    tokens, lengths = (np.asarray(multihost_utils.process_allgather(x, tiled=True)) for x in (tokens, lengths))
    return tokenizer.decode(tokens[0, : int(lengths[0])])


def _replicated_like(params):
    """A sharding that puts a whole (small) array on every device the parameters live on."""
    sharding = jax.tree.leaves(params)[0].sharding
    if isinstance(sharding, jax.sharding.NamedSharding):
        return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    return sharding  # one device
