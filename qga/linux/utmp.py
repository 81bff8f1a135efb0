"""A small reader for glibc's utmp/utmpx file (guest-get-users).

glibc's ``struct utmpx`` is 384 bytes on x86_64 and the other "TIME64_COMPAT32"
ABIs (32-bit ``ut_session`` and ``ut_tv``, shared with 32-bit programs), and
400 bytes on the other 64-bit ABIs (aarch64, riscv64, s390x), where they are
``long`` and ``struct timeval``.  32-bit ABIs use the 384-byte layout.
"""
from __future__ import annotations

import functools
import os
import struct
from typing import Any, Dict, Iterator, List, NamedTuple, Optional

from qga.cstring import c_text

DEFAULT_PATH = "/var/run/utmp"
USER_PROCESS = 7

# type, pid, line, id, user, host, exit.termination, exit.exit, session, tv_sec, tv_usec, addr_v6
_COMPAT32 = struct.Struct("=h2xi32s4s32s256shhiii16s20x")
_NATIVE64 = struct.Struct("=h2xi32s4s32s256shhqqq16s20x4x")
_COMPAT32_MACHINES = ("x86_64", "i386", "i486", "i586", "i686", "ppc64", "ppc64le",
                      "sparc64", "mips64", "armv7l", "armv6l", "ppc")


class UtmpRecord(NamedTuple):
    """The members of one record that guest-get-users needs."""

    type: int
    pid: int
    line: str
    user: str
    host: str
    tv_sec: int
    tv_usec: int


@functools.lru_cache(maxsize=None)
def layout_for(machine: Optional[str] = None) -> struct.Struct:
    """The record layout of this machine's glibc (the machine never changes under a process)."""
    machine = machine or os.uname().machine
    if machine in _COMPAT32_MACHINES or struct.calcsize("P") == 4:
        return _COMPAT32
    return _NATIVE64


def read_utmp(path: str = DEFAULT_PATH, layout: Optional[struct.Struct] = None) -> Iterator[UtmpRecord]:
    """Records of ``path`` in file order; a trailing partial record is ignored."""
    rec = layout or layout_for()
    with open(path, "rb") as f:
        data = f.read()
    for offset in range(0, len(data) - rec.size + 1, rec.size):
        (ut_type, pid, line, _id, user, host, _term, _exit, _session,
         tv_sec, tv_usec, _addr) = rec.unpack_from(data, offset)
        yield UtmpRecord(ut_type, pid, c_text(line), c_text(user), c_text(host), tv_sec, tv_usec)


def logged_in_users(path: str = DEFAULT_PATH, layout: Optional[struct.Struct] = None) -> List[Dict[str, Any]]:
    """guest-get-users: one entry per user name, first-seen order, earliest login.

    A missing or unreadable file means nobody is logged in (glibc's
    getutxent simply returns no records then).
    """
    users: Dict[str, Dict[str, Any]] = {}
    try:
        records = list(read_utmp(path, layout))
    except OSError:
        return []
    for rec in records:
        if rec.type != USER_PROCESS:
            continue
        login = rec.tv_sec + rec.tv_usec / 1000000.0
        seen = users.get(rec.user)
        if seen is None:
            users[rec.user] = {"user": rec.user, "login-time": login}
        elif login < seen["login-time"]:
            seen["login-time"] = login
    return list(users.values())
