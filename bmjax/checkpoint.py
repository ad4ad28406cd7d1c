"""Checkpoints on orbax: the train state and the data iterator's position, saved asynchronously.

A checkpoint is `workdir/checkpoints/<step>/` with two items:
- `state`: the TrainState (step, params, optimizer state, skipped-update count); every process writes its own
  shards. There is no RNG state to save: every random number of step s comes from `fold_in(key(seed), s)`,
  so the step is the whole RNG state.
- `data`: the grain iterator's position, one small JSON file per process, so a resumed run reads exactly the
  batches the uninterrupted run would have read.

Saving is asynchronous: `save` returns once the arrays are copied off the accelerator, and orbax writes them
in a background thread while training goes on. orbax writes into `<step>.orbax-checkpoint-tmp-*` and renames
the folder when every item is written, so a save cut short by a kill never looks like a checkpoint. A SIGKILL
therefore loses the steps since the newest *finished* save: at most train.ckpt_every, plus the steps taken
while that save was still being written, if the kill came during it.

Restoring goes newest-first and takes the newest *complete* checkpoint. A step folder whose files were
truncated or deleted (a disk filling up, a copy cut short, a hand edit) fails to read; it is reported in one
line, moved to `workdir/checkpoints.incomplete/<step>` (so a later save of that step does not collide with
it and nothing is deleted), and the next older one is tried. A checkpoint whose arrays do not match the
config's shapes is not incomplete but written by another config: that is a ConfigError, never skipped.
(orbax stores no checksums: bytes overwritten in place, at the same length, are not detected.)
Restoring onto an abstract state that carries shardings lays the arrays out for the current mesh, whatever
mesh saved them.
"""
import pathlib
import shutil

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from bmjax.errors import ConfigError

INCOMPLETE_DIR = "checkpoints.incomplete"


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
        args = ocp.args.Composite(
            state=ocp.args.PyTreeSave(state),
            data=grain.checkpoint.CheckpointSave(data_iter),
        )
        return self.manager.save(step, args=args, force=force)

    def restore(self, step: int, abstract_state, data_iter):
        """Restore `step` onto `abstract_state`'s shapes, dtypes and shardings; moves `data_iter` in place."""
        args = ocp.args.Composite(
            state=ocp.args.PyTreeRestore(abstract_state,
                                         restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state)),
            data=grain.checkpoint.CheckpointRestore(data_iter),
        )
        restored = self.manager.restore(step, args=args)
        return restored["state"]

    def restore_latest(self, abstract_state, data_iter, log=print):
        """(step, state) of the newest complete checkpoint, or (None, None) when there is none.

        Incomplete checkpoints on the way are reported through `log` and set aside. `data_iter` is moved to
        the restored position.
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            problem = self._read_problem(step, abstract_state)
            if problem is None:
                try:
                    state = self.restore(step, abstract_state, data_iter)
                    restored_step = int(jax.device_get(state.step))
                    if restored_step != step:
                        raise ValueError(f"the state inside says step {restored_step}")
                except Exception as e:  # noqa: BLE001  any failure to read the files means the step is damaged
                    problem = f"{type(e).__name__}: {_first_line(e)}"
            if _all_processes(problem is None):
                return step, state
            problem = problem or "another process could not read its part"
            moved = self._set_aside(step)
            log(f"skipping checkpoint {self.path(step)}: incomplete or unreadable ({problem}); moved to {moved}")
        return None, None

    def _read_problem(self, step: int, abstract_state) -> str | None:
        """Why step `step` cannot be read (None when its metadata reads), or a ConfigError if it is another
        config's checkpoint."""
        try:
            metadata = self.manager.item_metadata(step)
            saved = metadata.get("state") if metadata is not None else None
        except Exception as e:  # noqa: BLE001  unreadable metadata: a damaged step
            return f"{type(e).__name__}: {_first_line(e)}"
        if saved is None:
            return "the state's metadata is missing"
        check_compatible(_flat_shapes(getattr(saved, "tree", saved)), _flat_shapes(abstract_state),
                         self.path(step))
        return None

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


def _flat_shapes(tree) -> dict:
    """{'params/blocks/0/attn/query/kernel/value': 'float32[64, 2, 32]', ...} for arrays and array metadata.

    Works on both a pytree of arrays/ShapeDtypeStructs and orbax's nested dict/list metadata, so the two can
    be compared name by name.
    """
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not hasattr(leaf, "shape"):
            continue
        name = "/".join(str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k)))) for k in path)
        flat[name] = f"{np.dtype(leaf.dtype).name}{list(leaf.shape)}"
    return flat


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= limit else line[:limit] + "..."
