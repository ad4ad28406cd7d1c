"""Parallelism: the mesh, the logical-axis rules, multi-process start-up, and the shard_map pieces (ring
attention, vocabulary-parallel cross-entropy). The attention implementations are listed in
bmjax.models.attention.IMPLEMENTATIONS; importing this package registers nothing.
"""
