"""Parallelism: the mesh, the logical-axis rules, multi-process start-up, and the shard_map pieces.

Importing the package registers `model.attention=ring` (bmjax.parallel.ring_attention) with the models'
attention registry.
"""
from bmjax.parallel import ring_attention  # noqa: F401  (registers "ring")
