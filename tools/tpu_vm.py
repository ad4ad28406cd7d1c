"""Cloud TPU VMs for bmjax: create a slice (or several, through queued resources), install this checkout on
every worker, run a config on all of them at once, delete.

    python tools/tpu_vm.py create --name bm --zone us-central2-b --accelerator_type v4-32 [--spot]
    python tools/tpu_vm.py setup  --name bm --zone us-central2-b
    python tools/tpu_vm.py run    --name bm --zone us-central2-b --config configs/gpt/gpt2.py:size=350m \
                                  --workdir /mnt/shared/runs/350m -- --config.mesh.fsdp=16
    python tools/tpu_vm.py delete --name bm --zone us-central2-b

Add `--num_slices N` (N > 1) to every command for multi-slice training: `create` then asks for N slices as one
queued resource (nodes NAME-0 .. NAME-N-1, joined over the data-centre network; set mesh.dcn_data=N or
mesh.dcn_fsdp=N in the run), and the other commands address every node. `--dry_run` prints the exact commands
instead of running them.

Every worker runs the same `bmjax-train` command; jax.distributed finds the other workers by itself on a TPU VM
(bmjax.parallel.distributed). The workdir must be storage every worker sees (a gcsfuse or NFS mount): all
workers write their checkpoint shards there, and worker 0 writes metrics.
"""
import argparse
import pathlib
import re
import shlex
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

# TPU VM runtime (software) version by accelerator generation, when --version is not given.
RUNTIME_VERSIONS = {
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}


def jax_version() -> str:
    """The jax version pinned in pyproject.toml: the TPU workers install the same one (with libtpu)."""
    match = re.search(r'"jax==([^"]+)"', (REPO / "pyproject.toml").read_text())
    return match.group(1) if match else ""


def runtime_version(args) -> str:
    if args.version:
        return args.version
    generation = args.accelerator_type.split("-")[0]
    if generation not in RUNTIME_VERSIONS:
        raise SystemExit(f"error: --version: no default runtime for {args.accelerator_type!r}; pass --version")
    return RUNTIME_VERSIONS[generation]


def nodes(args) -> list[str]:
    """The TPU VM node names: NAME for one slice, NAME-0 .. NAME-(N-1) for a queued multi-slice resource."""
    return [args.name] if args.num_slices == 1 else [f"{args.name}-{i}" for i in range(args.num_slices)]


def location(args) -> list[str]:
    return [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])


def create_commands(args) -> list[list[str]]:
    spot = ["--spot"] if args.spot else []
    if args.num_slices == 1:
        return [["gcloud", "compute", "tpus", "tpu-vm", "create", args.name, *location(args),
                 f"--accelerator-type={args.accelerator_type}", f"--version={runtime_version(args)}", *spot]]
    return [["gcloud", "compute", "tpus", "queued-resources", "create", args.name, *location(args),
             f"--node-count={args.num_slices}", f"--node-prefix={args.name}",
             f"--accelerator-type={args.accelerator_type}", f"--runtime-version={runtime_version(args)}", *spot]]


def ssh(node: str, args, command: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", node, *location(args), "--worker=all", "--command",
            command]


def setup_commands(args) -> list[list[str]]:
    """Pack this checkout (committed files), copy it to every worker, install it with jax[tpu] in a venv."""
    archive = f"/tmp/bmjax-{args.name}.tar.gz"
    install = (f"mkdir -p bmjax && tar -xzf bmjax.tar.gz -C bmjax && cd bmjax && python3 -m venv .venv && "
               f'.venv/bin/pip install -q -e . "jax[tpu]=={jax_version()}"')
    commands = [["git", "-C", str(REPO), "archive", "--format=tar.gz", f"--output={archive}", "HEAD"]]
    for node in nodes(args):
        commands.append(["gcloud", "compute", "tpus", "tpu-vm", "scp", archive, f"{node}:bmjax.tar.gz",
                         *location(args), "--worker=all"])
        commands.append(ssh(node, args, install))
    return commands


def run_commands(args) -> list[list[str]]:
    if not args.config or not args.workdir:
        raise SystemExit("error: run needs --config and --workdir")
    train = shlex.join([".venv/bin/bmjax-train", "--config", args.config, "--workdir", args.workdir,
                        *args.overrides])
    return [ssh(node, args, f"cd bmjax && {train}") for node in nodes(args)]


def delete_commands(args) -> list[list[str]]:
    if args.num_slices == 1:
        return [["gcloud", "compute", "tpus", "tpu-vm", "delete", args.name, *location(args), "--quiet"]]
    return [["gcloud", "compute", "tpus", "queued-resources", "delete", args.name, *location(args), "--force",
             "--quiet"]]


COMMANDS = {"create": create_commands, "setup": setup_commands, "run": run_commands, "delete": delete_commands}


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--name", required=True, help="TPU VM (or queued resource) name")
    parser.add_argument("--zone", required=True)
    parser.add_argument("--project", default="", help="default: gcloud's configured project")
    parser.add_argument("--accelerator_type", default="v4-8", help="e.g. v4-32, v5litepod-16, v5p-64")
    parser.add_argument("--version", default="", help="TPU VM runtime version (default: by accelerator)")
    parser.add_argument("--num_slices", type=int, default=1, help="> 1: multi-slice through queued resources")
    parser.add_argument("--spot", action="store_true", help="spot (preemptible) capacity")
    parser.add_argument("--config", default="", help="run: the config, path.py[:args]")
    parser.add_argument("--workdir", default="", help="run: a directory every worker sees")
    parser.add_argument("--dry_run", action="store_true", help="print the commands instead of running them")
    # run: --config.KEY=VALUE overrides for bmjax-train come after "--".
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.overrides = overrides
    if args.num_slices < 1:
        parser.error("--num_slices must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else list(argv))
    commands = COMMANDS[args.command](args)
    if args.dry_run:
        for command in commands:
            print(shlex.join(command))
        return 0
    if args.command == "run":
        # One ssh per node, all at once: the workers of every slice must start together to join the job.
        procs = [subprocess.Popen(command) for command in commands]
        return max(proc.wait() for proc in procs)
    for command in commands:
        print("+", shlex.join(command), flush=True)
        code = subprocess.call(command)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
