"""The repository stands alone: a fresh clone has no sibling folders, so no tracked file may point at one."""
import re
import subprocess

import pytest

# A relative path that starts with one or more `..` steps, e.g. a sibling folder of the checkout.
PARENT_STEPS = re.compile(r"(?<![\w./])((?:\.\./)+)[\w.-]")
# A test that climbs from tests/ past the repository root with pathlib.
PATHLIB_CLIMB = re.compile(r"parents\[[2-9]\]")


def leaves_repository(line: str, depth: int) -> bool:
    """Whether a path on this line leaves the tree. Commands, configs and code run from the repository root, so
    any leading `..` leaves it there (depth=0); a Markdown link resolves from its file's folder, `depth` deep."""
    if PATHLIB_CLIMB.search(line):
        return True
    return any(m.group(1).count("../") > depth for m in PARENT_STEPS.finditer(line))


def tracked_files(repo_root):
    result = subprocess.run(["git", "ls-files"], cwd=repo_root, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip("not a git checkout")
    return [repo_root / name for name in result.stdout.splitlines()]


def test_no_tracked_file_refers_to_a_path_outside_the_repository(repo_root):
    offenders = []
    for path in tracked_files(repo_root):
        if not path.is_file() or path.suffix in {".txt", ".csv"}:
            continue  # the shipped data
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            depth = len(path.relative_to(repo_root).parts) - 1 if path.suffix == ".md" else 0
            if leaves_repository(line, depth):
                offenders.append(f"{path.relative_to(repo_root)}:{number}: {line.strip()}")
    assert not offenders, "paths outside the repository:\n" + "\n".join(offenders)


def test_shipped_data_is_tracked_and_documented(repo_root):
    names = {str(p.relative_to(repo_root)) for p in tracked_files(repo_root)}
    for name in ("data/tinyshakespeare.txt", "data/chinchilla_svg_extracted_data.csv", "data/README.md"):
        assert name in names
    assert (repo_root / "data/tinyshakespeare.txt").stat().st_size == 1_115_394
    readme = (repo_root / "data/README.md").read_text()
    assert "karpathy/char-rnn" in readme and "epoch-research/analyzing-chinchilla" in readme


def test_the_guard_sees_a_sibling_folder_but_not_a_link_inside_the_tree():
    assert leaves_repository("see ../" + "shared/data/x.txt", depth=0)
    assert leaves_repository("DATA=${1:-../" + "shared/data/x.txt}", depth=0)
    up = ".."  # spelled apart so that this file does not trip its own guard
    assert leaves_repository(f"see {up}/{up}/{up}/shared/x", depth=2)
    assert not leaves_repository(f"see [the README]({up}/{up}/README.md)", depth=2)
    assert not leaves_repository("python -m pytest tests", depth=0)
    assert leaves_repository("pathlib.Path(__file__).parents" + "[2] / 'x'", depth=1)


def test_the_slow_marker_names_test_files_that_exist(repo_root):
    from conftest import SLOW_FILES

    assert SLOW_FILES <= {p.name for p in (repo_root / "tests").glob("test_*.py")}


def test_the_slow_marker_names_tests_that_exist(repo_root):
    from conftest import SLOW_TESTS

    for name in SLOW_TESTS:
        file, function = name.split("::")
        assert f"\ndef {function}(" in (repo_root / "tests" / file).read_text(), name
