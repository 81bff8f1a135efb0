"""``/proc/diskstats`` as ``guest-get-diskstats`` reports it.

Every line counts (loops, partitions, dm); the number of fields decides which
counters are present: 7 (legacy partition lines: 4 counters), 14+ (the 11
classic counters), 18+ (discard), 20 (flush).  Lines with fewer than 7 fields
are skipped, like qemu-ga's sscanf.
"""
from __future__ import annotations

import functools
import operator
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from qga.linux.sysfs import read_proc

DEFAULT_PATH = "/proc/diskstats"

# (field index, member) for each format; indices count major, minor and name.
_LEGACY: Tuple[Tuple[int, str], ...] = (
    (3, "read-ios"), (4, "read-sectors"), (5, "write-ios"), (6, "write-sectors"))
_CLASSIC: Tuple[Tuple[int, str], ...] = (
    (3, "read-ios"), (4, "read-merges"), (5, "read-sectors"), (6, "read-ticks"),
    (7, "write-ios"), (8, "write-merges"), (9, "write-sectors"), (10, "write-ticks"),
    (11, "ios-pgr"), (12, "total-ticks"), (13, "weight-ticks"))
_DISCARD: Tuple[Tuple[int, str], ...] = (
    (14, "discard-ios"), (15, "discard-merges"), (16, "discard-sectors"), (17, "discard-ticks"))
_FLUSH: Tuple[Tuple[int, str], ...] = ((18, "flush-ios"), (19, "flush-ticks"))

#: GuestDiskStats members in schema order (the order the dict is built in).
SCHEMA_ORDER = (
    "read-sectors", "read-ios", "read-merges", "write-sectors", "write-ios", "write-merges",
    "discard-sectors", "discard-ios", "discard-merges", "flush-ios", "read-ticks",
    "write-ticks", "discard-ticks", "flush-ticks", "ios-pgr", "total-ticks", "weight-ticks")
_RANK = {name: i for i, name in enumerate(SCHEMA_ORDER)}
#: A number with a leading zero (or a name starting "0" and a digit: only a false alarm).
_LEADING_ZERO = re.compile(" 0[0-9]")


def _numeric_prefix(fields: List[str]) -> int:
    """How many leading fields sscanf would convert (major, minor, name, numbers...)."""
    n = 0
    for i, text in enumerate(fields[:20]):
        if i != 2 and not text.isdigit():
            break
        n += 1
    return n


@functools.lru_cache(maxsize=None)
def counters(n: int) -> Tuple[Tuple[str, ...], Tuple[int, ...]]:
    """For a line of ``n`` fields: the members present, schema-ordered, and the
    index of each one's field (major, minor and name are fields 0 to 2)."""
    picks: List[Tuple[int, str]] = []
    if n == 7:
        picks.extend(_LEGACY)
    if n >= 14:
        picks.extend(_CLASSIC)
    if n >= 18:
        picks.extend(_DISCARD)
    if n >= 20:
        picks.extend(_FLUSH)
    picks.sort(key=lambda p: _RANK[p[1]])
    return tuple(name for _, name in picks), tuple(i for i, _ in picks)


@functools.lru_cache(maxsize=None)
def _values(n: int) -> Callable[[Sequence[int]], Tuple[int, ...]]:
    """The getter of a line's counters (:func:`counters` order) from its numbers after the name."""
    indices = counters(n)[1]
    if not indices:  # 8 to 13 fields: no counters (itemgetter needs an index)
        return lambda nums: ()
    return operator.itemgetter(*(i - 3 for i in indices))


def parse_diskstats(text: str) -> List[Dict[str, Any]]:
    """GuestDiskStatsInfo entries in file order."""
    result: List[Dict[str, Any]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 7:
            continue
        try:  # fast path: every field numeric (always so on Linux)
            nums = list(map(int, fields[3:20]))
            if not (fields[0].isdigit() and fields[1].isdigit()):
                raise ValueError
            n = len(nums) + 3
        except ValueError:
            n = _numeric_prefix(fields)
            if n < 7:
                continue
            nums = [int(x) for x in fields[3:n]]
        result.append({"name": fields[2], "major": int(fields[0]), "minor": int(fields[1]),
                       "stats": dict(zip(counters(n)[0], _values(n)(nums)))})
    return result


def plain_lines(text: str) -> Optional[List[List[str]]]:
    """The fields of the lines :func:`parse_diskstats` takes (up to 20 each), when
    their numbers are as it would print them and the text is printable ASCII
    without quotes or backslashes; None otherwise.

    "As printed" means decimal digits without a leading zero: on such a line
    each field's text is the value's, so a reply can be written from the
    text without converting the numbers.
    """
    flat = text.replace("\n", " ")
    if not (flat.isascii() and flat.isprintable()) or '"' in flat or "\\" in flat \
            or flat.startswith("0") or _LEADING_ZERO.search(flat):
        return None
    lines: List[List[str]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 7:
            continue
        del fields[20:]
        if not (fields[0] + fields[1] + "".join(fields[3:])).isdigit():
            return None
        lines.append(fields)
    return lines


def read_text(path: str = DEFAULT_PATH) -> str:
    """The file's text; OSError when it cannot be read."""
    return read_proc(path).decode("utf-8", "surrogateescape")


def read_diskstats(path: str = DEFAULT_PATH) -> List[Dict[str, Any]]:
    """Parse the file; OSError when it cannot be read."""
    return parse_diskstats(read_text(path))
