"""Which rows of each global batch a process loads, read off the batch sharding (bmjax/parallel/batches.py).

The 8 fake devices are split between pretended processes (devices 0-3 and 4-7, or pairs), so layouts of two and
four hosts are checked in one process; tests/test_multihost.py runs real processes on three of them. Also: arrays
without a token axis (MLM positions, labels) are split over their rows only, so BERT trains on a mesh whose
sequence axis does not divide its number of predicted positions.
"""

import jax
import pytest
from jax.sharding import PartitionSpec as P

from bmjax.defaults import base_config
from bmjax.errors import ConfigError
from bmjax.parallel import batches
from bmjax.parallel import mesh as mesh_lib
from bmjax.parallel import rules as rules_lib
from helpers.configs import load_config
from helpers.metrics import read_rows


def sharding_of(rank=2, rules=None, **sizes):
    config = base_config()
    config.mesh.update(dict(data=1, fsdp=1, tensor=1, sequence=1), **sizes)
    if rules:
        config.mesh.rules.update(rules)
    mesh = mesh_lib.make_mesh(config.mesh)
    return rules_lib.batch_sharding(mesh, rank, rules_lib.rules_from_config(config.mesh))


# (mesh sizes, rule overrides, devices per pretended process, the (index, count) each process is given)
LAYOUTS = {
    "data8 over 2 hosts": (dict(data=8), None, 4, [(0, 2), (1, 2)]),
    "tensor8 over 2 hosts": (dict(tensor=8), None, 4, [(0, 1), (0, 1)]),
    "sequence8 over 2 hosts": (dict(sequence=8), None, 4, [(0, 1), (0, 1)]),
    "fsdp8, batch over data only": (dict(fsdp=8), dict(batch="data"), 4, [(0, 1), (0, 1)]),
    "data2 x tensor4 over 4 hosts": (dict(data=2, tensor=4), None, 2, [(0, 2), (0, 2), (1, 2), (1, 2)]),
    "data4 x sequence2 over 4 hosts": (dict(data=4, sequence=2), None, 2, [(0, 4), (1, 4), (2, 4), (3, 4)]),
}


@pytest.mark.parametrize("sizes,rules,per_process,expected", LAYOUTS.values(), ids=list(LAYOUTS))
def test_each_process_loads_the_rows_its_devices_hold(sizes, rules, per_process, expected):
    sharding = sharding_of(rules=rules, **sizes)
    process_of = lambda device: device.id // per_process  # noqa: E731
    got = [batches.row_shard(sharding, p, process_of) for p in range(8 // per_process)]
    assert [(s.index, s.count) for s in got] == expected
    # The pipeline's group i of n is rows [i * 16/n, (i+1) * 16/n): exactly what the process's devices hold.
    for p, shard in enumerate(got):
        held = set()
        for device, (rows, *_) in sharding.devices_indices_map((16, 8)).items():
            if process_of(device) == p:
                held.update(range(*rows.indices(16)))
        size = 16 // shard.count
        assert held == set(range(shard.index * size, (shard.index + 1) * size))


def test_a_layout_whose_rows_no_pipeline_split_can_feed_is_refused():
    """Batch over (fsdp, data) with data across the two hosts: each host holds every other row block."""
    sharding = sharding_of(rules=dict(batch="fsdp,data"), data=2, fsdp=4)
    with pytest.raises(ConfigError) as error:
        batches.row_shard(sharding, 0, lambda device: device.id // 4)
    assert error.value.key == "mesh.rules.batch" and "not one consecutive range" in str(error.value)


def test_arrays_without_a_token_axis_are_split_over_rows_only():
    sharding = sharding_of(fsdp=4, sequence=2)
    assert batches.array_sharding(sharding, (16, 64), 64).spec == P("fsdp", "sequence")
    assert batches.array_sharding(sharding, (16, 9), 64).spec == P("fsdp", None)  # MLM positions
    assert batches.array_sharding(sharding, (16,), 64).spec == P("fsdp")  # labels
    stacked = jax.sharding.NamedSharding(sharding.mesh, P(None, *sharding.spec))  # train.steps_per_call > 1
    assert batches.array_sharding(stacked, (2, 16, 64), 64).spec == P(None, "fsdp", "sequence")
    assert batches.array_sharding(stacked, (2, 16, 9), 64).spec == P(None, "fsdp", None)


@pytest.mark.slow  # trains
def test_bert_pretrains_on_a_sequence_parallel_mesh(tmp_path):
    """The issue's run: configs/bert/tiny.py, seq_len 64 (9 predicted positions), fsdp=4 x sequence=2."""
    from bmjax.train.loop import train_and_evaluate

    config = load_config("configs/bert/tiny.py")
    config.data.update(seq_len=64, batch_size=16)
    config.mesh.update(data=1, fsdp=4, sequence=2)
    config.model.update(num_layers=1, max_len=64)
    config.train.update(steps=2, log_every=1, eval_every=2, eval_steps=1, ckpt_every=2, progress=False)
    train_and_evaluate(config, str(tmp_path))
    rows = read_rows(tmp_path)
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2]
    assert all(r["loss"] > 0 for r in rows)
