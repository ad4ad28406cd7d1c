"""Offline readers: a checkpoint's arrays by name, without a train state or a checkpoint manager (tools, tests,
`train.init_from`, bmjax-convert)."""
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp

from bmjax.checkpoint.packing import check_compatible, describe, layout_of, named_leaves, unpacked


def read_arrays(step_dir, prefix: str = "") -> dict:
    """{name: np.ndarray} of the arrays of the checkpoint in `step_dir` whose names start with `prefix`
    ('params/' for the parameters alone: the optimizer state's large arrays stay on disk), read whole by this
    process. For tools that look into a checkpoint without a train state to restore onto."""
    item_dir = pathlib.Path(step_dir) / "state"
    handler = ocp.PyTreeCheckpointHandler()  # the item's own handler: a step folder's extra files are not needed
    layout = layout_of(handler.metadata(item_dir))
    wanted = {name: entry for name, entry in layout["arrays"].items() if name.startswith(prefix)}
    item = {}
    for entry in wanted.values():
        group, key = ("packed", entry["pack"]) if "pack" in entry else ("arrays", entry["key"])
        item.setdefault(group, {})[key] = np.zeros((), entry["dtype"])
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
    saved = handler.restore(item_dir, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args,
                                                                  partial_restore=True))
    handler.close()
    return {name: unpacked(saved["packed"], entry) if "pack" in entry else saved["arrays"][entry["key"]]
            for name, entry in wanted.items()}


def read_tree(step_dir, abstract_tree, prefix: str = ""):
    """`abstract_tree` filled with the checkpoint's arrays named `prefix` + each leaf's name (numpy arrays).

    A leaf the checkpoint lacks, or holds with another shape or dtype, is a ConfigError naming it.
    """
    saved = read_arrays(step_dir, prefix)
    expected = {prefix + name: leaf for name, leaf in named_leaves(abstract_tree).items()}
    check_compatible(describe({name: saved[name] for name in expected if name in saved}), describe(expected),
                     pathlib.Path(step_dir))
    leaves = [saved[name] for name in expected]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(abstract_tree), leaves)
