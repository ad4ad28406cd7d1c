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
from bmjax.checkpoint.manager import (INCOMPLETE_DIR, Checkpointer, RestoreError, abstract_like,
                                      check_process_count, missing_part)
from bmjax.checkpoint.packing import PACK_MAX_BYTES, path_name
from bmjax.checkpoint.readers import read_arrays, read_tree

__all__ = ["INCOMPLETE_DIR", "PACK_MAX_BYTES", "Checkpointer", "RestoreError", "abstract_like", "check_process_count",
           "missing_part", "path_name", "read_arrays", "read_tree"]
