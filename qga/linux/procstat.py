"""/proc/stat per-CPU counters for guest-get-cpustats."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from qga.linux.sysfs import read_proc

DEFAULT_PATH = "/proc/stat"
_ULONG = 1 << 64
#: GuestCpuStats members: the union's tag, the cpu, then the columns in order.
_MEMBERS = ("type", "cpu", "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest",
            "guestnice")


def _ticks(tokens: List[str]) -> List[int]:
    """Up to ten leading unsigned numbers, as sscanf("%lu") converts them."""
    try:  # all numbers (always so on Linux) in one go
        return list(map(int, tokens[:10]))
    except ValueError:
        pass
    out: List[int] = []
    for tok in tokens[:10]:
        try:
            out.append(int(tok))
        except ValueError:
            break
    return out


def _atoi(text: str) -> int:
    if text.isdigit():
        return int(text)
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
        ticks = _ticks(tokens[1:])
        if len(ticks) < 4:
            break
        values: List[Any] = ["linux", _atoi(name[3:])]
        values += [(t % _ULONG * 1000) % _ULONG // clk_tck for t in ticks]
        if len(ticks) == 6:
            values.append(0)  # irq without softirq: qemu-ga reads an unset value; use 0
        result.append(dict(zip(_MEMBERS, values)))
    return result


def read_cpustats(path: str = DEFAULT_PATH, clk_tck: Optional[int] = None) -> List[Dict[str, Any]]:
    """guest-get-cpustats from ``path``; OSError when it cannot be read."""
    text = read_proc(path).decode("ascii", "replace")
    if clk_tck is None:
        clk_tck = os.sysconf("SC_CLK_TCK")
    return parse_cpustats(text, clk_tck)
