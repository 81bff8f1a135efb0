"""/proc/stat per-CPU counters for guest-get-cpustats."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

DEFAULT_PATH = "/proc/stat"
_ULONG = 1 << 64
# Column index (0 = user) -> member, appended when that many numbers exist.
_OPTIONAL = ((5, ("iowait",)), (6, ("irq", "softirq")), (8, ("steal",)), (9, ("guest",)), (10, ("guestnice",)))


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
        tokens = line.split()
        if not tokens:
            continue
        name = tokens[0]
        if not name.startswith("cpu") or name == "cpu":
            continue
        nums = _numbers(tokens[1:])
        if len(nums) < 4:
            break

        def ms(ticks: int) -> int:
            return (ticks * 1000) % _ULONG // clk_tck

        entry: Dict[str, Any] = {"type": "linux", "cpu": _atoi(name[3:]),
                                 "user": ms(nums[0]), "nice": ms(nums[1]),
                                 "system": ms(nums[2]), "idle": ms(nums[3])}
        for needed, members in _OPTIONAL:
            if len(nums) >= needed:
                for i, member in enumerate(members):
                    index = needed - 1 + i
                    # With irq but no softirq qemu-ga reads an unset value; use 0.
                    entry[member] = ms(nums[index]) if index < len(nums) else 0
        result.append(entry)
    return result


def read_cpustats(path: str = DEFAULT_PATH, clk_tck: Optional[int] = None) -> List[Dict[str, Any]]:
    """guest-get-cpustats from ``path``; OSError when it cannot be read."""
    with open(path, encoding="ascii", errors="replace") as f:
        text = f.read()
    if clk_tck is None:
        clk_tck = os.sysconf("SC_CLK_TCK")
    return parse_cpustats(text, clk_tck)

