"""Logical axis rules: the one place that decides how parameters and activations are laid out on the mesh.

Models name their axes (batch, length, embed, heads, kv_heads, head_dim, mlp, vocab); a rule maps each logical
name to a mesh axis, a tuple of mesh axes, or None (replicated). Shardings of every parameter and optimizer-state
leaf are derived from these names, never written per leaf. How names and rules become a PartitionSpec is
bmjax/models/sharding.py, where the models (which never import this package) read the rules in force.

The defaults give data parallelism over `data`, ZeRO-3 style FSDP over `fsdp` (parameters sharded on their
embedding dimension, the batch split over data x fsdp), Megatron tensor parallelism over `tensor` (heads, MLP
hidden units and vocabulary) and context parallelism over `sequence`. A config overrides any rule with a string,
`mesh.rules.NAME = "axis[,axis...]"` ("" replicates), e.g. `--config.mesh.rules.embed=` turns FSDP into plain
data parallelism of the optimizer state.
"""
import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from bmjax.errors import ConfigError
from bmjax.models import sharding

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

_MESH_AXES = ("data", "fsdp", "tensor", "sequence")


def rule_to_config(target) -> str:
    """The config string of a rule target: ("data", "fsdp") -> "data,fsdp", None -> ""."""
    if target is None:
        return ""
    return target if isinstance(target, str) else ",".join(target)


def parse_rule(name: str, text) -> str | tuple[str, ...] | None:
    """A config string -> rule target; raises ConfigError naming `mesh.rules.NAME` on an unknown mesh axis."""
    axes = tuple(a.strip() for a in (text or "").split(",") if a.strip())
    for axis in axes:
        if axis not in _MESH_AXES:
            raise ConfigError(f"mesh.rules.{name}", f"unknown mesh axis {axis!r}; allowed: {', '.join(_MESH_AXES)}")
    if len(set(axes)) != len(axes):
        raise ConfigError(f"mesh.rules.{name}", f"{text!r} names a mesh axis twice")
    return None if not axes else axes[0] if len(axes) == 1 else axes


def rules_from_config(mesh_cfg) -> tuple:
    """DEFAULT_RULES with `mesh.rules` applied (a config without `mesh.rules` gets the defaults)."""
    overrides = dict(mesh_cfg.get("rules") or {})
    rules = [(name, parse_rule(name, overrides.pop(name)) if name in overrides else target)
             for name, target in DEFAULT_RULES]
    rules += [(name, parse_rule(name, text)) for name, text in overrides.items()]
    return tuple(rules)


def logical_to_spec(names, rules=DEFAULT_RULES, mesh=None) -> P:
    """`sharding.logical_to_spec` (each mesh axis at most once, size-1 axes dropped) with the default rules."""
    return sharding.logical_to_spec(names, rules, mesh)


def shaped_spec(names, shape, mesh, rules=DEFAULT_RULES) -> P:
    """The PartitionSpec of an array of `shape` named `names`: the rules, then `sharding.fit_spec`."""
    return sharding.shaped_spec(names, shape, mesh, rules)


def leaf_sharding(names, shape, mesh, rules=DEFAULT_RULES) -> NamedSharding:
    return NamedSharding(mesh, shaped_spec(names, shape, mesh, rules) if names else P())


def variable_names(leaf: nnx.Variable):
    """The logical axis names an nnx Variable carries (None when it has none)."""
    metadata = leaf.get_metadata()
    return metadata.get("out_sharding") or metadata.get("sharding_names")


def state_shardings(state, mesh, rules=DEFAULT_RULES):
    """NamedSharding for every leaf of a pytree holding nnx Variables (params, optimizer moments, ...).

    A Variable is laid out by its logical names; any other leaf (step counters, scalars) is replicated.
    """

    def one(leaf):
        if not isinstance(leaf, nnx.Variable):
            return NamedSharding(mesh, P())
        return leaf.replace(leaf_sharding(variable_names(leaf), leaf.get_raw_value().shape, mesh, rules))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def spec_table(state, mesh, rules=DEFAULT_RULES) -> dict[str, tuple]:
    """{"blocks.0.attn.query.kernel": (shape, logical names, PartitionSpec)} for every Variable: what to print
    when asking "where does this parameter live?"."""
    table = {}
    leaves = jax.tree_util.tree_leaves_with_path(state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    for path, leaf in leaves:
        if not isinstance(leaf, nnx.Variable):
            continue
        key = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        shape = leaf.get_raw_value().shape
        names = variable_names(leaf)
        table[key] = (shape, names, leaf_sharding(names, shape, mesh, rules).spec)
    return table


def indivisible(state, mesh, rules=DEFAULT_RULES) -> list[tuple[str, str, int, tuple[str, ...], int]]:
    """(parameter, logical axis, its size, mesh axes, ways) for every dimension of a Variable that the rules
    shard but the mesh axes do not divide: `sharding.fit_spec` keeps such a dimension whole on every device."""
    found = []
    for key, (shape, names, _) in spec_table(state, mesh, rules).items():
        if not names:
            continue
        for dim, name, entry in zip(shape, names, logical_to_spec(names, rules, mesh)):
            axes = sharding.spec_axes(entry)
            ways = 1
            for axis in axes:
                ways *= mesh.shape[axis]
            if dim % ways:
                found.append((key, name, dim, axes, ways))
    return found


def batch_sharding(mesh, rank: int = 2, rules=DEFAULT_RULES) -> NamedSharding:
    """Batches are [batch, length, ...]: the batch axis over data and fsdp, length over sequence."""
    names = ("batch", "length") + (None,) * (rank - 2)
    return NamedSharding(mesh, logical_to_spec(names[:rank], rules, mesh))
