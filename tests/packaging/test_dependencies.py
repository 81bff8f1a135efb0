"""Every dependency pyproject.toml declares is imported by qga, and qga imports no undeclared one.

Import names are read from qga's source (every ``import``, lazy ones in
functions too); distribution names are mapped to them by the installed
metadata (``tests/run-all.sh`` installs ``.[test,systemd,fast]``).
"""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path
from typing import Dict, Set

REPO = Path(__file__).resolve().parents[2]
RUNTIME_EXTRAS = ("systemd", "fast")  # optional features of the agent; "test" is the suite's own


def qga_imports() -> Set[str]:
    """Top-level module names that qga imports, standard library and qga itself left out."""
    names: Set[str] = set()
    for path in (REPO / "qga").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "qga"}


def declared() -> Dict[str, str]:
    """Distribution name -> where pyproject.toml declares it."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    out = {}
    for where, reqs in [("dependencies", project["dependencies"])] + [
            (f"optional-dependencies.{x}", project["optional-dependencies"][x]) for x in RUNTIME_EXTRAS]:
        for req in reqs:
            out[re.match(r"[A-Za-z0-9._-]+", req).group(0).lower()] = where  # type: ignore[union-attr]
    return out


def test_declared_dependencies_are_imported_and_imports_declared() -> None:
    dists = {name: {d.lower() for d in ds} for name, ds in importlib.metadata.packages_distributions().items()}
    imported = qga_imports()
    undeclared = {name for name in imported if not dists.get(name, set()) & set(declared())}
    assert not undeclared, f"qga imports {sorted(undeclared)}, which pyproject.toml does not declare"
    provided = set().union(*(dists.get(name, set()) for name in imported))
    unused = {dist: where for dist, where in declared().items() if dist not in provided}
    assert not unused, f"declared in pyproject.toml but never imported by qga: {unused}"
