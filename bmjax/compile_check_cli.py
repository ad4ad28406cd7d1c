"""bmjax-compile-check: will it fit? Lower and compile the train step for a target mesh without running it, and
print the per-device memory the compiler plans, so a config that runs out of memory is caught before a pod is
rented.

    bmjax-compile-check --config configs/gpt/gpt2.py:size=350m --devices 64 \
        --config.mesh.fsdp=8 --config.mesh.data=8 [--memory_limit_gb 16] [--print_shardings]
    bmjax-compile-check --config configs/gpt/gpt2.py:size=1.5b --topology v5e:4x4   (needs libtpu)
    python tools/compile_check.py ...        (the same, from a checkout that is not pip-installed)

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
import re
import sys
import time

from absl import flags
from ml_collections import config_flags

from bmjax import runtime
from bmjax.errors import ConfigError

FLAGS = flags.FlagValues()  # this command's own flags: importing it next to another command defines nothing twice
_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file: path.py[:args].", flag_values=FLAGS)
_DEVICES = flags.DEFINE_integer("devices", 8, "Fake CPU devices to compile for (ignored with --topology).",
                                flag_values=FLAGS)
_TOPOLOGY = flags.DEFINE_string("topology", "", "A TPU topology to compile for, e.g. v5e:4x4 (needs libtpu).",
                                flag_values=FLAGS)
_LIMIT = flags.DEFINE_float("memory_limit_gb", 0.0, "Exit 1 when the per-device estimate exceeds this (0: off).",
                            flag_values=FLAGS)
_PRINT_SHARDINGS = flags.DEFINE_bool("print_shardings", False, "Print every parameter's PartitionSpec.",
                                     flag_values=FLAGS)

GIB = 2**30


def batch_shapes(config) -> dict:
    """{key: (shape, dtype)} of one global batch of the config's task (what bmjax.data feeds)."""
    import numpy as np

    b, length, k = int(config.data.batch_size), int(config.data.seq_len), int(config.train.steps_per_call)
    lead = (k,) if k > 1 else ()
    tokens = (lead + (b, length), np.int32)
    rows = (lead + (b,), np.int32)
    task = config.data.task
    if task == "lm":
        if config.data.get("packing") == "segments":  # packed documents (bmjax.train.tasks.lm_loss)
            return {"inputs": tokens, "targets": tokens, "segment_ids": tokens, "positions": tokens}
        return {"inputs": tokens, "targets": tokens}
    bert = {"input_ids": tokens, "token_type_ids": tokens, "attention_mask": tokens}
    if task == "mlm":  # the MLM head scores P selected positions per example (bmjax/data/mlm.py)
        from bmjax.data.mlm import max_predictions

        picked = lead + (b, max_predictions(length))
        return dict(bert, mlm_positions=(picked, np.int32), mlm_targets=(picked, np.int32),
                    mlm_weights=(picked, np.float32), nsp_labels=rows)
    if task == "classification":
        return dict(bert, labels=rows, weights=(rows[0], np.float32))
    raise ValueError(f"data.task={task!r} has no batch layout here")


def check_config(config, num_devices: int):
    """The config checks that need no files or data: choices, ranges, shapes, mesh against the device count."""
    from bmjax import validate
    from bmjax.errors import ConfigError
    from bmjax.parallel import mesh as mesh_lib
    from bmjax.parallel import rules as rules_lib

    validate.check_choices(config)
    validate.check_shapes(config)
    sizes = dict(zip(mesh_lib.AXES, mesh_lib.mesh_shape(config.mesh, num_devices)))
    rules_lib.rules_from_config(config.mesh)
    ways = sizes["data"] * sizes["fsdp"] * int(config.optim.grad_accum)
    if config.data.batch_size % ways:
        raise ConfigError("data.batch_size", f"{config.data.batch_size} is not divisible by mesh data x fsdp x "
                                             f"optim.grad_accum = {ways}")
    if config.data.seq_len % sizes["sequence"]:
        raise ConfigError("data.seq_len", f"{config.data.seq_len} is not divisible by mesh.sequence="
                                          f"{sizes['sequence']}")


