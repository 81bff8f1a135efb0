"""What qemu-ga asks libudev about a block device, read from the files directly.

There is no libudev binding in the stdlib, and libudev itself only reads two
files: the kernel's ``<syspath>/uevent`` (``DEVNAME`` gives the device node,
``MAJOR``/``MINOR`` the device number) and udev's database entry
``/run/udev/data/b<major>:<minor>`` (``E:KEY=value`` lines: ``ID_SERIAL``,
``DM_NAME``).  A guest without udev simply has no database: no serial, no
alias, the same as libudev reports there.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

UDEV_DATA = "/run/udev/data"


def read_small(path: str, limit: int = 8192) -> Optional[bytes]:
    """A small (sysfs) file's bytes, or None when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_uevent(syspath: str) -> Optional[Dict[str, str]]:
    """``KEY=value`` pairs of ``<syspath>/uevent``; None when the device has none."""
    data = read_small(os.path.join(syspath, "uevent"))
    if data is None:
        return None
    env: Dict[str, str] = {}
    for line in os.fsdecode(data).splitlines():
        key, sep, value = line.partition("=")
        if sep:
            env[key] = value
    return env


def devnode_of(uevent: Optional[Dict[str, str]]) -> Optional[str]:
    """libudev's devnode: ``/dev/`` + DEVNAME."""
    if not uevent:
        return None
    name = uevent.get("DEVNAME")
    if not name:
        return None
    return name if name.startswith("/dev/") else "/dev/" + name


def devnode(syspath: str) -> Optional[str]:
    """The device node of a sysfs block device (or partition) path."""
    return devnode_of(read_uevent(syspath))


def properties(uevent: Optional[Dict[str, str]], udev_data: str = UDEV_DATA) -> Dict[str, str]:
    """The udev database properties (``E:`` lines) of a block device."""
    if not uevent or "MAJOR" not in uevent or "MINOR" not in uevent:
        return {}
    data = read_small(os.path.join(udev_data, "b%s:%s" % (uevent["MAJOR"], uevent["MINOR"])), 1 << 20)
    if data is None:
        return {}
    props: Dict[str, str] = {}
    for line in os.fsdecode(data).splitlines():
        if line.startswith("E:"):
            key, sep, value = line[2:].partition("=")
            if sep:
                props[key] = value
    return props
