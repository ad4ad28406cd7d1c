"""The checkpoint manager: async save of the train state and the data iterator, and the restore policy (newest
complete step first; what orbax marks incomplete is set aside, anything else stops the run unchanged)."""
import pathlib
import re
import shutil

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from bmjax.checkpoint.packing import (SavePlan, check_compatible, describe, layout_of, named_leaves, replicated,
                                      saved_shapes, unpack)
from bmjax.errors import ConfigError

INCOMPLETE_DIR = "checkpoints.incomplete"


class RestoreError(Exception):
    """A complete-looking checkpoint could not be restored; nothing on disk was changed."""


class Checkpointer:
    def __init__(self, workdir: pathlib.Path, *, keep: int | None, keep_steps=(), async_save: bool = True,
                 read_only: bool = False):
        """Keeps the newest `keep` checkpoints (None: all) and every one of `keep_steps` (train.ckpt_steps).
        `read_only`: another run's checkpoints, restored from and never saved, deleted or cleaned up."""
        workdir = pathlib.Path(workdir)
        self.directory = (workdir / "checkpoints").resolve()
        self.incomplete_directory = (workdir / INCOMPLETE_DIR).resolve()
        kept = ocp.checkpoint_managers
        options = ocp.CheckpointManagerOptions(
            preservation_policy=kept.AnyPreservationPolicy([kept.LatestN(keep), kept.CustomSteps(list(keep_steps))]),
            enable_async_checkpointing=async_save,
            create=not read_only,
            read_only=read_only,
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
        expected = named_leaves(abstract_state)
        check_compatible(saved_shapes(layout), describe(expected), self.path(step))
        whole = replicated(expected.values())
        groups = {
            "packed": {dtype: jax.ShapeDtypeStruct((size,), dtype, sharding=whole)
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
        return layout_of(saved)

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
            return step, self.restore_complete(step, abstract_state, data_iter)
        return None, None

    def restore_complete(self, step: int, abstract_state, data_iter):
        """The state of `step`, a checkpoint `missing_part` finds complete; RestoreError (changing no file) when it
        cannot be read, ConfigError when another config or process count wrote it. Moves `data_iter`."""
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
        return state

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
# written on its own: for arrays of a few kB that multiplies the per-array cost, and the loop waits for it (the
# measured cost: tools/README.md, bench_ckpt.py). Slices below this size stay whole.
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


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip().splitlines()
    line = text[0].split(" See full TensorStore details")[0] if text else ""
    return line if len(line) <= limit else line[:limit] + "..."
