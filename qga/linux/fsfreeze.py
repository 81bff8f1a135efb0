"""FIFREEZE / FITHAW / FITRIM on one mounted filesystem.

Each ioctl helper takes an open descriptor of the mount point (opened with
:func:`open_mount`) and raises :class:`OSError` with the kernel's errno; the
command layer turns errno into qemu-ga's texts.  The hook itself runs through
:func:`qga.linux.helpers.run_helper`.
"""
from __future__ import annotations

import fcntl
import os
import struct
from typing import Tuple


# _IOWR('X', 119, int), _IOWR('X', 120, int), _IOWR('X', 121, struct fstrim_range)
FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
FITRIM = 0xC0185879

_RANGE = struct.Struct("=QQQ")  # struct fstrim_range {start, len, minlen}
UINT64_MAX = (1 << 64) - 1


def open_mount(path: str) -> int:
    """``open(path, O_RDONLY|O_CLOEXEC)`` as qemu-ga does for each mount.

    Not :func:`qga.linux.sysfs.open_dir`: no ``O_DIRECTORY`` (a file can be a
    mount point), and the caller words the ``OSError`` itself.
    """
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def freeze(fd: int) -> None:
    """FIFREEZE the filesystem of ``fd``."""
    fcntl.ioctl(fd, FIFREEZE, 0)


def thaw(fd: int) -> None:
    """FITHAW the filesystem of ``fd`` (one level of a nested freeze)."""
    fcntl.ioctl(fd, FITHAW, 0)


def thaw_all_levels(fd: int) -> bool:
    """Repeat FITHAW until it fails; True when at least one succeeded."""
    thawed = False
    while True:
        try:
            thaw(fd)
        except OSError:
            return thawed
        thawed = True


def _to_int64(value: int) -> int:
    """C's cast of a u64 result to the schema's int64."""
    return value - (1 << 64) if value >= 1 << 63 else value


def trim(fd: int, minimum: int = 0) -> Tuple[int, int]:
    """FITRIM the whole filesystem; returns (trimmed bytes, minimum used)."""
    buf = bytearray(_RANGE.pack(0, UINT64_MAX, minimum & UINT64_MAX))
    fcntl.ioctl(fd, FITRIM, buf, True)
    _start, length, minlen = _RANGE.unpack(buf)
    return _to_int64(length), _to_int64(minlen)


