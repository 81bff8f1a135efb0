"""The gates: mypy (strict) and ruff, with pyproject.toml's configuration, find nothing in qga/.

Run as tests so that a new finding fails CI like any other regression.  The
tools come from tests/requirements.txt (with types-pyserial for mypy); when
one is missing the test skips naming it, and fails under ``CI=true``.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import List

from tests.prereq import require

REPO = Path(__file__).resolve().parents[2]


def _run(module: str, args: List[str]) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(module) is None:
        require(f"{module} is not installed (pip install -r tests/requirements.txt)")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          check=False)


def test_config_is_strict_and_covers_qga() -> None:
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]
    assert tool["mypy"]["strict"] is True and tool["mypy"]["files"] == ["qga"]
    assert {"E", "F", "W", "B", "SIM"} <= set(tool["ruff"]["lint"]["select"])


def test_mypy_finds_nothing(tmp_path: Path) -> None:
    # The cache goes to tmp_path: the source tree may be read-only.
    proc = _run("mypy", ["--cache-dir", str(tmp_path)])
    assert proc.returncode == 0, f"mypy (pyproject.toml's [tool.mypy]):\n{proc.stdout}{proc.stderr}"


def test_ruff_finds_nothing() -> None:
    proc = _run("ruff", ["check", "--no-cache", "qga"])
    assert proc.returncode == 0, f"ruff check (pyproject.toml's [tool.ruff]):\n{proc.stdout}{proc.stderr}"
