"""Time, identity and load: guest-get-time, guest-set-time, guest-get-timezone,
guest-get-host-name, guest-get-osinfo, guest-get-users, guest-get-load."""
from __future__ import annotations

import os
import socket
import time
from typing import Any, Dict, List, Optional

from qga.codec import Encoded
from qga.commands.failures import helper_error
from qga.context import Context
from qga.errors import QgaError, strerror
from qga.linux import clock, osrelease, utmp
from qga.linux.helpers import HelperFailed, helper_timeout
from qga.linux.sysfs import FileCache
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
    """guest-get-osinfo's os-release files, parsed once per change of their stat.

    A call costs a stat() of the candidate that is used (and of those before
    it); the C agent opens and parses the file every time.
    """

    def __init__(self) -> None:
        self.files: FileCache[Optional[Dict[str, str]]] = FileCache(osrelease.load)
        self.release: Optional[Dict[str, str]] = None
        self.reply: Dict[str, str] = {}

    def read(self, path: str) -> Optional[Dict[str, str]]:
        """The members of ``path``, None when it is missing, unreadable or unparsable."""
        try:
            return self.files.get(path)
        except OSError:
            return None


@command("guest-get-osinfo", order=36, group="info", inline=True)
def get_osinfo(ctx: Context) -> Dict[str, str]:
    """uname fields plus os-release (``$QGA_OS_RELEASE`` overrides the file)."""
    cache = ctx.subject(OsinfoCache)
    release = osrelease.read_os_release(None, OS_RELEASE_PATHS, cache.read)
    if release is not cache.release:
        cache.reply = Encoded(osrelease.osinfo(release))  # written once per change of the file
        cache.release = release
    return cache.reply


class UsersCache(FileCache[List[Dict[str, Any]]]):
    """guest-get-users' reply, read again when the utmp file's stat changes."""

    def __init__(self) -> None:
        super().__init__(utmp.logged_in_users)


@command("guest-get-users", order=34, group="info", inline=True)
def get_users(ctx: Context) -> List[Dict[str, Any]]:
    """Logged-in users from utmp: one entry per user, earliest login time."""
    # No utmp file: nobody is logged in, as glibc's getutxent finds no records.
    # access() tells without the cost of an exception (many guests have none).
    if not os.access(UTMP_PATH, os.F_OK):
        return []
    try:
        return ctx.subject(UsersCache).get(UTMP_PATH)
    except OSError:
        return []


@command("guest-get-load", order=43, group="info", inline=True, available=lambda: hasattr(os, "getloadavg"))
def get_load(ctx: Context) -> Dict[str, float]:
    """1, 5 and 15 minute load averages."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError as exc:
        raise QgaError(f"cannot query load average: {os.strerror(exc.errno or 0)}") from None
    return {"load1m": one, "load5m": five, "load15m": fifteen}
