"""What both adapter throughput scripts measure: a finished run's model loaded as bmjax-eval loads it, and its
lm-evaluation-harness adapter on the run's mesh and on one device."""
from dataclasses import dataclass


@dataclass
class Request:  # what the adapter reads of the harness's Instance
    args: tuple


def run_adapters(workdir: str, batch_size: int) -> tuple[dict, list]:
    """(what was measured on, [("run_mesh", adapter), ("one_device", adapter)]), with the CPU devices the run
    trained on (runtime.use_cpu_devices, as bmjax-eval sets them, before jax starts)."""
    from bmjax import runtime
    from bmjax import workdir as workdir_lib

    runtime.set_process_defaults()
    runtime.use_cpu_devices(workdir_lib.read_config(workdir))

    import jax

    from bmjax.cli.eval import run_mesh
    from bmjax.cli.sample import load_run
    from bmjax.evals.lm_harness import BmjaxLM

    config, tokenizer, model = load_run(workdir)
    mesh, rules = run_mesh(config)
    described = {"workdir": workdir, "devices": len(jax.devices()), "device": str(jax.devices()[0].device_kind),
                 "mesh": dict(mesh.shape), "batch_size": batch_size}
    return described, [("run_mesh", BmjaxLM(model, tokenizer, batch_size, mesh=mesh, rules=rules)),
                       ("one_device", BmjaxLM(model, tokenizer, batch_size))]
