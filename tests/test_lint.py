"""The tree stays ruff-clean (the project's lint rules live in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing() -> None:
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "bench"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _imports() -> dict[str, set[str]]:
    """poolbench's modules and the poolbench modules each imports (anywhere in the file)."""
    import ast

    src = ROOT / "src" / "poolbench"
    graph: dict[str, set[str]] = {}
    for path in src.rglob("*.py"):
        name = ".".join(("poolbench", *path.relative_to(src).with_suffix("").parts))
        name = name.removesuffix(".__init__")
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("poolbench"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("poolbench")}
        graph[name] = found
    return graph


def test_imports_point_one_way() -> None:
    """No import circles between modules (a package's __init__ may import its own modules)."""
    graph = _imports()
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        for dep in sorted(graph.get(module, ())):
            if dep not in graph or module.startswith(dep + ".") or dep == "poolbench":
                continue  # a module's own package (its __init__) is not a dependency cycle
            if dep in path:
                circles.append([*path[path.index(dep):], dep])
            elif len(path) < 30:
                visit(dep, [*path, dep])

    for module in graph:
        visit(module, [module])
    assert not circles, circles[:5]


def test_result_model_is_a_leaf() -> None:
    """results.py, errors.py and events.py import nothing that measures, checks or reports."""
    graph = _imports()
    for leaf in ("poolbench.results", "poolbench.errors", "poolbench.events"):
        assert not {d for d in graph[leaf] if d != "poolbench.errors"}, (leaf, graph[leaf])
