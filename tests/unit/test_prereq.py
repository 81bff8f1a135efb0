"""tests.prereq.require: a skip outside CI, a failure under CI=true (real pytest runs)."""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]

TIER = '''
import pytest
from tests.prereq import require

@pytest.fixture(scope="session")
def tier():
    require("no widget here")

def test_in_test():
    require("no gadget here")

def test_in_session_fixture(tier):
    pass

def test_present():
    require(None)
'''


def run_tier(tmp_path: Path, ci: Optional[str]) -> Tuple[int, Dict[str, Tuple[str, str]]]:
    """Run TIER in a fresh pytest; (exit status, {test: (outcome, message)})."""
    (tmp_path / "test_tier.py").write_text(TIER)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(REPO)
    if ci is not None:
        env["CI"] = ci
    xml = tmp_path / "out.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
                           str(tmp_path), f"--junitxml={xml}", "test_tier.py"],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    results = {}
    for case in ET.parse(str(xml)).getroot().iter("testcase"):
        children = [c for c in case if c.tag in ("skipped", "failure", "error")]
        outcome = children[0].tag if children else "passed"
        results[case.get("name", "")] = (outcome, children[0].get("message", "") if children else "")
    return proc.returncode, results


@pytest.mark.parametrize("ci", [None, "false"])
def test_outside_ci_a_missing_prerequisite_skips_with_its_reason(tmp_path: Path, ci: Optional[str]) -> None:
    status, results = run_tier(tmp_path, ci)
    assert status == 0
    assert results == {"test_in_test": ("skipped", "no gadget here"),
                       "test_in_session_fixture": ("skipped", "no widget here"),
                       "test_present": ("passed", "")}


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_a_missing_prerequisite_fails(tmp_path: Path, ci: str) -> None:
    status, results = run_tier(tmp_path, ci)
    assert status == 1
    assert {name: outcome for name, (outcome, _) in results.items()} == {
        "test_in_test": "failure", "test_in_session_fixture": "error", "test_present": "passed"}
    assert "no gadget here" in results["test_in_test"][1]
    assert "no widget here" in results["test_in_session_fixture"][1]
