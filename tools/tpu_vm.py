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
workers write their checkpoint shards there, and worker 0 writes metrics. Bad input (no command, an unknown
flag, a missing --name) prints one line, `error: ...`, and exits with status 2.
"""
import pathlib
import re
import shlex
import subprocess
import sys
import types

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's bmjax comes first

from absl import flags  # noqa: E402

from bmjax.cli import common  # noqa: E402
from bmjax.errors import ConfigError  # noqa: E402

FLAGS = flags.FlagValues()
flags.DEFINE_string("name", None, "TPU VM (or queued resource) name.", flag_values=FLAGS)
flags.DEFINE_string("zone", None, "The zone, e.g. us-central2-b.", flag_values=FLAGS)
flags.DEFINE_string("project", "", "The Google Cloud project (default: gcloud's configured one).", flag_values=FLAGS)
flags.DEFINE_string("accelerator_type", "v4-8", "e.g. v4-32, v5litepod-16, v5p-64.", flag_values=FLAGS)
flags.DEFINE_string("version", "", "TPU VM runtime version (default: by accelerator).", flag_values=FLAGS)
flags.DEFINE_integer("num_slices", 1, "> 1: multi-slice through queued resources.", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_bool("spot", False, "Spot (preemptible) capacity.", flag_values=FLAGS)
flags.DEFINE_string("config", "", "run: the config, path.py[:args].", flag_values=FLAGS)
flags.DEFINE_string("workdir", "", "run: a directory every worker sees.", flag_values=FLAGS)
flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.", flag_values=FLAGS)

# TPU VM runtime (software) version by accelerator generation, when --version is not given.
RUNTIME_VERSIONS = {
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}


def jax_version() -> str:
    """The jax version the lock (constraints.txt) pins: the TPU workers install the same one (with libtpu)."""
    match = re.search(r"^jax==(\S+)", (REPO / "constraints.txt").read_text(), re.MULTILINE)
    return match.group(1) if match else ""


def runtime_version(args) -> str:
    if args.version:
        return args.version
    generation = args.accelerator_type.split("-")[0]
    if generation not in RUNTIME_VERSIONS:
        raise ConfigError("--version", f"no default runtime for {args.accelerator_type!r}; pass --version")
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
        missing = "--config" if not args.config else "--workdir"
        raise ConfigError(missing, "the run command needs --config and --workdir")
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
    """The command (the one positional argument) and the flags, as one namespace with `command` and
    `overrides` (what follows "--": bmjax-train's --config.KEY=VALUE overrides for the run command)."""
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    positional = common.parse_or_exit(FLAGS, argv[:argv.index("--")] if "--" in argv else argv, usage=__doc__,
                                      positional=True)
    if len(positional) != 1 or positional[0] not in COMMANDS:
        got = " ".join(positional) or "none"
        raise ConfigError("command", f"expected one, {' | '.join(COMMANDS)}; got {got}")
    for name in ("name", "zone"):
        if not FLAGS[name].value:
            raise ConfigError(f"--{name}", "required")
    return types.SimpleNamespace(**FLAGS.flag_values_dict(), command=positional[0], overrides=overrides)


def main(argv=None) -> int:
    try:
        args = parse(sys.argv[1:] if argv is None else list(argv))
        commands = COMMANDS[args.command](args)
    except ConfigError as e:
        common.fail(str(e))
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
