"""System clock and RTC (guest-get-time / guest-set-time); the boot clock and boot id."""
from __future__ import annotations

import errno
import os
import time
from typing import Optional

from qga.errors import InternalError
from qga.linux.helpers import run_helper

HWCLOCK = "/sbin/hwclock"
NSEC = 1_000_000_000
BOOT_ID = "/proc/sys/kernel/random/boot_id"


def boottime() -> float:
    """CLOCK_BOOTTIME in seconds: monotonic, counts suspend, restarts from 0 at boot."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def boot_id(path: str = BOOT_ID) -> str:
    """The kernel's random id of this boot ("" when unreadable): a reboot changes it."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


class InvalidTime(InternalError):
    """A guest-set-time argument qemu-ga refuses; ``too_large``: its seconds
    do not fit a 64-bit time_t (else the year is outside 1970..2069)."""

    def __init__(self, time_ns: int, too_large: bool) -> None:
        super().__init__(f"invalid time {time_ns}")
        self.time_ns = time_ns
        self.too_large = too_large


def now_ns() -> int:
    """CLOCK_REALTIME at microsecond resolution, in ns (gettimeofday semantics)."""
    return time.time_ns() // 1000 * 1000


def check_time(time_ns: int) -> None:
    """Validate a guest-set-time argument as qemu-ga does (before touching the clock); InvalidTime.

    The division truncates toward zero, so small negative values pass here
    and fail later in settimeofday() with EINVAL, as in qemu-ga.
    """
    sec = _trunc_div(time_ns, NSEC)
    if not -(1 << 63) <= sec < 1 << 63:  # cannot happen with a 64-bit time_t
        raise InvalidTime(time_ns, too_large=True)
    try:
        import datetime  # only here: it is not needed to start the agent

        year = datetime.datetime.fromtimestamp(sec, datetime.timezone.utc).year
    except (OverflowError, OSError, ValueError):
        year = -1
    if not 1970 <= year < 2070:
        raise InvalidTime(time_ns, too_large=False)


def _trunc_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def set_system_time(time_ns: int) -> None:
    """settimeofday(sec, usec) with C's truncating split; OSError (negative parts: EINVAL)."""
    sec = _trunc_div(time_ns, NSEC)
    usec = _trunc_div(time_ns - sec * NSEC, 1000)
    if sec < 0 or usec < 0:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    time.clock_settime_ns(time.CLOCK_REALTIME, sec * NSEC + usec * 1000)


def sync_hwclock(to_rtc: bool, hwclock: Optional[str] = None, timeout: Optional[float] = None) -> None:
    """``hwclock -w`` (system time to RTC) or ``-s`` (RTC to system time); HelperFailed."""
    run_helper([hwclock or HWCLOCK, "-w" if to_rtc else "-s"], "set hardware clock to system time",
               timeout=timeout)
