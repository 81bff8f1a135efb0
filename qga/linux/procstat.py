"""/proc/stat per-CPU counters for guest-get-cpustats."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from qga.linux.sysfs import read_proc

DEFAULT_PATH = "/proc/stat"
_ULONG = 1 << 64
#: GuestCpuStats members: the union's tag, the cpu, then the columns in order.
MEMBERS = ("type", "cpu", "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest",
            "guestnice")


def _ticks(tokens: List[str]) -> List[int]:
    """The leading unsigned numbers of ``tokens`` (at most ten), as sscanf("%lu") converts them."""
    out: List[int] = []
    for tok in tokens:
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


def _cpu_lines(text: str) -> str:
    """The part of ``text`` with every line that names a cpu.

    The kernel writes the cpu lines first: when no later line holds "cpu",
    the rest (interrupt counts, most of the text) is left unsplit.
    """
    end = 0
    while text.startswith("cpu", end):
        end = text.find("\n", end) + 1
        if not end:
            return text
    return text if text.find("cpu", end) >= 0 else text[:end]


def cpustats_rows(text: str, clk_tck: int) -> List[List[int]]:
    """The values of every ``cpuN`` line: N, then the columns in milliseconds.

    Values are ticks * 1000 / CLK_TCK in unsigned long, in :data:`MEMBERS`
    order after ``type``.  The aggregate ``cpu`` line and non-cpu lines are
    skipped; a cpu line with fewer than four numbers ends the parse (qemu-ga
    logs and stops there).
    """
    rows: List[List[int]] = []
    for line in _cpu_lines(text).splitlines():
        tokens = line.split(None, 11)  # blanks first are skipped, as by sscanf("%s")
        name = tokens[0] if tokens else ""
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:  # all numbers (always so on Linux) in one go
            ticks = list(map(int, tokens[1:11]))
        except ValueError:
            ticks = _ticks(tokens[1:11])
        if len(ticks) < 4:
            break
        # (t mod 2**64) * 1000 mod 2**64 is t * 1000 mod 2**64.
        row = [_atoi(name[3:]), *[t * 1000 % _ULONG // clk_tck for t in ticks]]
        if len(ticks) == 6:
            row.append(0)  # irq without softirq: qemu-ga reads an unset value; use 0
        rows.append(row)
    return rows


def parse_cpustats(text: str, clk_tck: int) -> List[Dict[str, Any]]:
    """GuestCpuStats entries (``type`` linux) of :func:`cpustats_rows`."""
    return [dict(zip(MEMBERS, ["linux", *row])) for row in cpustats_rows(text, clk_tck)]


def read_cpustats(path: str = DEFAULT_PATH, clk_tck: Optional[int] = None) -> List[List[int]]:
    """:func:`cpustats_rows` of ``path``; OSError when it cannot be read."""
    text = read_proc(path).decode("ascii", "replace")
    if clk_tck is None:
        clk_tck = os.sysconf("SC_CLK_TCK")
    return cpustats_rows(text, clk_tck)
