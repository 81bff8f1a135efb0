"""Regenerate the utmp fixtures with glibc's own writer (pututxline).

Run as ``python3 tests/data/utmp/make_utmp.py`` on x86_64 glibc; the records
are written by libc, so the fixture has the exact on-disk layout that
qemu-ga's getutxent() reads.
"""
from __future__ import annotations

import ctypes
import os
import sys

LOGIN_PROCESS, USER_PROCESS, DEAD_PROCESS, BOOT_TIME = 6, 7, 8, 2


class ExitStatus(ctypes.Structure):
    _fields_ = [("e_termination", ctypes.c_short), ("e_exit", ctypes.c_short)]


class TimeVal32(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int32), ("tv_usec", ctypes.c_int32)]


class Utmpx(ctypes.Structure):  # x86_64 layout (384 bytes)
    _fields_ = [("ut_type", ctypes.c_short), ("ut_pid", ctypes.c_int),
                ("ut_line", ctypes.c_char * 32), ("ut_id", ctypes.c_char * 4),
                ("ut_user", ctypes.c_char * 32), ("ut_host", ctypes.c_char * 256),
                ("ut_exit", ExitStatus), ("ut_session", ctypes.c_int32), ("ut_tv", TimeVal32),
                ("ut_addr_v6", ctypes.c_int32 * 4), ("unused", ctypes.c_char * 20)]


RECORDS = [
    (BOOT_TIME, 0, b"~", b"~~", b"reboot", b"6.1.0", 1700000000, 0),
    (LOGIN_PROCESS, 501, b"tty2", b"tty2", b"LOGIN", b"", 1700000005, 0),
    (USER_PROCESS, 600, b"tty1", b"tty1", b"alice", b"", 1700000100, 500000),
    (USER_PROCESS, 601, b"pts/0", b"ts/0", b"bob", b"192.0.2.7", 1700000200, 250000),
    (USER_PROCESS, 602, b"pts/1", b"ts/1", b"alice", b"192.0.2.8", 1699990000, 125000),
    (DEAD_PROCESS, 603, b"pts/2", b"ts/2", b"carol", b"", 1700000300, 0),
    (USER_PROCESS, 604, b"pts/3", b"ts/3", b"a" * 32, b"", 1700000400, 999999),
    (USER_PROCESS, 605, b"pts/4", b"ts/4", b"bob", b"", 1700000500, 0),
]


def main(path: str) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    assert ctypes.sizeof(Utmpx) == 384
    open(path, "wb").close()
    if libc.utmpxname(path.encode()) != 0:
        raise OSError(ctypes.get_errno(), "utmpxname")
    libc.pututxline.restype = ctypes.c_void_p
    libc.setutxent()
    for ut_type, pid, line, ut_id, user, host, sec, usec in RECORDS:
        rec = Utmpx(ut_type=ut_type, ut_pid=pid, ut_line=line, ut_id=ut_id, ut_user=user, ut_host=host)
        rec.ut_tv.tv_sec, rec.ut_tv.tv_usec = sec, usec
        if not libc.pututxline(ctypes.byref(rec)):
            raise OSError(ctypes.get_errno(), "pututxline")
    libc.endutxent()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "x86_64-utmp"))
