"""Checkpoints on orbax: the train state and the data iterator's position, saved asynchronously.

A checkpoint is `workdir/checkpoints/<step>/` with two items:
- `state`: the arrays of the TrainState (step, params, optimizer state, skipped-update count). Arrays over
  PACK_MAX_BYTES are saved as they are, each process writing its own shards; the small ones (biases, norms,
  counters: most arrays by number, few bytes) are packed into one flat array per dtype first, because orbax
  spends the same few milliseconds of CPU on every array whatever its size (see PACK_MAX_BYTES).
  There is no RNG state to save: every random number of step s comes from `fold_in(key(seed), s)`, so the
  step is the whole RNG state.
  The state's layout, kept in orbax's metadata of the item, names every array of the state
  ('params/blocks/0/attn/query/kernel/value') with its dtype and shape and says where a packed one lies in
  its pack; `read_arrays` reads a checkpoint's arrays by these names.
- `data`: the grain iterator's position, one small JSON file per process, so a resumed run reads exactly the
  batches the uninterrupted run would have read.

Saving is asynchronous: `save` returns once the arrays are copied off the accelerator, and orbax writes them
in a background thread while training goes on. orbax writes into `<step>.orbax-checkpoint-tmp-*` and renames
the folder when every item is written, so a save cut short by a kill never looks like a checkpoint. A SIGKILL
therefore loses the steps since the newest *finished* save: at most train.ckpt_every, plus the steps taken
while that save was still being written, if the kill came during it.

Restoring goes newest-first and takes the newest *complete* checkpoint. A step folder that orbax's own
markers say was never finished (its commit marker, its `_CHECKPOINT_METADATA`, an item folder, the state's
`_METADATA` or every process file of the data item missing: a save cut short, a copy cut short) is reported in
one line, moved to `workdir/checkpoints.incomplete/<step>` (so a later save of that step does not collide with
it and nothing is deleted), and the next older one is tried. Any other failure to restore a complete-looking
step (an I/O error, out of memory, a file orbax cannot parse, a changed orbax or device count) raises
RestoreError and changes no file: such a failure may pass, and the checkpoint may be fine, so only the user
can decide to set it aside. A checkpoint whose arrays do not match the config's shapes is not incomplete but
written by another config: that is a ConfigError, never skipped.
(orbax stores no checksums: bytes overwritten in place, at the same length, are not detected.)
Restoring onto an abstract state that carries shardings lays the arrays out for the current mesh, whatever
mesh saved them.
"""
import pathlib
import re
import shutil

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from bmjax.errors import ConfigError

INCOMPLETE_DIR = "checkpoints.incomplete"


class RestoreError(Exception):
    """A complete-looking checkpoint could not be restored; nothing on disk was changed."""


