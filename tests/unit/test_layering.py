"""The package's import structure: no cycles, and the agent never loads the host side."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

REPO = Path(__file__).resolve().parents[2]


def import_graph(root: Path) -> Dict[str, Set[str]]:
    """module -> the qga modules it imports (at any level of the file, lazily too)."""
    modules: Dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        deps: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module in modules:
                    deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names
                            if f"{node.module}.{a.name}" in modules)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in modules)
        graph[name] = deps - {name}
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_back() -> None:
    assert cycles(import_graph(REPO / "qga")) == []


def test_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "qga"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from qga import b\n")
    (pkg / "b.py").write_text("def f():\n    from qga.a import x\n")
    assert cycles(import_graph(pkg)) == [["qga.a", "qga.b"]]


def test_the_agent_never_imports_the_host_side() -> None:
    code = ("import sys, qga.agent, qga.cli, qga.commands; qga.commands.load(); "
            "print([m for m in sys.modules if m.startswith('qga.host')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"
    assert not any(dep.startswith("qga.host") for mod, deps in import_graph(REPO / "qga").items()
                   if not mod.startswith("qga.host") for dep in deps)


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = []
    for path in sorted((REPO / "qga").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("qga"):
                offenders += [f"{path.relative_to(REPO)}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert offenders == []


def wire_error_imports(linux: Path) -> List[str]:
    """Where a module under ``linux`` imports a wire error (a QgaError class or
    os_error, which builds one) or the command layer that words them."""
    import qga.errors

    wire = {name for name, value in vars(qga.errors).items()
            if isinstance(value, type) and issubclass(value, qga.errors.QgaError)} | {"os_error"}
    found = []
    for path in sorted(linux.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [a.name for a in node.names]
                if node.module == "qga.errors":
                    found += [f"{path.name}: {name}" for name in names if name in wire or name == "*"]
                elif node.module == "qga" and "errors" in names:
                    found.append(f"{path.name}: qga.errors")
                elif node.module.startswith(("qga.commands", "qga.dispatch")):
                    found.append(f"{path.name}: {node.module}")
            elif isinstance(node, ast.Import):
                found += [f"{path.name}: {a.name}" for a in node.names
                          if a.name == "qga.errors" or a.name.startswith(("qga.commands", "qga.dispatch"))]
    return found


def test_linux_layer_raises_no_wire_errors() -> None:
    """qga/linux/ raises OSError or its own InternalError subclasses; only the
    command layer turns them into qemu-ga's texts (issue 12, item 4)."""
    assert wire_error_imports(REPO / "qga" / "linux") == []


def test_wire_error_finder_finds_them(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("from qga.errors import InternalError, QgaError, strerror\n")
    (tmp_path / "b.py").write_text("def f():\n    from qga.errors import CommandNotFound, os_error\n")
    (tmp_path / "c.py").write_text("import qga.errors\nfrom qga.commands.failures import could_not_open\n")
    assert wire_error_imports(tmp_path) == ["a.py: QgaError", "b.py: CommandNotFound", "b.py: os_error",
                                            "c.py: qga.errors", "c.py: qga.commands.failures"]
