"""How a model's logical axis names become shardings, under the layout in force: the mesh in jax's own context
and the logical-axis rules in flax's.

Models never import bmjax.parallel. They name the axes of their parameters (as metadata) and of the
activations they pass between blocks (`constrain`); the shard_map kernels (ring and splash attention) ask
`current()` for the mesh and the specs of their operands. A layout is in force while a mesh is set in jax's
context (`jax.set_mesh` outside jit, `jax.sharding.use_abstract_mesh` while tracing) and rules in flax's
(`nnx.logical_axis_rules`); the trainer enters both (bmjax/parallel/context.py). Outside them models run
unsharded, as on one device.

A rule maps a logical name to a mesh axis, a tuple of mesh axes, or None; which rules a run uses is decided in
bmjax/parallel/rules.py.
"""
from __future__ import annotations

import dataclasses

import jax
from flax import linen
from jax.sharding import NamedSharding, PartitionSpec as P


def mesh_axes(name, rules) -> tuple[str, ...]:
    """The mesh axes a logical name maps to (empty when replicated or unknown)."""
    target = dict(rules).get(name) if name is not None else None
    return (target,) if isinstance(target, str) else tuple(target or ())


def logical_to_spec(names, rules, mesh=None) -> P:
    """Map a tuple of logical names to a PartitionSpec, using each mesh axis at most once.

    Mesh axes of size 1 are dropped (they shard nothing), and an axis already used by an earlier dimension
    leaves the later dimension replicated, so any combination of rules gives a valid spec.
    """
    used: set[str] = set()
    spec = []
    for name in names:
        axes = tuple(a for a in mesh_axes(name, rules) if a not in used and (mesh is None or mesh.shape[a] > 1))
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return P(*spec)


def spec_axes(entry) -> tuple[str, ...]:
    """The mesh axes of one PartitionSpec entry."""
    return (entry,) if isinstance(entry, str) else tuple(entry or ())


def fit_spec(shape, spec: P, mesh) -> P:
    """Replicate any dimension the mesh axes do not divide evenly (e.g. a 65-character vocabulary)."""
    fixed = []
    for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        size = 1
        for axis in spec_axes(entry):
            size *= mesh.shape[axis]
        fixed.append(entry if dim % size == 0 else None)
    return P(*fixed)


def shaped_spec(names, shape, mesh, rules) -> P:
    """The PartitionSpec of an array of `shape` named `names`: the rules, then `fit_spec`."""
    return fit_spec(shape, logical_to_spec(names, rules, mesh), mesh)


@dataclasses.dataclass(frozen=True)
class Layout:
    """The mesh (concrete or abstract: only its axis sizes and platform are read) and rules in force."""
    mesh: jax.sharding.Mesh | jax.sharding.AbstractMesh
    rules: tuple

    def spec(self, names, shape) -> P:
        """The PartitionSpec for an array of `shape` whose axes are named `names`."""
        return shaped_spec(names, shape, self.mesh, self.rules)

    @property
    def platform(self) -> str:
        """The platform of the mesh's devices ("tpu", "gpu", "cpu"), which may differ from jax's default
        backend when a step is compiled for a TPU topology on another machine."""
        return self.mesh.abstract_device.platform


def current() -> Layout | None:
    """The layout in force, or None when jax's context has no mesh or flax's no rules."""
    mesh = jax.sharding.get_abstract_mesh()
    rules = linen.get_logical_axis_rules()
    if mesh.empty or not rules:
        return None
    return Layout(mesh, tuple(rules))


def constrain(x, names):
    """Hint that activation `x` is laid out by the logical axis `names`: a sharding constraint under the layout
    in force, the identity outside one."""
    layout = current()
    if layout is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(layout.mesh, layout.spec(names, x.shape)))
