"""Lower and compile the trainer's own step for a mesh without running it, and read the compiler's memory plan:
what bmjax-compile-check reports (bmjax/cli/compile_check.py).

    checked = validate.validate_compile_target(config, devices)   # the mesh and rules, checked
    report = compile_report.compile_step(config, devices, checked=checked)  # sizes in bytes, timings in seconds
    print(compile_report.format_report(config, report))

The state and the batch are abstract (ShapeDtypeStructs with the trainer's shardings): nothing is allocated. A
RESOURCE_EXHAUSTED from the compiler becomes DoesNotFit carrying the compiler's own figures.
"""
import re
import time

from bmjax.errors import ConfigError

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


def compile_step(config, devices, compiler_options=None, checked=None) -> dict:
    """Lower and compile the trainer's own step for a mesh over `devices`; returns sizes (bytes) and timings.

    `checked`: what `validate.validate_compile_target(config, devices)` returned (the mesh and rules, checked);
    when None it runs here."""
    import jax
    import numpy as np

    from bmjax import validate
    from bmjax.parallel import batches
    from bmjax.parallel import rules as rules_lib
    from bmjax.train import setup

    checked = validate.validate_compile_target(config, devices) if checked is None else checked
    config, mesh, rules = checked.config, checked.mesh, checked.rules  # model.vocab_size resolved
    training = setup.build_training(config, mesh, max(int(config.train.steps), 1), rules=rules,
                                    abstract_model=checked.abstract_model)
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
        lower_s=lowered_s, compile_s=compiled_s, table=rules_lib.spec_table(abstract.params, mesh, rules))
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


def topology_devices(name: str):
    """The devices of a TPU topology such as v5e:4x4 (needs libtpu; no TPU)."""
    from jax.experimental import topologies

    if not re.fullmatch(r"[a-z0-9]+:\d+(x\d+)+", name):
        raise ConfigError("--topology", f"{name!r} is not a TPU topology name such as v5e:4x4 or v5p:2x2x2")
    try:
        return topologies.get_topology_desc(topology_name=name, platform="tpu").devices
    except Exception as e:  # noqa: BLE001  (no libtpu, unknown topology: one line either way)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "not installed" in first:
            first += "; it needs libtpu (pip install 'jax[tpu]', or `make test-tpu` for a local copy)"
        raise ConfigError(f"--topology {name}", f"cannot build it here ({first})")
