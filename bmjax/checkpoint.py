"""Checkpoints on orbax: the train state and the data iterator's position, saved asynchronously.

A checkpoint is `workdir/checkpoints/<step>/` with two items: `state` (params, optimizer state, step; every
process writes its own shards) and `data` (the grain iterator state, one file per process). Restoring onto an
abstract state that carries shardings lays the arrays out for the current mesh, whatever mesh saved them.
"""
import pathlib

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, workdir: pathlib.Path, *, keep: int, async_save: bool = True):
        self.directory = (workdir / "checkpoints").resolve()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler()},
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iter, *, force: bool = False) -> bool:
        """Start writing step `step`; returns at once while the write finishes in the background."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iter),
        )
        return self.manager.save(step, args=args, force=force)

    def restore(self, step: int, abstract_state, data_iter):
        """Restore `step` onto `abstract_state`'s shapes, dtypes and shardings; moves `data_iter` in place."""
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=grain.checkpoint.CheckpointRestore(data_iter),
        )
        restored = self.manager.restore(step, args=args)
        return restored["state"]

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree, shardings):
    """ShapeDtypeStructs with the given shardings: the target restore lays arrays out to."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
