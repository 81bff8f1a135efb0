"""/proc/stat per-CPU counters for guest-get-cpustats."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from qga.linux.sysfs import read_file

DEFAULT_PATH = "/proc/stat"
_ULONG = 1 << 64
#: GuestCpuStatsLinux members in column order (after the cpu name).
_MEMBERS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guestnice")


def _numbers(tokens: List[str]) -> List[int]:
    """Leading unsigned numbers, as sscanf("%lu") converts them."""
    out: List[int] = []
    for tok in tokens[:10]:
        try:
            out.append(int(tok) % _ULONG)
        except ValueError:
            break
    return out


def _atoi(text: str) -> int:
    digits = ""
    for c in text:
        if not c.isdigit():
            break
        digits += c
    return int(digits) if digits else 0


def parse_cpustats(text: str, clk_tck: int) -> List[Dict[str, Any]]:
    """GuestCpuStats entries (``type`` linux) for every ``cpuN`` line.

    Values are milliseconds (ticks * 1000 / CLK_TCK in unsigned long).  The
    aggregate ``cpu`` line and non-cpu lines are skipped; a cpu line with
    fewer than four numbers ends the parse (qemu-ga logs and stops there).
    """
    result: List[Dict[str, Any]] = []
    for line in text.splitlines():
        # sscanf("%s") skips leading blanks.  Other lines are never split:
        # "intr" alone holds hundreds of numbers.
        line = line.lstrip()
        if not line.startswith("cpu"):
            continue
        tokens = line.split(None, 11)
        name = tokens[0]
        if name == "cpu":
            continue
        nums = _numbers(tokens[1:])
        if len(nums) < 4:
            break
        ms = [(ticks * 1000) % _ULONG // clk_tck for ticks in nums]
        if len(ms) == 6:
            ms.append(0)  # irq without softirq: qemu-ga reads an unset value; use 0
        entry: Dict[str, Any] = {"type": "linux", "cpu": _atoi(name[3:])}
        entry.update(zip(_MEMBERS, ms))
        result.append(entry)
    return result


def read_cpustats(path: str = DEFAULT_PATH, clk_tck: Optional[int] = None) -> List[Dict[str, Any]]:
    """guest-get-cpustats from ``path``; OSError when it cannot be read."""
    text = read_file(path).decode("ascii", "replace")
    if clk_tck is None:
        clk_tck = os.sysconf("SC_CLK_TCK")
    return parse_cpustats(text, clk_tck)