def compile_step(config, devices, compiler_options=None) -> dict:
    """Lower and compile the trainer's own step for a mesh over `devices`; returns sizes (bytes) and timings."""
    import jax
    import numpy as np

    from bmjax import validate
    from bmjax.parallel import batches
    from bmjax.parallel import mesh as mesh_lib
    from bmjax.parallel import rules as rules_lib
    from bmjax.train import setup

    mesh = mesh_lib.make_mesh(config.mesh, devices)
    validate.check_parameter_layout(config, mesh)  # a dimension the mesh does not divide: an error, as in training
    training = setup.build_training(config, mesh, max(int(config.train.steps), 1))
    abstract = training.abstract_state
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract,
                         training.state_shardings)
    batch = {key: jax.ShapeDtypeStruct(shape, dtype, sharding=batches.array_sharding(
        training.feed_sharding, shape, int(config.data.seq_len)))
        for key, (shape, dtype) in batch_shapes(config).items()}

    start = time.perf_counter()
    lowered = training.step_fn.lower(state, batch)
    lowered_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled = compile_or_verdict(lowered, compiler_options)
    compiled_s = time.perf_counter() - start
    memory = compiled.memory_analysis()

    def shard_bytes(tree):
        leaves = jax.tree.leaves(tree)
        return sum(int(np.prod(x.sharding.shard_shape(x.shape))) * np.dtype(x.dtype).itemsize for x in leaves)

    report = dict(
        mesh=dict(mesh.shape), devices=len(devices), platform=devices[0].platform,
        params=sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params)),
        params_bytes=shard_bytes(state.params), opt_state_bytes=shard_bytes(state.opt_state),
        lower_s=lowered_s, compile_s=compiled_s, table=rules_lib.spec_table(
            abstract.params, mesh, rules_lib.rules_from_config(config.mesh)))
    if memory is not None:  # some backends plan no memory up front
        report.update(argument_bytes=memory.argument_size_in_bytes, output_bytes=memory.output_size_in_bytes,
                      alias_bytes=memory.alias_size_in_bytes, temp_bytes=memory.temp_size_in_bytes,
                      code_bytes=memory.generated_code_size_in_bytes)
        # Donated state aliases its output, so it is counted once; temporaries come on top.
        report["peak_bytes"] = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                                - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
    return report


def format_report(config, report) -> str:
    mesh = " ".join(f"{k}={v}" for k, v in report["mesh"].items())
    lines = [f"{config.model.name}: {report['params'] / 1e6:,.1f}M params, batch {config.data.batch_size} x "
             f"{config.data.seq_len}, {config.model.dtype} compute; mesh {mesh} on {report['devices']} "
             f"{report['platform']} devices",
             f"lowered in {report['lower_s']:.1f} s, compiled in {report['compile_s']:.1f} s",
             f"per device: params {report['params_bytes'] / GIB:.3f} GiB, optimizer state "
             f"{report['opt_state_bytes'] / GIB:.3f} GiB"]
    if "peak_bytes" in report:
        lines.append(f"per device (compiler): arguments {report['argument_bytes'] / GIB:.3f} GiB, outputs "
                     f"{report['output_bytes'] / GIB:.3f} GiB (aliased {report['alias_bytes'] / GIB:.3f}), "
                     f"temporaries {report['temp_bytes'] / GIB:.3f} GiB, code {report['code_bytes'] / GIB:.3f} GiB")
        lines.append(f"peak estimate per device: {report['peak_bytes'] / GIB:.3f} GiB")
    return "\n".join(lines)


class DoesNotFit(Exception):
    """The compiler refused the plan for lack of memory; the message holds its figures."""


def compile_or_verdict(lowered, compiler_options=None):
    """`lowered.compile()`; a RESOURCE_EXHAUSTED from the compiler (the plan exceeds the device's memory)
    becomes DoesNotFit carrying the compiler's own lines about it, anything else propagates."""
    try:
        return lowered.compile(compiler_options=compiler_options)
    except Exception as e:  # noqa: BLE001  (XlaRuntimeError and its kin; only the out-of-memory kind is ours)
        text = str(e)
        if "RESOURCE_EXHAUSTED" not in text:
            raise
        raise DoesNotFit(memory_figures(text)) from None


