"""Time, identity and load: guest-get-time, guest-set-time, guest-get-timezone,
guest-get-host-name, guest-get-osinfo, guest-get-users, guest-get-load."""
from __future__ import annotations

import os
import socket
import time
from typing import Any, Dict, List, Optional

from qga.commands.failures import helper_error
from qga.context import Context
from qga.errors import QgaError, strerror
from qga.linux import clock, osrelease, utmp
from qga.linux.helpers import HelperFailed, helper_timeout
from qga.command import command

#: Overridable by tests (the readers take the path as a parameter).
UTMP_PATH = utmp.DEFAULT_PATH
OS_RELEASE_PATHS = osrelease.DEFAULT_PATHS


@command("guest-get-time", order=4, group="info", inline=True)
def get_time(ctx: Context) -> int:
    """CLOCK_REALTIME in ns, microsecond resolution (the last 3 digits are 000)."""
    return clock.now_ns()


@command("guest-set-time", order=5, group="system-control", args={"*time": "int"}, audit=("time",))
def set_time(ctx: Context, time: Optional[int] = None) -> None:  # noqa: A002 (wire name)
    """Set the clock to ``time`` and write it to the RTC, or without ``time``
    set the clock from the RTC (libvirt's ``domtime --sync``)."""
    ctx.audit("guest-set-time called", time=time)
    if time is not None:
        try:
            clock.check_time(time)
        except clock.InvalidTime as exc:
            raise QgaError(f"Time {time} is too large" if exc.too_large else "Invalid time") from None
        try:
            clock.set_system_time(time)
        except OSError as exc:
            raise QgaError(f"Failed to set time to guest: {strerror(exc.errno or 0)}") from None
    # 10.2: hwclock runs after the clock was set, so its failure is reported
    # with the system clock already changed.
    try:
        clock.sync_hwclock(to_rtc=time is not None, timeout=helper_timeout(ctx.config))
    except HelperFailed as exc:
        raise helper_error(exc) from None


@command("guest-get-timezone", order=35, group="info", inline=True)
def get_timezone(ctx: Context) -> Dict[str, Any]:
    """Abbreviation and UTC offset (seconds east) of the local zone, now."""
    now = time.localtime()
    result: Dict[str, Any] = {}
    if now.tm_zone:
        result["zone"] = now.tm_zone
    result["offset"] = now.tm_gmtoff
    return result


@command("guest-get-host-name", order=33, group="info", inline=True)
def get_host_name(ctx: Context) -> Dict[str, str]:
    """gethostname(), not cached; ``localhost`` if it fails."""
    try:
        name = socket.gethostname()
    except OSError:
        name = "localhost"
    return {"host-name": name}


class OsinfoCache:
    """The last guest-get-osinfo result and what it was read from.

    The reply only changes when an os-release candidate file or uname changes,
    so a call costs two stat() and one uname() instead of opening and parsing
    the file (the C agent parses it every time).
    """

    def __init__(self) -> None:
        self.key: Any = None
        self.value: Dict[str, str] = {}


def _file_identity(path: str) -> Any:
    try:
        st = os.stat(path)
    except OSError as exc:
        return exc.errno
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@command("guest-get-osinfo", order=36, group="info", inline=True)
def get_osinfo(ctx: Context) -> Dict[str, str]:
    """uname fields plus os-release (``$QGA_OS_RELEASE`` overrides the file)."""
    env = os.environ.get("QGA_OS_RELEASE")
    paths = OS_RELEASE_PATHS if env is None else (env,)
    key = (env, tuple(paths), tuple(_file_identity(p) for p in paths), os.uname())
    cache = ctx.subject(OsinfoCache)
    if cache.key != key:
        cache.value = osrelease.osinfo(env, paths)
        cache.key = key
    return cache.value


@command("guest-get-users", order=34, group="info", inline=True)
def get_users(ctx: Context) -> List[Dict[str, Any]]:
    """Logged-in users from utmp: one entry per user, earliest login time."""
    return utmp.logged_in_users(UTMP_PATH)


@command("guest-get-load", order=43, group="info", inline=True, available=lambda: hasattr(os, "getloadavg"))
def get_load(ctx: Context) -> Dict[str, float]:
    """1, 5 and 15 minute load averages."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError as exc:
        raise QgaError(f"cannot query load average: {os.strerror(exc.errno or 0)}") from None
    return {"load1m": one, "load5m": five, "load15m": fifteen}
