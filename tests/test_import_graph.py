"""The import rules of docs/design.md, read from the source with `ast` (nothing is imported): data flows one way.

models/ imports nothing from parallel/, train/, scaling/, cli/ or data/ (its shard_map kernels read the mesh
and the rules from jax's and flax's contexts: bmjax/models/sharding.py); data/ imports nothing from models/ or
train/; scaling/ nothing from train/. And no module comes back to itself round a circle of imports, whether
they run at import time or inside a function on first use. In tests/, no file imports a test module: what tests
share lives in tests/helpers/.
"""
import ast
import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent  # the directory holding bmjax/

# package -> the packages it must never import from (at module level or inside a function).
FORBIDDEN = {
    "models": ("parallel", "train", "scaling", "cli", "data"),
    "data": ("models", "train"),
    "scaling": ("train",),
}

def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str, root: pathlib.Path) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: pathlib.Path, root: pathlib.Path) -> list[tuple[int, str]]:
    """(line, module) for every bmjax module `path` imports, anywhere in the file; `from a import b` counts as
    a.b when that is a module and as a otherwise."""
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..models import y
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                name = f"{base}.{alias.name}"
                found.append((node.lineno, name if is_module(name, root) else base))
    return [(line, name) for line, name in found if name == "bmjax" or name.startswith("bmjax.")]


def imports_of_test_modules(root: pathlib.Path) -> list[str]:
    """`path:line imports NAME` for every file under tests/ that imports a tests/test_*.py module: by its bare
    name (pytest puts tests/ on sys.path), as tests.NAME, or relatively."""
    tests = root / "tests"
    test_modules = {path.stem for path in tests.glob("test_*.py")}
    found = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                names = [base, *(f"{base}.{alias.name}".lstrip(".") for alias in node.names)]
            else:
                continue
            for name in names:
                first = name.removeprefix("tests.").split(".")[0]
                if first in test_modules and first != path.stem:
                    found.append(f"{path.relative_to(root)}:{node.lineno} imports {first}")
                    break
    return found


def subpackage(name: str, root: pathlib.Path) -> str | None:
    """bmjax.models.attention.ring -> "models"; a top-level module (bmjax.validate) -> None."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and (root / "bmjax" / parts[1]).is_dir() else None


def sources(root: pathlib.Path):
    return sorted((root / "bmjax").rglob("*.py"))


def violations(root: pathlib.Path) -> list[str]:
    found = []
    for path in sources(root):
        source = subpackage(module_name(path, root), root)
        for line, name in imports(path, root):
            if subpackage(name, root) in FORBIDDEN.get(source, ()):
                found.append(f"{path.relative_to(root)}:{line} imports {name}")
    return found


def circles(root: pathlib.Path) -> list[list[str]]:
    """Cycles of the import graph, each as the modules round it (depth-first search)."""
    graph = {module_name(path, root): {name for _, name in imports(path, root)} for path in sources(root)}
    found, done = [], set()

    def visit(node, stack):
        if node in stack:
            found.append(stack[stack.index(node):] + [node])
        elif node not in done and node in graph:
            for target in sorted(graph[node]):
                visit(target, stack + [node])
            done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return found


def test_the_walk_sees_the_packages_and_their_imports():
    names = {module_name(path, ROOT) for path in sources(ROOT)}
    assert {"bmjax.models.attention.ring", "bmjax.parallel.rules", "bmjax.data.lm", "bmjax.scaling.sweep"} <= names
    ring = {name for _, name in imports(ROOT / "bmjax" / "models" / "attention" / "ring.py", ROOT)}
    assert {"bmjax.models.sharding", "bmjax.models.attention.reference"} <= ring


def test_data_flows_one_way():
    assert violations(ROOT) == []


def test_no_import_circle():
    assert circles(ROOT) == []


def test_no_test_module_imports_another():
    assert imports_of_test_modules(ROOT) == []


@pytest.mark.parametrize("line", [
    "from test_b import helper",
    "import test_b",
    "from tests.test_b import helper",
    "from tests import test_b",
    "from . import test_b",
    "from .test_b import helper",
    "def late():\n    from test_b import helper",  # inside a function too
])
def test_a_test_module_importing_another_is_found(tmp_path, line):
    (tmp_path / "tests" / "helpers").mkdir(parents=True)
    (tmp_path / "tests" / "test_b.py").write_text("from helpers import shared\nimport test_bench\n")
    (tmp_path / "tests" / "test_a.py").write_text(f"import os\n{line}\n")
    assert imports_of_test_modules(tmp_path) == [f"tests/test_a.py:{2 + line.count(chr(10))} imports test_b"]


def copy_with(tmp_path, source: str, added: str) -> pathlib.Path:
    """A copy of the package whose `source` ends with the line `added`."""
    shutil.copytree(ROOT / "bmjax", tmp_path / "bmjax", ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp_path / "bmjax" / source
    path.write_text(path.read_text() + "\n\n" + added + "\n")
    return tmp_path


@pytest.mark.parametrize("source, added", [
    ("models/layers.py", "from bmjax.parallel import rules"),
    ("models/attention/ring.py", "def _late():\n    from bmjax.train import tasks"),  # inside a function too
    ("models/gpt.py", "from ..data import tokenizers"),  # relative
    ("data/lm.py", "from bmjax.models import flops"),
    ("scaling/points.py", "import bmjax.train.summary"),
])
def test_a_forbidden_import_is_found(tmp_path, source, added):
    root = copy_with(tmp_path, source, added)
    assert [v for v in violations(root) if v.startswith(f"bmjax/{source}:")]


def test_a_circle_is_found(tmp_path):
    root = copy_with(tmp_path, "models/layers.py", "def _late():\n    from bmjax.models import gpt")
    assert any({"bmjax.models.gpt", "bmjax.models.layers"} <= set(circle) for circle in circles(root))
