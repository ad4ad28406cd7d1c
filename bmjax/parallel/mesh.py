"""The device mesh: four named axes, (data, fsdp, tensor, sequence), sized by `config.mesh`.

`mesh.{data, fsdp, tensor, sequence}` are the sizes of the whole mesh; one may be -1 ("the devices the others
leave"). On several TPU slices or GPU nodes, `mesh.dcn_data` / `mesh.dcn_fsdp` say how many of the data / fsdp
ways cross the slow data-centre network (DCN) between slices (or between processes on GPUs): the mesh is then
built with `mesh_utils.create_hybrid_device_mesh`, so that tensor, sequence and the rest of fsdp stay inside a
slice, on the fast interconnect.
"""
import math

import jax
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

from bmjax.errors import ConfigError

AXES = ("data", "fsdp", "tensor", "sequence")
DCN_AXES = ("data", "fsdp")  # only these may cross slices: their collectives are one all-reduce per step


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, ...]:
    """Resolve the sizes of `config.mesh` against the device count; one size may be -1 ("the rest")."""
    sizes = [int(mesh_cfg[name]) for name in AXES]
    unknown = [name for name, size in zip(AXES, sizes) if size == -1]
    if len(unknown) > 1:
        raise ConfigError(f"mesh.{unknown[1]}", f"only one mesh axis may be -1, got {', '.join(unknown)}")
    for name, size in zip(AXES, sizes):
        if size == 0 or size < -1:
            raise ConfigError(f"mesh.{name}", f"must be a positive size or -1, got {size}")
    known = math.prod(s for s in sizes if s != -1)
    if unknown:
        if num_devices % known:
            # Blame the axis the user set: mesh.fsdp=3 on 8 devices is the mistake, not the data=-1 default.
            chosen = [name for name, size in zip(AXES, sizes) if size > 1]
            spec = " x ".join(f"mesh.{name}={sizes[AXES.index(name)]}" for name in chosen)
            raise ConfigError(f"mesh.{chosen[0]}" if len(chosen) == 1 else "mesh",
                              f"{spec} uses {known} devices, which does not divide {num_devices} (mesh.{unknown[0]}=-1 "
                              "takes the rest)")
        sizes[AXES.index(unknown[0])] = num_devices // known
    elif known != num_devices:
        spec = " x ".join(f"{n}={s}" for n, s in zip(AXES, sizes))
        raise ConfigError("mesh", f"{spec} is {known} devices but there are {num_devices}")
    return tuple(sizes)


def dcn_shape(mesh_cfg, shape: tuple[int, ...]) -> tuple[int, ...]:
    """How many ways each axis crosses slices: (dcn_data, dcn_fsdp, 1, 1); each must divide its axis."""
    dcn = []
    for name, size in zip(AXES, shape):
        ways = int(mesh_cfg.get(f"dcn_{name}", 1)) if name in DCN_AXES else 1
        if ways < 1:
            raise ConfigError(f"mesh.dcn_{name}", f"must be a positive size, got {ways}")
        if size % ways:
            raise ConfigError(f"mesh.dcn_{name}", f"{ways} does not divide mesh.{name}={size}")
        dcn.append(ways)
    return tuple(dcn)


def granules(devices) -> tuple[str, int]:
    """What the DCN connects ("slices" or "processes") and how many: TPU slices when devices carry a slice
    index, else processes (GPU nodes, CPU processes)."""
    slices = {getattr(d, "slice_index", None) for d in devices}
    if None not in slices and len(slices) > 1:
        return "slices", len(slices)
    return "processes", len({d.process_index for d in devices})


def check_dcn(mesh_cfg, devices) -> tuple[int, ...]:
    """The DCN shape, checked against the slices (or processes) the devices form; raises ConfigError."""
    shape = mesh_shape(mesh_cfg, len(devices))
    dcn = dcn_shape(mesh_cfg, shape)
    ways = math.prod(dcn)
    if ways > 1:
        kind, count = granules(devices)
        if count != ways:
            raise ConfigError("mesh.dcn_data" if dcn[0] > 1 else "mesh.dcn_fsdp",
                              f"dcn_data x dcn_fsdp = {ways} but the devices form {count} "
                              f"{kind if count > 1 else kind[:-1]}")
    return dcn


# Auto: XLA propagates shardings from the rules' constraints (jax.make_mesh's default, Explicit, would need every
# op's output sharding spelt out).
AXIS_TYPES = (AxisType.Auto,) * len(AXES)


def make_mesh(mesh_cfg, devices=None) -> Mesh:
    """A mesh over all (or the given) devices, laid out along the physical interconnect where jax knows one."""
    devices = jax.devices() if devices is None else list(devices)
    shape = mesh_shape(mesh_cfg, len(devices))
    dcn = check_dcn(mesh_cfg, devices)
    if math.prod(dcn) > 1:
        # jax.make_mesh has no slow (DCN) axes: the hybrid mesh keeps tensor, sequence and the rest of fsdp
        # inside a slice.
        ici = tuple(s // d for s, d in zip(shape, dcn))
        by_process = granules(devices)[0] == "processes"
        device_grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices, process_is_granule=by_process)
        return Mesh(device_grid, AXES, axis_types=AXIS_TYPES)
    return jax.make_mesh(shape, AXES, axis_types=AXIS_TYPES, devices=devices)


def single_device_mesh(device=None) -> Mesh:
    """Every axis of size 1 on one device: the reference layout sharded runs are compared against."""
    device = jax.devices()[0] if device is None else device
    return jax.make_mesh((1,) * len(AXES), AXES, axis_types=AXIS_TYPES, devices=[device])


def data_parallel_size(mesh: Mesh) -> int:
    """How many ways the batch is split: the data and fsdp axes both shard the batch."""
    return mesh.shape["data"] * mesh.shape["fsdp"]
