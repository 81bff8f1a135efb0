"""Runs the atheris harness for a quick budget (``QGA_ATHERIS_RUNS``; full: 1,000,000)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile

from tests.agentproc import REPO
from tests.hardening.util import budget
from tests.prereq import require

SEEDS = [
    b'\x01{"execute": "guest-ping", "id": 1}',
    b'\x02{"execute": "guest-file-read", "arguments": {"handle": 1000, "count": 10}}',
    b'\x03{"execute": "guest-exec", "arguments": {"path": "/bin/true", "arg": ["a"], "env": ["A=1"]}}',
    b'\x00\xff{"execute": "guest-sync-delimited", "arguments": {"id": -5}}',
    b"\x05[[[[{\"a\": 'b', \"c\": [1e999, -0, 18446744073709551616]}]]]]",
]


def test_atheris_quick() -> None:
    """libFuzzer-driven inputs: no crash within the budget (seed corpus included)."""
    require(None if importlib.util.find_spec("atheris") else
            "atheris is not installed (pip install atheris, as tests/run-all.sh does)")
    runs = budget("QGA_ATHERIS_RUNS", 3000, 1000000)
    with tempfile.TemporaryDirectory(prefix="qga-atheris-corpus-") as corpus:
        for i, seed in enumerate(SEEDS):
            with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
                f.write(seed)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.run([sys.executable, "-m", "tests.hardening.fuzz_atheris", f"-runs={runs}",
                               "-max_len=4096", "-rss_limit_mb=1024", corpus],
                              cwd=corpus, env=env, capture_output=True, text=True, timeout=3600)
    tail = proc.stderr[-3000:]
    assert proc.returncode == 0, f"atheris found a crash:\n{tail}"
    assert "Done" in proc.stderr, tail
