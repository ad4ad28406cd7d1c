"""The device mesh: four named axes, (data, fsdp, tensor, sequence), sized by `config.mesh`."""
import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from bmjax.errors import ConfigError

AXES = ("data", "fsdp", "tensor", "sequence")


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
            raise ConfigError(
                f"mesh.{unknown[0]}", f"the other axes use {known} devices, which does not divide {num_devices}")
        sizes[AXES.index(unknown[0])] = num_devices // known
    elif known != num_devices:
        spec = " x ".join(f"{n}={s}" for n, s in zip(AXES, sizes))
        raise ConfigError("mesh", f"{spec} is {known} devices but there are {num_devices}")
    return tuple(sizes)


def make_mesh(mesh_cfg, devices=None) -> Mesh:
    """A mesh over all (or the given) devices. Axis types are Auto so XLA propagates shardings."""
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(mesh_cfg, len(devices))
    device_grid = np.asarray(devices).reshape(shape)
    if devices is jax.devices() or len(devices) == jax.device_count():
        from jax.experimental import mesh_utils

        device_grid = mesh_utils.create_device_mesh(shape, devices=devices)
    return Mesh(device_grid, AXES, axis_types=(AxisType.Auto,) * len(AXES))


def data_parallel_size(mesh: Mesh) -> int:
    """How many ways the batch is split: the data and fsdp axes both shard the batch."""
    return mesh.shape["data"] * mesh.shape["fsdp"]
