"""Every command of README.md's (and docs/design.md's) ```bash blocks runs as written and exits 0.

The commands run in order, in one fresh temporary directory holding symlinks to the repository's configs/, data/
and tools/ (the README's relative paths): symlinks rather than a copy of the tree, because nothing writes there and
the runs then start at once. Each command line (joined over trailing backslashes, `#` comments dropped) is one
test, so a skipped command shows in the report with its reason. What the test changes in a command, and why, is
in the four tables below and nowhere else:

- PROGRAMS: `.venv/bin/NAME` is the console script NAME of pyproject.toml's [project.scripts], run as
  `sys.executable -m MODULE` (this checkout's bmjax, whichever environment runs the tests);
  `.venv/bin/python` is sys.executable.
- SHORTEN: arguments appended to a command, by its program, so that a training run takes seconds (README.md says
  so in a comment line above its first training block) and a compile check compiles two layers, not 24.
- REWRITE: whole arguments replaced: a path outside the temporary directory, the sweep's full 21-run grid.
- SKIP: commands that need hardware, network or a Hugging Face checkpoint this machine does not have.
- FIXTURES: the small input files the README's placeholders name.
"""
import pathlib
import re
import shlex
import subprocess
import sys
import tomllib

import pytest

from helpers.commands import child_env
from helpers.paths import REPO_ROOT as REPO
DOCUMENTS = ("README.md", "docs/design.md")
LINKED = ("configs", "data", "tools")  # the README's relative paths into the repository

SHORT_RUN = ["--config.train.steps=2", "--config.train.steps_per_call=1", "--config.train.eval_every=2", "--config.train.eval_steps=1",
             "--config.train.log_every=1", "--config.train.ckpt_every=2", "--config.train.sample_tokens=8",
             "--config.optim.warmup_steps=1", "--config.train.epochs=0"]  # epochs=0: steps decide (fine-tuning)
SHORTEN = {
    "bmjax-train": SHORT_RUN,
    "bmjax-sample": ["--max_new_tokens=8"],
    "bmjax-compile-check": ["--config.model.num_layers=2"],  # the same mesh, flow and report; 24 layers compile long
    "tools/bench_step.py": ["--steps=2", "--warmup=1", "--window=1", "--config.train.steps_per_call=1"],
    "tools/bench_compare.py": ["--rounds=1", "--jax_steps=2", "--torch_steps=2", "--jax_arg=--config.train.steps_per_call=1",
                               "--jax_arg=--warmup=1", "--jax_arg=--window=1"],
    "tools/bench_ckpt.py": ["--rounds=1", "--window=2", "--ckpt_every=1", "--warmup=1"],
}
REWRITE = {
    "/tmp/smoke": "runs/smoke",  # the temporary directory's, not the machine's /tmp
    "configs/sweeps/small_scaling.py": "configs/sweeps/small_scaling.py:runlocal",  # two runs of ~20 steps
}
SKIP = [  # (regular expression searched in the command, why it cannot run here)
    (r"^make ", "make builds .venv: the suite itself runs in it"),
    (r"^pip ", "installs packages (network)"),
    (r"^sbatch ", "needs a SLURM cluster"),
    (r"bench_gpu\.sh", "needs a GPU"),
    (r"^(?!.*--dry_run).*/mnt/", "a path on a cluster's shared disk (a --dry_run only prints commands: it runs)"),
    (r"PATH/bert-base-uncased", "a placeholder for a downloaded Hugging Face checkpoint"),
    (r"bmjax-scaling (fit|predict) --runs runs/small ", "needs the full sweep's three budgets (runlocal has one)"),
]
FIXTURES = {
    "corpus.txt": "\n\n".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog, {i} times over."
                              for i in range(200)) + "\n",
    "train.csv": "text,label\n" + "".join(f"{'a fine day' if i % 2 else 'a grim night'} number {i},{i % 2}\n"
                                          for i in range(64)),
    "prompts.txt": "ROMEO:\nJULIET: O\nFirst Citizen:\n",
}


def console_scripts() -> dict[str, list[str]]:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    return {name: [sys.executable, "-m", target.split(":")[0]] for name, target in scripts.items()}


def readme_commands() -> list[tuple[str, str]]:
    """(document, command) for each command line of each ```bash block, in order."""
    commands = []
    for document in DOCUMENTS:
        blocks = re.findall(r"^```bash\n(.*?)^```", (REPO / document).read_text(), flags=re.S | re.M)
        for block in blocks:
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    commands.append((document, line))
    return commands


def argv(command: str) -> list[str]:
    """The command as this test runs it: programs mapped, arguments rewritten, runs shortened."""
    words = [REWRITE.get(word, word) for word in shlex.split(command, comments=True)]
    scripts = console_scripts()
    program, rest = words[0], words[1:]
    if program == ".venv/bin/python":
        program, rest = rest[0], rest[1:]
        head = [sys.executable, program]
    elif program.startswith(".venv/bin/"):
        program = program.removeprefix(".venv/bin/")
        assert program in scripts, f"{command}: {program} is not a console script of pyproject.toml"
        head = scripts[program]
    else:
        head = [program]
    return head + rest + SHORTEN.get(program, [])


def skip_reason(command: str) -> str | None:
    for pattern, reason in SKIP:
        if re.search(pattern, command):
            return reason
    return None


@pytest.fixture(scope="module")
def directory(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("readme")
    for name in LINKED:
        (root / name).symlink_to(REPO / name)
    for name, text in FIXTURES.items():
        (root / name).write_text(text)
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    # One CPU device, as a user's laptop (conftest's 8 fake devices are the in-process tests'); XLA's quickest CPU
    # compile and a compilation cache shared by the commands, as tests/cli_runs.py's runs.
    env = child_env(devices=0, fast_compile=True)
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax_cache"))
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


COMMANDS = readme_commands()


def test_the_documents_have_commands():
    assert len(COMMANDS) > 20, COMMANDS


@pytest.mark.parametrize("document,command", COMMANDS,
                         ids=[f"{d}:{i}:{c.split(' --')[0][:60]}" for i, (d, c) in enumerate(COMMANDS)])
def test_command_runs_as_written(document, command, directory, env):
    reason = skip_reason(command)
    if reason:
        pytest.skip(f"{reason}: {command}")
    args = argv(command)
    result = subprocess.run(args, cwd=directory, env=env, capture_output=True, text=True, timeout=600)
    stderr = "\n".join(result.stderr.splitlines()[-20:])
    assert result.returncode == 0, (f"{document}: `{command}` exited {result.returncode}\n"
                                    f"ran: {shlex.join(args)}\nstderr (last lines):\n{stderr}")
