"""Smoke-run ``benchmarks/run.py --quick`` so the suite does not rot.

No timing thresholds: only that every row is present and carries numbers
(or says why a side has none: a command the agent does not have).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.prereq import require

REPO = Path(__file__).resolve().parent.parent.parent
RUN = REPO / "benchmarks" / "run.py"
REFERENCE = "/usr/sbin/qemu-ga"


def test_quick_run_reports_every_row(tmp_path: Path) -> None:
    require(None if os.access(REFERENCE, os.X_OK) else f"the system qemu-ga ({REFERENCE}) is not installed")
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(RUN), "--quick", "--no-pin", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    sys.path.insert(0, str(RUN.parent))
    try:
        import run as bench  # the row list lives in the script
    finally:
        sys.path.remove(str(RUN.parent))
    rows = {r["name"]: r for r in doc["rows"]}
    assert list(rows) == bench.ROW_NAMES
    for name, row in rows.items():
        assert not row.get("error"), f"{name}: {row['error']}"
        for kind in ("ours", "ref"):
            if row.get(f"na_{kind}"):
                assert row[kind] is None
                continue
            assert isinstance(row[kind], (int, float)), f"{name}: {kind} has no number: {row}"
    for name in ("startup", "ping_rtt_p50", "ping_rtt_p99", "pipelined", "reconnect",
                 "rss_idle", "rss_peak", "cpu_per_ping"):
        assert isinstance(rows[name]["ours"], (int, float)), name
    # Both base64 paths were measured: the accelerator where this interpreter has it.
    try:
        import pybase64  # noqa: F401
        accelerated = "pybase64"
    except ImportError:
        accelerated = "binascii"
    for name in ("file_read_4m", "file_read_48m", "file_write_4m"):
        assert rows[name]["base64"] == accelerated, name
        assert rows[f"{name}_stdlib"]["base64"] == "binascii", name
    assert doc["machine"]["python"] and doc["date"] and doc["command"]
    assert "qemu-ga-py" in proc.stdout and "ratio" in proc.stdout
