"""How a train state is laid out in a checkpoint: every array named by its path, the small ones packed into one
flat array per dtype (orbax's cost is per array, not per byte: see PACK_MAX_BYTES), and the layout that says
where each lies, kept in orbax's metadata of the `state` item."""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from bmjax.errors import ConfigError


def check_compatible(saved: dict, expected: dict, where: pathlib.Path):
    """Raise a ConfigError naming the first array whose presence, shape or dtype differs."""
    # Parameters first: a different model shows there before it shows in the optimizer state.
    for name in sorted(set(saved) | set(expected), key=lambda n: (not n.startswith("params/"), n)):
        if name not in saved or name not in expected:
            what = "lacks" if name not in saved else "has an extra array"
            raise ConfigError("workdir", f"checkpoint {where} {what} {name!r}: it was written by a different "
                                         "model or optimizer config; use a new --workdir or the config that wrote it")
        if saved[name] != expected[name]:
            raise ConfigError("workdir", f"checkpoint {where} holds {name} as {saved[name]}, the config makes "
                                         f"{expected[name]}; use a new --workdir or the config that wrote it")


def path_name(path) -> str:
    """'params/blocks/0/attn/query/kernel/value' for a pytree key path (nnx.State, dicts, dataclasses)."""
    return "/".join(str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k)))) for k in path)


def named_leaves(tree) -> dict:
    """{path_name: leaf, ...} in the tree's own leaf order."""
    return {path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def describe(named: dict) -> dict:
    """{name: 'float32[64, 2, 32]'}: what check_compatible compares."""
    return {name: f"{np.dtype(leaf.dtype).name}{list(leaf.shape)}" for name, leaf in named.items()}


def saved_shapes(layout: dict) -> dict:
    """The same description, read from a checkpoint's layout."""
    return {name: f"{entry['dtype']}{list(entry['shape'])}" for name, entry in layout["arrays"].items()}


# orbax spends a fixed amount of CPU on every array it saves, whatever the array's size, so a model's many small
# arrays (params and Adam's two moments: 112 for the tiny GPT) cost far more than their bytes, and on a CPU host
# that comes out of the training step (the measured cost: tools/README.md, bench_ckpt.py). Arrays up to this
# size are packed into one array per dtype; larger ones are saved as they are, sharded, each process writing its
# own shards.
PACK_MAX_BYTES = 1 << 20


def make_layout(named: dict) -> dict:
    """What goes where: each small array's place in its dtype's pack, each large one's key in `arrays`."""
    packs, arrays = {}, {}
    for name, leaf in named.items():
        dtype = np.dtype(leaf.dtype).name
        entry = {"dtype": dtype, "shape": list(leaf.shape)}
        if leaf.size * np.dtype(leaf.dtype).itemsize <= PACK_MAX_BYTES:
            entry.update(pack=dtype, offset=packs.get(dtype, 0))
            packs[dtype] = entry["offset"] + int(leaf.size)
        else:
            entry["key"] = name.replace("/", ".")
        arrays[name] = entry
    return {"packs": packs, "arrays": arrays}


def layout_of(tree_metadata) -> dict:
    layout = getattr(tree_metadata, "custom_metadata", None)
    if not layout or "arrays" not in layout:
        raise ValueError("the state's metadata (its layout) is missing")
    return layout


class SavePlan:
    """How one train state's structure is saved: its layout, which leaves are packed, and the jitted packing."""

    def __init__(self, state):
        named = named_leaves(state)
        self.layout = make_layout(named)
        entries = list(self.layout["arrays"].values())
        self.packed_leaves = [i for i, entry in enumerate(entries) if "pack" in entry]
        self.large_leaves = [(i, entry["key"]) for i, entry in enumerate(entries) if "key" in entry]
        groups = {dtype: [] for dtype in self.layout["packs"]}
        for position, i in enumerate(self.packed_leaves):
            groups[entries[i]["pack"]].append(position)

        def concatenate(small):  # {dtype: the small leaves raveled and concatenated in layout order}
            return {dtype: jnp.concatenate([jnp.ravel(small[p]) for p in positions])
                    for dtype, positions in groups.items()}

        self._pack = jax.jit(concatenate, out_shardings=replicated(named.values()))

    def item(self, leaves) -> dict:
        """What orbax saves: {"packed": {dtype: 1-D array}, "arrays": {key: large leaf}}, empty groups left out."""
        item = {}
        if self.packed_leaves:
            item["packed"] = self._pack(tuple(leaves[i] for i in self.packed_leaves))
        if self.large_leaves:
            item["arrays"] = {key: leaves[i] for i, key in self.large_leaves}
        return item


def unpack(packed: dict, layout: dict, expected: dict) -> dict:
    """{name: array} of the packed arrays, each laid out as `expected[name]` (a ShapeDtypeStruct) says."""
    names = [name for name, entry in layout["arrays"].items() if "pack" in entry]
    if not names:
        return {}
    fallback = replicated(expected.values())

    def split(packs):
        return tuple(unpacked(packs, layout["arrays"][name]) for name in names)

    shardings = tuple(getattr(expected[name], "sharding", None) or fallback for name in names)
    return dict(zip(names, jax.jit(split, out_shardings=shardings)(packed)))


def unpacked(packs: dict, entry: dict):
    """One packed array, cut out of its pack (a jax or numpy array) and given its shape back."""
    size = int(np.prod(entry["shape"], dtype=np.int64))
    return packs[entry["pack"]][entry["offset"]:entry["offset"] + size].reshape(entry["shape"])


def replicated(leaves):
    """A sharding that puts a whole array on every device the leaves live on (one device if none says)."""
    for leaf in leaves:
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, jax.sharding.NamedSharding):
            return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
        if sharding is not None and len(sharding.device_set) == 1:
            return sharding
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])