def memory_figures(text: str) -> str:
    """The lines of a RESOURCE_EXHAUSTED message that carry sizes (e.g. 'Used 18.43G of 15.75G hbm'),
    without the buffer-by-buffer listing that follows them."""
    keep = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("Largest program allocations", "Program hbm requirement")):
            if keep and not line:
                continue
        if re.search(r"\d+(\.\d+)?[KMGT]i?B?\b|\d+ bytes", line) and len(keep) < 8:
            keep.append(line)
        if line.startswith("Largest program allocations"):
            break
    return "\n".join(keep) or text.strip().splitlines()[0]


# HBM per chip of the TPU generations a topology name starts with (public specifications), for the report.
HBM_GIB = {"v4": 32, "v5e": 16, "v5litepod": 16, "v5p": 95, "v6e": 32}


def target_devices():
    """The devices to compile for: a TPU topology's, or this process's (fake) CPU devices."""
    import jax

    if not _TOPOLOGY.value:
        return jax.devices()
    from jax.experimental import topologies

    name = _TOPOLOGY.value
    if not re.fullmatch(r"[a-z0-9]+:\d+(x\d+)+", name):
        raise ConfigError("--topology", f"{name!r} is not a TPU topology name such as v5e:4x4 or v5p:2x2x2")
    try:
        return topologies.get_topology_desc(topology_name=name, platform="tpu").devices
    except Exception as e:  # noqa: BLE001  (no libtpu, unknown topology: one line either way)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "not installed" in first:
            first += "; it needs libtpu (pip install 'jax[tpu]', or `make test-tpu` for a local copy)"
        raise ConfigError(f"--topology {name}", f"cannot build it here ({first})")


def main(argv):
    from bmjax.errors import exit_on_config_error

    def check_and_compile():
        if len(argv) > 1:
            raise ConfigError("arguments", f"unexpected: {' '.join(argv[1:])}")
        devices = target_devices()
        check_config(config, len(devices))
        return compile_step(config, devices)

    config = exit_on_config_error(load_config)
    try:
        report = exit_on_config_error(check_and_compile)
    except DoesNotFit as e:
        hbm = HBM_GIB.get(_TOPOLOGY.value.split(":")[0]) if _TOPOLOGY.value else None
        where = f" ({hbm} GiB of HBM per chip)" if hbm else ""
        print(f"does not fit{where}: the compiler ran out of memory for this plan:\n{e}", flush=True)
        sys.exit(1)
    if _PRINT_SHARDINGS.value:
        for key, (shape, names, spec) in report["table"].items():
            print(f"{key:48s} {str(shape):24s} {str(names):44s} {spec}")
    print(format_report(config, report), flush=True)
    limit = _LIMIT.value * GIB
    if limit and report.get("peak_bytes", 0) > limit:
        print(f"does not fit: {report['peak_bytes'] / GIB:.2f} GiB > --memory_limit_gb {_LIMIT.value}", flush=True)
        sys.exit(1)


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


def _one_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
    return " ".join(lines[:4]) if isinstance(e, OSError) else lines[0]


def parse_flags(argv):
    """absl's parsing, with a bad flag or override reported as one line and exit status 2."""
    if any(arg in ("-h", "--help", "-help", "--helpfull") for arg in argv[1:]):
        print(__doc__.strip() + "\n\nflags:\n" + FLAGS.get_help(), flush=True)
        sys.exit(0)
    try:
        return FLAGS(argv)
    except Exception as e:  # noqa: BLE001  (flags.Error, or an override naming a key the config lacks)
        prefix = "" if isinstance(e, flags.Error) else "--config: unknown key or bad override "
        print(f"error: {prefix}{_one_line(e)}", file=sys.stderr, flush=True)
        sys.exit(2)


def load_config():
    """The --config value (ml_collections loads the file on first access): a missing or broken file is a
    ConfigError naming --config."""
    try:
        config = _CONFIG.value
        if config is not None:
            config.to_dict()  # a lazily loaded config raises its loading error here
    except Exception as e:  # noqa: BLE001  (OSError, SyntaxError, whatever get_config raised)
        raise ConfigError("--config", f"{type(e).__name__}: {_one_line(e)}") from None
    if config is None:
        raise ConfigError("--config", "required")
    return config


def run_main(argv: list[str] | None = None):
    """The command: argv without the program name (default sys.argv[1:])."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _force_cpu_devices(argv)
    runtime.set_process_defaults()  # as every bmjax command, before jax starts its backend
    main(parse_flags([sys.argv[0] if sys.argv else "bmjax-compile-check", *argv]))


if __name__ == "__main__":
    run_main()
