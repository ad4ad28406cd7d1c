"""bmjax: BERT and GPT training at scale, and scaling-law measurement, in JAX/Flax NNX."""
from bmjax import runtime as _runtime

# The CPU thread-pool size and malloc settings must be in place before jax creates its CPU backend,
# so they are set here, before anything imports jax (bmjax/runtime.py says why each is needed).
_runtime.set_process_defaults()
