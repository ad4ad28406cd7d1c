"""bmjax: BERT and GPT training at scale, and scaling-law measurement, in JAX/Flax NNX."""
import os

# jax's CPU client sizes its thread pool from the core count; with fake devices (or several
# processes) a step holding collectives deadlocks on a 2-core machine unless the pool is larger.
# It must be set before jax creates its CPU backend, so it lives here, before anything imports jax.
os.environ.setdefault("PJRT_NPROC", "64")
