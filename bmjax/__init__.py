"""bmjax: BERT and GPT training at scale, and scaling-law measurement, in JAX/Flax NNX.

Importing bmjax changes nothing in the process: the command-line entry points call
`bmjax.runtime.set_process_defaults()` first (the CPU thread pool and malloc settings they need).
"""
