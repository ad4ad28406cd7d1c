"""The checkpoint's layout: small arrays packed into one array per dtype (orbax's cost is per array), large
ones saved sharded as they are; restored bitwise onto any mesh, and readable by name without a train state."""
import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bmjax.checkpoint import PACK_MAX_BYTES, Checkpointer, read_arrays
from bmjax.train.step import TrainState

LARGE = (1024, 512)  # 2 MiB of float32: over PACK_MAX_BYTES, saved on its own


def make_state(mesh: Mesh, large_spec: P, step: int = 7) -> TrainState:
    keys = jax.random.split(jax.random.key(step), 4)
    large = jax.random.normal(keys[0], LARGE)
    params = {"embed": large, "bias": jax.random.normal(keys[1], (96,)), "scale": jnp.ones((8, 4), jnp.bfloat16)}
    opt_state = {"mu": jax.random.normal(keys[2], (96,)), "count": jnp.asarray(3, jnp.int32)}
    state = TrainState(step=jnp.asarray(step, jnp.int32), params=params, opt_state=opt_state, rest={},
                       skipped=jnp.asarray(1, jnp.int32))
    return jax.device_put(state, shardings(state, mesh, large_spec))


def shardings(state, mesh, large_spec):
    return jax.tree.map(lambda x: NamedSharding(mesh, large_spec if x.shape == LARGE else P()), state)


def abstract(state, mesh, large_spec):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state,
                        shardings(state, mesh, large_spec))


def numbers():
    return iter(grain.MapDataset.range(100).to_iter_dataset())


def save(tmp_path, state) -> Checkpointer:
    checkpointer = Checkpointer(tmp_path, keep=2)
    checkpointer.save(int(state.step), state, numbers())
    checkpointer.wait()
    return checkpointer


def test_small_arrays_are_packed_per_dtype_and_large_ones_kept_whole(tmp_path):
    assert LARGE[0] * LARGE[1] * 4 > PACK_MAX_BYTES
    mesh = Mesh(np.array(jax.devices()).reshape(8), ("fsdp",))
    save(tmp_path, make_state(mesh, P("fsdp", None))).close()
    saved = ocp.PyTreeCheckpointHandler().metadata(tmp_path / "checkpoints" / "7" / "state").tree
    assert sorted(saved["packed"]) == ["bfloat16", "float32", "int32"]
    assert list(saved["arrays"]) == ["params.embed"]
    assert saved["packed"]["float32"].shape == (96 + 96,)  # bias and mu
    assert saved["packed"]["int32"].shape == (3,)  # step, skipped and the optimizer's count


def test_restore_onto_another_mesh_is_bitwise_and_laid_out_for_it(tmp_path):
    devices = np.array(jax.devices())
    state = make_state(Mesh(devices.reshape(8), ("fsdp",)), P("fsdp", None))
    save(tmp_path, state).close()

    mesh = Mesh(devices.reshape(2, 4), ("data", "tensor"))
    target = abstract(state, mesh, P(None, "tensor"))
    data = numbers()
    step, restored = Checkpointer(tmp_path, keep=2).restore_latest(target, data)
    assert step == 7
    for got, want, spec in zip(jax.tree.leaves(restored), jax.tree.leaves(state), jax.tree.leaves(target)):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert got.sharding.is_equivalent_to(spec.sharding, got.ndim)


def test_read_arrays_by_name_and_prefix(tmp_path):
    mesh = Mesh(np.array(jax.devices()).reshape(8), ("fsdp",))
    state = make_state(mesh, P("fsdp", None))
    save(tmp_path, state).close()
    step_dir = tmp_path / "checkpoints" / "7"

    everything = read_arrays(step_dir)
    assert sorted(everything) == ["opt_state/count", "opt_state/mu", "params/bias", "params/embed", "params/scale",
                                  "skipped", "step"]
    assert int(everything["step"]) == 7 and int(everything["opt_state/count"]) == 3
    params = read_arrays(step_dir, "params/")
    assert sorted(params) == ["params/bias", "params/embed", "params/scale"]
    for name, value in params.items():
        assert isinstance(value, np.ndarray)
        np.testing.assert_array_equal(value, np.asarray(state.params[name.split("/")[1]]))
    assert params["params/scale"].dtype == jnp.bfloat16
