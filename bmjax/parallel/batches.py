"""Feeding a global batch from several processes: which rows each process loads, and the global arrays.

A batch is laid out like `rules.batch_sharding`: rows over the mesh axes of the `batch` rule, tokens over those
of `length`. A process must load exactly the rows its own devices hold. Where the `batch` axes run across the
processes (the data-parallel layout), each process holds different rows; where a model axis (tensor, sequence)
or a batch rule that leaves some axis out crosses the processes, several processes hold the same rows and must
load the same ones. So the rows come from the sharding: `row_shard` says which of n equal, consecutive groups of
rows this process loads (n = the number of distinct groups across processes), and the input pipelines are asked
for that group as their (process_index, process_count). A layout where some process holds rows that are not one
consecutive range cannot be fed so; `row_shard` refuses it with a ConfigError (validation calls it).

An array's axes are [batch, length, ...] when its second axis is the token axis (as long as data.seq_len), else
[batch, ...]: MLM's selected positions [batch, P] and labels [batch] are split over their rows only.
"""
import collections
import dataclasses
import functools

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from bmjax.errors import ConfigError
from bmjax.parallel import rules as rules_lib


@dataclasses.dataclass(frozen=True)
class RowShard:
    """This process loads rows [index * b, (index + 1) * b) of every global batch, b = batch_size // count."""

    index: int
    count: int


def _row_axis(sharding: NamedSharding) -> int:
    """Batch shardings are [batch, length] or, for several fused steps, [steps, batch, length]."""
    return len(sharding.spec) - 2


def rows_by_process(sharding: NamedSharding, process_of=lambda device: device.process_index) -> dict[int, set]:
    """{process: the rows its devices hold} of a batch with one row per device ([num_devices, ...]), so every
    device's share is whole rows; `process_of` lets tests pretend the devices belong to several processes."""
    row_entry = tuple(sharding.spec)[_row_axis(sharding)]
    rows_only = NamedSharding(sharding.mesh, P(row_entry))
    num_rows = sharding.mesh.devices.size
    held = collections.defaultdict(set)
    for device, (rows,) in rows_only.devices_indices_map((num_rows,)).items():
        held[process_of(device)].update(range(*rows.indices(num_rows)))
    return dict(held)


def row_shard(sharding: NamedSharding, process_index: int | None = None,
              process_of=lambda device: device.process_index) -> RowShard:
    """Which consecutive group of rows `process_index` (default: this process) loads; raises ConfigError where
    the processes' rows are not equal, consecutive groups that are either disjoint or the same."""
    held = rows_by_process(sharding, process_of)
    num_rows = sharding.mesh.devices.size
    groups = {}
    for process, rows in sorted(held.items()):
        first, last = min(rows), max(rows)
        if len(rows) != last - first + 1:
            axes = tuple(sharding.spec)[_row_axis(sharding)]
            raise ConfigError("mesh.rules.batch", f"process {process}'s devices hold rows that are not one consecutive "
                                                  f"range of the batch (rows over {axes!r}); list the mesh axes that "
                                                  f"cross processes first")
        groups[process] = (first, last + 1)
    distinct = sorted(set(groups.values()))
    size = distinct[0][1] - distinct[0][0]
    if distinct != [(i * size, (i + 1) * size) for i in range(num_rows // size)]:
        raise ConfigError("mesh.rules.batch", f"the processes hold overlapping, unequal row ranges of the batch "
                                              f"({distinct}, in shares of {num_rows}); no input split feeds that")
    process_index = jax.process_index() if process_index is None else process_index
    return RowShard(groups[process_index][0] // size, num_rows // size)


def input_shard(mesh, rules) -> RowShard:
    """This process's rows of the batches laid out by `rules` on `mesh`: what to pass the input pipeline as its
    (process_index, process_count)."""
    return row_shard(rules_lib.batch_sharding(mesh, rules=rules))


@functools.lru_cache(maxsize=16)
def _this_process(sharding: NamedSharding) -> RowShard:
    return row_shard(sharding)


def array_sharding(sharding: NamedSharding, shape, seq_len: int) -> NamedSharding:
    """The layout of one batch array of `shape` under the batch `sharding`: its leading axes up to the rows take the
    sharding's entries, the next one the `length` entry only when it is the token axis, the rest stay whole."""
    spec = tuple(sharding.spec)
    row_axis = _row_axis(sharding)
    entries = list(spec[:row_axis + 1])
    if len(shape) > row_axis + 1:
        entries.append(spec[row_axis + 1] if shape[row_axis + 1] == seq_len else None)
    return NamedSharding(sharding.mesh, P(*entries))


def to_global(batch: dict, sharding: NamedSharding, seq_len: int) -> dict:
    """This process's rows of a batch (numpy, from a pipeline asked for `row_shard(sharding)`) -> the global,
    sharded jax.Arrays; processes holding the same rows pass the same rows."""
    shard = _this_process(sharding)
    row_axis = _row_axis(sharding)

    def one(value):
        value = np.asarray(value)
        global_shape = list(value.shape)
        global_shape[row_axis] *= shard.count
        return jax.make_array_from_process_local_data(array_sharding(sharding, value.shape, seq_len), value,
                                                      tuple(global_shape))

    return {key: one(value) for key, value in batch.items()}
