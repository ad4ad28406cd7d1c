"""bmjax-compile-check: will it fit? Lower and compile the train step for a target mesh without running it, and
print the per-device memory the compiler plans, so a config that runs out of memory is caught before a pod is
rented.

    bmjax-compile-check --config configs/gpt/gpt2.py:size=350m --devices 64 \
        --config.mesh.fsdp=8 --config.mesh.data=8 [--memory_limit_gb 16] [--print_shardings]
    bmjax-compile-check --config configs/gpt/gpt2.py:size=1.5b --topology v5e:4x4   (needs libtpu)
    python -m bmjax.cli.compile_check ...    (the same)

Without --topology the step is compiled for `--devices` fake CPU devices: the shardings, collectives and the
size of every per-device buffer are those of the real mesh, though a TPU/GPU compiler fuses and schedules
differently (expect the same order of magnitude, not the same byte). With --topology (a TPU topology such as
`v5e:4x4`, where libtpu is installed) the TPU compiler itself plans the memory. The state is abstract: nothing
is allocated and the step never runs. Batches are those the config's data pipeline feeds: with
data.packing=segments, an LM batch also holds segment_ids and positions.

The verdict: exit status 0 when the plan fits; 1 when it does not, either because the compiler refuses it
(RESOURCE_EXHAUSTED: the TPU compiler's own figures, e.g. temporaries against HBM, are printed) or because the
estimate exceeds --memory_limit_gb; 2 on bad input (config key, topology name), as one line.
"""
import os
import sys

from absl import flags
from ml_collections import config_flags

from bmjax.cli import common


def define_flags(argv: list[str]) -> flags.FlagValues:
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Config file: path.py[:args].", flag_values=fv, sys_argv=argv)
    flags.DEFINE_integer("devices", 8, "Fake CPU devices to compile for (not with --topology).", flag_values=fv)
    flags.DEFINE_string("topology", "", "A TPU topology to compile for, e.g. v5e:4x4 (needs libtpu).",
                        flag_values=fv)
    flags.DEFINE_float("memory_limit_gb", 0.0, "Exit 1 when the per-device estimate exceeds this (0: off).",
                       flag_values=fv)
    flags.DEFINE_bool("print_shardings", False, "Print every parameter's PartitionSpec.", flag_values=fv)
    return fv


def check_config(config, devices):
    """The config checks that need no files or data (bmjax.validate.validate_compile_target); returns the mesh
    and rules they built, for compile_step."""
    from bmjax import validate

    return validate.validate_compile_target(config, devices)


def compile_check(fv: flags.FlagValues) -> int:
    import jax

    from bmjax.errors import ConfigError
    from bmjax.train import compile_report

    config = fv.config
    if config is None:
        raise ConfigError("--config", "required")
    devices = compile_report.topology_devices(fv.topology) if fv.topology else jax.devices()
    checked = check_config(config, devices)
    try:
        report = compile_report.compile_step(config, devices, checked=checked)
    except compile_report.DoesNotFit as e:
        hbm = compile_report.HBM_GIB.get(fv.topology.split(":")[0]) if fv.topology else None
        where = f" ({hbm} GiB of HBM per chip)" if hbm else ""
        print(f"does not fit{where}: the compiler ran out of memory for this plan:\n{e}", flush=True)
        return common.FAILED
    if fv.print_shardings:
        for key, (shape, names, spec) in report["table"].items():
            print(f"{key:48s} {str(shape):24s} {str(names):44s} {spec}")
    print(compile_report.format_report(config, report), flush=True)
    limit = fv.memory_limit_gb * compile_report.GIB
    if limit and report.get("peak_bytes", 0) > limit:
        print(f"does not fit: {report['peak_bytes'] / compile_report.GIB:.2f} GiB > --memory_limit_gb "
              f"{fv.memory_limit_gb}", flush=True)
        return common.FAILED
    return common.OK


def _force_cpu_devices(argv):
    """Fake CPU devices must be requested before jax starts, so from argv, before absl parses the flags."""
    count = "8"
    for i, arg in enumerate(argv):
        if arg.startswith("--devices="):
            count = arg.split("=", 1)[1]
        elif arg == "--devices" and i + 1 < len(argv):
            count = argv[i + 1]
    if any(a.startswith("--topology") for a in argv):
        # Compiling needs no TPU; without this, a second process (e.g. a parallel test) finds libtpu locked.
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    else:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _force_cpu_devices(argv)
    return common.run(define_flags, compile_check, argv, usage=__doc__)


if __name__ == "__main__":
    sys.exit(main())
