"""/proc/stat per-CPU counters for guest-get-cpustats."""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional

from qga.linux.sysfs import read_proc

DEFAULT_PATH = "/proc/stat"
_ULONG = 1 << 64
#: GuestCpuStats members: the union's tag, the cpu, then the columns in order.
MEMBERS = ("type", "cpu", "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest",
            "guestnice")


#: A cpuN line of ten counters, each as Linux prints it (see plain_rows).
_PLAIN_CPU = re.compile(r"^cpu(0|[1-9][0-9]{0,9})" + r" (0|[1-9][0-9]{0,15})" * 10 + r"$", re.MULTILINE)


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


def plain_rows(text: str, clk_tck: int) -> Optional[List[List[str]]]:
    """:func:`cpustats_rows` as JSON number texts, when ``text`` is as Linux
    writes it and CLK_TCK is 100 (USER_HZ on every mainstream architecture);
    None otherwise (or when there is no cpu line).

    "As Linux writes it": the aggregate ``cpu`` line first, and every other
    occurrence of "cpu" the name of a line of ten counters, each decimal without
    a leading zero and of at most 16 digits, so that ticks * 1000 stays below
    2**64 and the milliseconds are the ticks' text with a 0 appended.
    """
    if clk_tck != 100 or not text.startswith("cpu "):
        return None
    # The cpu lines come first: the regex need not scan the interrupt counts.
    end = text.find("\n", text.rfind("cpu"))
    end = len(text) if end < 0 else end
    rows = _PLAIN_CPU.findall(text, 0, end)
    if not rows or text.count("cpu", 0, end) != len(rows) + 1:
        return None
    return [[cpu, *[t + "0" if t != "0" else t for t in ticks]] for cpu, *ticks in rows]


def parse_cpustats(text: str, clk_tck: int) -> List[Dict[str, Any]]:
    """GuestCpuStats entries (``type`` linux) of :func:`cpustats_rows`."""
    return [dict(zip(MEMBERS, ["linux", *row])) for row in cpustats_rows(text, clk_tck)]


def read_cpustats(path: str = DEFAULT_PATH, clk_tck: Optional[int] = None) -> List[List[Any]]:
    """The rows of ``path``: :func:`plain_rows` (texts) where they apply, else
    :func:`cpustats_rows` (numbers); OSError when it cannot be read."""
    text = read_proc(path, single=True).decode("ascii", "replace")  # single_open in the kernel
    if clk_tck is None:
        clk_tck = os.sysconf("SC_CLK_TCK")
    return plain_rows(text, clk_tck) or cpustats_rows(text, clk_tck)
