"""Logical axis rules: the one place that decides how parameters and activations are laid out on the mesh.

Models name their axes (batch, length, embed, heads, kv_heads, head_dim, mlp, vocab); a rule maps each logical
name to a mesh axis, a tuple of mesh axes, or None (replicated). Shardings of every parameter and optimizer-state
leaf are derived from these names, never written per leaf.
"""
import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", "sequence"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("head_dim", None),
)


def logical_to_spec(names, rules=DEFAULT_RULES, mesh=None) -> P:
    """Map a tuple of logical names to a PartitionSpec, using each mesh axis at most once.

    Mesh axes of size 1 are dropped (they shard nothing), and an axis already used by an earlier dimension
    leaves the later dimension replicated, so any combination of rules gives a valid spec.
    """
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for name in names:
        target = table.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a not in used and (mesh is None or mesh.shape[a] > 1))
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return P(*spec)


def _divisible(shape, spec: P, mesh) -> P:
    """Replicate any dimension the mesh axes do not divide evenly (e.g. a 65-character vocabulary)."""
    fixed = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = 1
        for a in names:
            size *= mesh.shape[a]
        fixed.append(axes if dim % size == 0 else None)
    return P(*fixed)


def leaf_sharding(names, shape, mesh, rules=DEFAULT_RULES) -> NamedSharding:
    spec = logical_to_spec(names, rules, mesh) if names else P()
    return NamedSharding(mesh, _divisible(shape, spec, mesh))


def state_shardings(state, mesh, rules=DEFAULT_RULES):
    """NamedSharding for every leaf of a pytree holding nnx Variables (params, optimizer moments, ...).

    A Variable is laid out by its logical names; any other leaf (step counters, scalars) is replicated.
    """

    def one(leaf):
        if not isinstance(leaf, nnx.Variable):
            return NamedSharding(mesh, P())
        metadata = leaf.get_metadata()
        names = metadata.get("out_sharding") or metadata.get("sharding_names")
        return leaf.replace(leaf_sharding(names, leaf.get_raw_value().shape, mesh, rules))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh, rank: int = 2, rules=DEFAULT_RULES) -> NamedSharding:
    """Batches are [batch, length, ...]: the batch axis over data and fsdp, length over sequence."""
    names = ("batch", "length") + (None,) * (rank - 2)
    return NamedSharding(mesh, logical_to_spec(names[:rank], rules, mesh))
