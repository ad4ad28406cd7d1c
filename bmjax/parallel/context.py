"""Entering a mesh's layout: the mesh into jax's context, the logical-axis rules into flax's.

Models never see this module (docs/design.md): they name activation axes and read the layout in force from
jax's and flax's contexts (bmjax/models/sharding.py), and so do the shard_map pieces (ring and splash
attention, vocabulary-parallel cross-entropy). The trainer wraps its step functions with `within`, so the layout
is in force exactly while jit traces them; `activate` is the same outside jit. Outside both, models run
unsharded, as on one device.
"""
import contextlib
import functools

import jax
from flax import nnx
from jax.sharding import Mesh

from bmjax.parallel import rules as rules_lib


@contextlib.contextmanager
def activate(mesh: Mesh, rules=rules_lib.DEFAULT_RULES):
    """Within this block (outside jit), what is jitted and called follows `rules` on `mesh`."""
    with jax.set_mesh(mesh), nnx.logical_axis_rules(tuple(rules)):
        yield


def within(fn, mesh: Mesh, rules=rules_lib.DEFAULT_RULES):
    """`fn` with `mesh` (as the abstract mesh jit allows while tracing) and `rules` in force around every call:
    wrap a function before jitting it so every trace (the first call, and any retrace) sees the layout. The
    jitted function takes its devices from its arguments' shardings."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nnx.logical_axis_rules(tuple(rules)):
            return fn(*args, **kwargs)

    return wrapped