class Checkpointer:
    def __init__(self, workdir: pathlib.Path, *, keep: int, async_save: bool = True):
        workdir = pathlib.Path(workdir)
        self.directory = (workdir / "checkpoints").resolve()
        self.incomplete_directory = (workdir / INCOMPLETE_DIR).resolve()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={"state": _state_handler(), "data": grain.checkpoint.CheckpointHandler()},
        )
        self._plans = {}

    def path(self, step: int) -> pathlib.Path:
        return self.directory / str(step)

    def latest_step(self) -> int | None:
        """The newest step folder orbax finalised (it may still have been damaged since)."""
        return self.manager.latest_step()

    def save(self, step: int, state, data_iter, *, force: bool = False) -> bool:
        """Start writing step `step`; returns at once while the write finishes in the background.

        The data iterator's state is taken now, synchronously (a small JSON), so advancing the iterator
        afterwards does not change what is saved.
        """
        leaves, treedef = jax.tree.flatten(state)
        key = (treedef, tuple((leaf.shape, leaf.dtype, leaf.sharding) for leaf in leaves))
        if key not in self._plans:  # one per run: working out names and layout costs more than a save's dispatch
            self._plans[key] = SavePlan(state)
        plan = self._plans[key]
        args = ocp.args.Composite(
            state=ocp.args.PyTreeSave(plan.item(leaves), custom_metadata=plan.layout),
            data=grain.checkpoint.CheckpointSave(data_iter),
        )
        return self.manager.save(step, args=args, force=force)

    def restore(self, step: int, abstract_state, data_iter):
        """Restore `step` onto `abstract_state`'s shapes, dtypes and shardings; moves `data_iter` in place."""
        layout = self._read_layout(step)
        expected = _named_leaves(abstract_state)
        check_compatible(saved_shapes(layout), _describe(expected), self.path(step))
        replicated = _replicated(expected.values())
        groups = {
            "packed": {dtype: jax.ShapeDtypeStruct((size,), dtype, sharding=replicated)
                       for dtype, size in layout["packs"].items()},
            "arrays": {entry["key"]: expected[name] for name, entry in layout["arrays"].items() if "key" in entry},
        }
        target = {group: tree for group, tree in groups.items() if tree}
        args = ocp.args.Composite(
            state=ocp.args.PyTreeRestore(target, restore_args=ocp.checkpoint_utils.construct_restore_args(target)),
            data=grain.checkpoint.CheckpointRestore(data_iter),
        )
        restored = self.manager.restore(step, args=args)["state"]
        small = unpack(restored.get("packed", {}), layout, expected)
        leaves = [small[name] if name in small else restored["arrays"][layout["arrays"][name]["key"]]
                  for name in expected]
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(abstract_state), leaves)

    def _read_layout(self, step: int) -> dict:
        """The state's layout (see make_layout), from orbax's metadata of the state item."""
        metadata = self.manager.item_metadata(step)
        saved = metadata.get("state") if metadata is not None else None
        return _layout_of(saved)

    def restore_latest(self, abstract_state, data_iter, log=print):
        """(step, state) of the newest complete checkpoint, or (None, None) when there is none.

        Steps that orbax's markers show incomplete (see `missing_part`) are reported through `log` and set
        aside. Any other failure raises RestoreError, leaving every file as it was. `data_iter` is moved to the
        restored position.
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            missing = missing_part(self.path(step))
            if not _all_processes(missing is None):
                missing = missing or "another process's part is missing"
                moved = self._set_aside(step)
                log(f"skipping checkpoint {self.path(step)}: incomplete ({missing}); moved to {moved}")
                continue
            check_process_count(self.path(step))
            problem = None
            try:
                state = self.restore(step, abstract_state, data_iter)
                restored_step = int(jax.device_get(state.step))
                if restored_step != step:
                    problem = f"the state inside says step {restored_step}"
            except ConfigError:
                raise
            except Exception as e:  # noqa: BLE001  reported in one line; the files stay as they are
                problem = f"{type(e).__name__}: {_first_line(e)}"
            if not _all_processes(problem is None):
                problem = problem or "another process could not read its part"
                raise RestoreError(
                    f"could not restore checkpoint {self.path(step)} ({problem}); no file was changed. If the "
                    "failure passes (a file system hiccup, memory), run the same command again; if the checkpoint "
                    f"is damaged, move it out of {self.directory} and run again to resume from the one before")
            return step, state
        return None, None

    def _set_aside(self, step: int) -> pathlib.Path:
        """Move a damaged step out of orbax's sight (process 0 only), then re-read the step list."""
        target = self.incomplete_directory / str(step)
        if jax.process_index() == 0:
            suffix = 1
            while target.exists():
                target = self.incomplete_directory / f"{step}.{suffix}"
                suffix += 1
            self.incomplete_directory.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.path(step)), str(target))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"bmjax: set aside checkpoint {step}")
        self.manager.reload()
        return target

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


# orbax splits every replicated array (the parameters under data parallelism) into one slice per replica, each
# written on its own: for arrays of a few kB that multiplies the per-array cost (on two CPU devices it more than
# doubled the time a save holds up the loop, 87 -> 220 ms for the tiny GPT). Slices below this size stay whole.
MIN_REPLICA_SLICE_BYTES = 16 << 20


def _state_handler() -> ocp.PyTreeCheckpointHandler:
    registry = ocp.type_handlers.create_type_handler_registry(
        (jax.Array, ocp.type_handlers.ArrayHandler(min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES)))
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def missing_part(step_dir: pathlib.Path) -> str | None:
    """What a finalised-looking step folder lacks by orbax's own markers, or None when nothing is missing.

    Only absence counts here: a file that is present but unreadable is not evidence that the save never
    finished, and is left to restore to report.
    """
    if not ocp.step.is_checkpoint_finalized(step_dir):
        return "no commit marker"
    required = ["_CHECKPOINT_METADATA", "state", "state/_METADATA", "data"]
    for part in required:
        if not (step_dir / part).exists():
            return f"{part} is missing"
    if not any((step_dir / "data").glob("process_*.json")):
        return "data/process_*.json is missing"
    return None


def check_process_count(step_dir: pathlib.Path):
    """A ConfigError when the step was written by another number of processes: each process saved its own data
    pipeline position, and those do not split or merge into another count."""
    counts = {int(m.group(1)) for p in (step_dir / "data").glob("process_*.json")
              if (m := re.fullmatch(r"process_\d+-of-(\d+)\.json", p.name))}
    if counts and counts != {jax.process_count()}:
        raise ConfigError("workdir", f"checkpoint {step_dir} was written by {max(counts)} process(es), this run has "
                                     f"{jax.process_count()}: each process's data position is saved apart; resume "
                                     "with the same number of processes (any mesh)")


