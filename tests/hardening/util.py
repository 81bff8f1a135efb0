"""Shared helpers of the hardening tests: budgets, reply checks, process meters.

Budgets: every long test reads its size from an environment variable with a
small CI default; ``QGA_FULL=1`` switches all of them to the long-run figures
documented in the README.
"""
from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Dict

FULL = os.environ.get("QGA_FULL") == "1"


def budget(env: str, quick: int, full: int) -> int:
    """``$env`` if set, else ``full`` under ``QGA_FULL=1``, else ``quick``."""
    value = os.environ.get(env)
    if value:
        return int(value)
    return full if FULL else quick


# qemu-ga prints non-finite floats as glibc does (inf, -inf, nan): valid for
# QEMU's parser, not for Python's json module.
_NONFINITE = re.compile(rb"([:\[,] ?)(-?)(inf|nan)(?= ?[,\]}])")


def parse_reply_line(line: bytes) -> Dict[str, Any]:
    """Check that ``line`` is one well-formed reply and return it decoded.

    Well-formed: exactly one trailing newline and no other, an optional
    leading 0xFF (guest-sync-delimited), a JSON object holding exactly one of
    ``return``/``error`` and optionally ``id``; an error has string ``class``
    and ``desc``.
    """
    assert line.endswith(b"\n") and line.count(b"\n") == 1, f"not one line: {line[:300]!r}"
    body = line[1:] if line.startswith(b"\xff") else line
    assert b"\xff" not in body, f"stray 0xFF in reply: {line[:300]!r}"
    text = _NONFINITE.sub(lambda m: m.group(1) + (m.group(2) + b"Infinity" if m.group(3) == b"inf"
                                                  else b"NaN"), body)
    try:
        reply = json.loads(text)
    except ValueError as exc:
        raise AssertionError(f"reply is not JSON ({exc}): {line[:300]!r}") from None
    assert isinstance(reply, dict), f"reply is not an object: {line[:300]!r}"
    keys = set(reply) - {"id"}
    assert keys in ({"return"}, {"error"}), f"bad reply members {sorted(reply)}: {line[:300]!r}"
    if "error" in reply:
        err = reply["error"]
        assert isinstance(err, dict) and set(err) == {"class", "desc"}, f"bad error: {err!r}"
        assert err["class"] in ("GenericError", "CommandNotFound"), err
        assert isinstance(err["desc"], str) and err["desc"], err
        assert "Traceback" not in err["desc"], err
    return reply


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    """Open file descriptors of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    """Threads of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/task"))


def wait_reaped(pid: int, timeout: float = 60.0) -> None:
    """Poll until ``pid`` has been reaped by its parent (its /proc entry is gone)."""
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}"):
        assert time.monotonic() < deadline, f"pid {pid} was not reaped within {timeout:g} s"
        time.sleep(0.005)


def wait_signal_delivered(pid: int, signum: int, timeout: float = 60.0) -> None:
    """Poll until ``signum`` sent to ``pid`` is no longer pending (its handler was entered)."""
    bit = 1 << (signum - 1)
    deadline = time.monotonic() + timeout
    while True:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            pending = [int(line.split()[1], 16) for line in f if line.startswith(("SigPnd:", "ShdPnd:"))]
        if not any(mask & bit for mask in pending):
            return
        assert time.monotonic() < deadline, f"signal {signum} still pending for pid {pid}"
        time.sleep(0.01)
