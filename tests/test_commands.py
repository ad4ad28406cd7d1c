"""Every console script answers --help with its own usage and flags (exit 0), --helpfull adds absl's, and flags are
spelt in snake_case, the older dashed spellings of bmjax-scaling still accepted."""
import re
import tomllib

import pytest

from helpers.paths import REPO_ROOT
from helpers import commands

SCRIPTS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
# One flag each command defines itself.
OWN_FLAG = {"bmjax-train": "--workdir", "bmjax-sample": "--max_new_tokens", "bmjax-convert": "--to_hf",
            "bmjax-compile-check": "--memory_limit_gb", "bmjax-sweep": "--launcher", "bmjax-scaling": "--params_col",
            "bmjax-prepare-data": "--num_shards", "bmjax-train-tokenizer": "--vocab_size",
            "bmjax-eval": "--tasks"}


def command(script: str, *args):
    return commands.run("-m", SCRIPTS[script].split(":")[0], *args, timeout=120)


def test_every_console_script_is_named_here():
    assert set(SCRIPTS) == set(OWN_FLAG)


@pytest.mark.parametrize("script", sorted(OWN_FLAG))
def test_help_is_the_command_s_own_usage_and_flags(script):
    result = command(script, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    usage, flags = result.stdout.split("\nflags:\n")
    assert f"    {script} " in usage  # an example command line
    assert OWN_FLAG[script] in flags and "logtostderr" not in flags  # not absl's
    names = re.findall(r"^  --(\w+)", flags, re.MULTILINE)
    assert names and all(name == name.lower() and "-" not in name for name in names)
    full = command(script, "--helpfull")
    assert full.returncode == 0 and OWN_FLAG[script] in full.stdout and "logtostderr" in full.stdout


@pytest.mark.parametrize("spelling", ["--params_col", "--params-col"])
def test_scaling_takes_snake_case_and_the_dashed_spelling(tmp_path, spelling, capsys):
    from bmjax.cli.scaling import main

    path = tmp_path / "runs.csv"
    path.write_text("N,C,L\n1e6,1e18,3.0\n")
    code = main(["fit", "--csv", str(path), spelling, "size", "--flops_col", "C", "--loss-col", "L", "--law",
                 "kaplan"])
    # The column flag was taken (else "required with --csv"): the CSV lacks the column it names.
    assert code == 2 and "column 'size'" in capsys.readouterr().err
