"""The mesh and rules in force while a step is traced.

Models never see a mesh (DESIGN.md): they name activation axes through `bmjax.models.layers.constrain` and
pick attention implementations by name. While `activate(mesh, rules)` is entered, the names become sharding
constraints on the mesh, and the shard_map pieces of this package (ring attention, vocabulary-parallel
cross-entropy) find the mesh here. The trainer wraps its step functions with `within`, so the context is in
force exactly while jit traces them. Outside any context, models run unsharded, as on one device.
"""
import contextlib
import dataclasses
import functools

import jax
from jax.sharding import Mesh, NamedSharding

from bmjax.models import layers
from bmjax.parallel import rules as rules_lib


@dataclasses.dataclass(frozen=True)
class Layout:
    mesh: Mesh
    rules: tuple

    def spec(self, names, shape):
        """The PartitionSpec for an array of `shape` whose axes are named `names`."""
        return rules_lib.shaped_spec(names, shape, self.mesh, self.rules)

    def constrain(self, x, names):
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, self.spec(names, x.shape)))


_stack: list[Layout] = []


def current() -> Layout | None:
    """The innermost active layout, or None outside `activate`."""
    return _stack[-1] if _stack else None


@contextlib.contextmanager
def activate(mesh: Mesh, rules=rules_lib.DEFAULT_RULES):
    """Within this block, model activations follow `rules` on `mesh` and shard_map pieces use `mesh`."""
    layout = Layout(mesh, tuple(rules))
    _stack.append(layout)
    previous = layers.set_activation_constraint(layout.constrain)
    try:
        yield layout
    finally:
        layers.set_activation_constraint(previous)
        _stack.pop()


def within(fn, mesh: Mesh, rules=rules_lib.DEFAULT_RULES):
    """`fn` with `activate(mesh, rules)` entered around every call: wrap a function before jitting it so
    every trace (the first call, and any retrace) sees the layout."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with activate(mesh, rules):
            return fn(*args, **kwargs)

    return wrapped