def _all_processes(ok: bool) -> bool:
    """True when every process says ok: all of them must restore the same step (or all skip it)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.array([ok]))))


def abstract_like(tree, shardings):
    """ShapeDtypeStructs with the given shardings: the target restore lays arrays out to."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


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


def _named_leaves(tree) -> dict:
    """{path_name: leaf, ...} in the tree's own leaf order."""
    return {path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _describe(named: dict) -> dict:
    """{name: 'float32[64, 2, 32]'}: what check_compatible compares."""
    return {name: f"{np.dtype(leaf.dtype).name}{list(leaf.shape)}" for name, leaf in named.items()}


def saved_shapes(layout: dict) -> dict:
    """The same description, read from a checkpoint's layout."""
    return {name: f"{entry['dtype']}{list(entry['shape'])}" for name, entry in layout["arrays"].items()}


# orbax spends about 3 ms of CPU on every array it saves, whatever the array's size (1 array: 53 ms a save,
# 112: 352 ms, 300: 952 ms, measured on this project's 2-core machine), so a model's many small arrays cost far
# more than their bytes: the tiny GPT's 112 arrays (params and Adam's two moments) took ~400 ms of CPU a save,
# which on a CPU host comes out of the training step. Arrays up to this size are packed into one array per
# dtype (~80 ms); larger ones are saved as they are, sharded, each process writing its own shards.
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


def _layout_of(tree_metadata) -> dict:
    layout = getattr(tree_metadata, "custom_metadata", None)
    if not layout or "arrays" not in layout:
        raise ValueError("the state's metadata (its layout) is missing")
    return layout


class SavePlan:
    """How one train state's structure is saved: its layout, which leaves are packed, and the jitted packing."""

    def __init__(self, state):
        named = _named_leaves(state)
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

        self._pack = jax.jit(concatenate, out_shardings=_replicated(named.values()))

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
    fallback = _replicated(expected.values())

    def split(packs):
        return tuple(_unpacked(packs, layout["arrays"][name]) for name in names)

    shardings = tuple(getattr(expected[name], "sharding", None) or fallback for name in names)
    return dict(zip(names, jax.jit(split, out_shardings=shardings)(packed)))


def _unpacked(packs: dict, entry: dict):
    """One packed array, cut out of its pack (a jax or numpy array) and given its shape back."""
    size = int(np.prod(entry["shape"], dtype=np.int64))
    return packs[entry["pack"]][entry["offset"]:entry["offset"] + size].reshape(entry["shape"])


def _replicated(leaves):
    """A sharding that puts a whole array on every device the leaves live on (one device if none says)."""
    for leaf in leaves:
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, jax.sharding.NamedSharding):
            return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
        if sharding is not None and len(sharding.device_set) == 1:
            return sharding
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])


def read_arrays(step_dir, prefix: str = "") -> dict:
    """{name: np.ndarray} of the arrays of the checkpoint in `step_dir` whose names start with `prefix`
    ('params/' for the parameters alone: the optimizer state's large arrays stay on disk), read whole by this
    process. For tools that look into a checkpoint without a train state to restore onto."""
    item_dir = pathlib.Path(step_dir) / "state"
    handler = ocp.PyTreeCheckpointHandler()  # the item's own handler: a step folder's extra files are not needed
    layout = _layout_of(handler.metadata(item_dir))
    wanted = {name: entry for name, entry in layout["arrays"].items() if name.startswith(prefix)}
    item = {}
    for entry in wanted.values():
        group, key = ("packed", entry["pack"]) if "pack" in entry else ("arrays", entry["key"])
        item.setdefault(group, {})[key] = np.zeros((), entry["dtype"])
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
    saved = handler.restore(item_dir, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args,
                                                                  partial_restore=True))
    handler.close()
    return {name: _unpacked(saved["packed"], entry) if "pack" in entry else saved["arrays"][entry["key"]]
            for name, entry in wanted.items()}


def read_tree(step_dir, abstract_tree, prefix: str = ""):
    """`abstract_tree` filled with the checkpoint's arrays named `prefix` + each leaf's name (numpy arrays).

    A leaf the checkpoint lacks, or holds with another shape or dtype, is a ConfigError naming it.
    """
    saved = read_arrays(step_dir, prefix)
    expected = {prefix + name: leaf for name, leaf in _named_leaves(abstract_tree).items()}
    check_compatible(_describe({name: saved[name] for name in expected if name in saved}), _describe(expected),
                     pathlib.Path(step_dir))
    leaves = [saved[name] for name in expected]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(abstract_tree), leaves)


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip().splitlines()
    line = text[0].split(" See full TensorStore details")[0] if text else ""
    return line if len(line) <= limit else line[:limit] + "..."
