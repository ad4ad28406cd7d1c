"""A text sample from a trained GPT at the end of training: temperature sampling from the tokenizer's prompt."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def sample_text(graphdef, params, rest, tokenizer, config) -> str:
    """Sample `train.sample_tokens` tokens after `train.sample_prompt` and decode prompt + continuation.

    Each new token runs the model over a fixed-length window (the last `max_len` tokens), so one compiled
    function serves every position.
    """
    max_len = int(config.model.max_len)
    prompt = [int(t) for t in tokenizer.encode(config.train.sample_prompt)] or [0]
    temperature = float(config.train.sample_temperature)

    @jax.jit
    def next_token(params, rest, window, length, key):
        model = nnx.merge(graphdef, params, rest)
        logits = model(window[None, :])[0, length - 1]
        if temperature <= 0:
            return jnp.argmax(logits).astype(jnp.int32)
        return jax.random.categorical(key, logits / temperature).astype(jnp.int32)

    params, rest = jax.device_get((params, rest))  # sampling runs on one device, whatever the training mesh
    tokens = list(prompt)
    key = jax.random.key(int(config.train.seed) + 1)
    for i in range(int(config.train.sample_tokens)):
        context = tokens[-max_len:]
        window = np.zeros(max_len, np.int32)
        window[: len(context)] = context
        token = next_token(params, rest, window, len(context), jax.random.fold_in(key, i))
        tokens.append(int(token))
        if tokenizer.eos_id is not None and tokens[-1] == tokenizer.eos_id:
            break
    return tokenizer.decode(np.asarray(tokens))
