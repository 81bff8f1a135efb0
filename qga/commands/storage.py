"""guest-get-fsinfo, guest-get-disks, guest-get-diskstats.

Thin handlers over :mod:`qga.linux.blockdev`, :mod:`qga.linux.disks` and
:mod:`qga.linux.diskstats`.  Beyond qemu-ga: a sysfs error on one mount is
logged and that entry keeps what could be read (qemu-ga fails the whole
command), and statvfs is time-bounded so a hung filesystem cannot wedge the
agent (see :mod:`qga.fsstat`).
"""
from __future__ import annotations

import functools
import operator
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from qga.codec import JsonText, object_template
from qga.commands.failures import could_not_open
from qga.context import Context
from qga.errors import QgaError, strerror
from qga.linux import diskstats, nvme, on_linux
from qga.linux.blockdev import DeviceInfo, Sysfs, SysfsError
from qga.linux.disks import list_disks
from qga.fsstat import BoundedStatvfs
from qga.linux.mounts import Mount, list_mounts
from qga.command import command
from qga.log import get_logger

log = get_logger(__name__)

_U64 = (1 << 64) - 1
#: Overridable by tests.
DISKSTATS = diskstats.DEFAULT_PATH


def _statvfs(ctx: Context) -> BoundedStatvfs:
    timeout = ctx.config.statvfs_timeout
    return ctx.subject(BoundedStatvfs, lambda: BoundedStatvfs(timeout))


def fsinfo_entry(sysfs: Sysfs, mount: Mount, st: Optional[os.statvfs_result]) -> Dict[str, Any]:
    """One GuestFilesystemInfo (schema member order); ``st`` None omits the byte counts."""
    info = DeviceInfo()
    try:
        sysfs.device_info((mount.devmajor, mount.devminor), info)
    except SysfsError as exc:  # qemu-ga fails the whole command here
        log.warning("guest-get-fsinfo: %s: %s (disk list may be incomplete)", mount.dirname, exc.desc)
    entry: Dict[str, Any] = {
        "name": info.name or "%d:%d" % (mount.devmajor, mount.devminor),
        "mountpoint": mount.dirname,
        "type": mount.devtype,
    }
    if st is not None:
        used = (st.f_blocks - st.f_bfree) & _U64
        entry["used-bytes"] = (used * st.f_frsize) & _U64
        entry["total-bytes"] = ((used + st.f_bavail) * st.f_frsize) & _U64
        entry["total-bytes-privileged"] = (st.f_blocks * st.f_frsize) & _U64
    entry["disk"] = info.disks
    return entry


@command("guest-get-fsinfo", order=26, group="info", available=on_linux)
def get_fsinfo(ctx: Context) -> List[Dict[str, Any]]:
    """Mounted block filesystems in reverse mount order, with their disks."""
    try:
        mounts = list_mounts()
    except OSError:
        raise QgaError("failed to open mtab file: '/proc/self/mounts'") from None
    mounts.reverse()
    sysfs = Sysfs()
    stats = _statvfs(ctx).statvfs_many([m.dirname for m in mounts])
    result: List[Dict[str, Any]] = []
    for mount in mounts:
        try:
            result.append(fsinfo_entry(sysfs, mount, stats.get(mount.dirname)))
        except Exception:  # never let one mount hide the others
            log.exception("guest-get-fsinfo: skipping %s", mount.dirname)
    return result


@command("guest-get-disks", order=25, group="info", available=on_linux)
def get_disks(ctx: Context) -> List[Dict[str, Any]]:
    """Disks and partitions from /sys/block (reverse discovery order)."""
    try:
        return list_disks(smart=nvme.read_smart)
    except OSError as exc:
        raise QgaError(f'Can\'t open directory "/sys/block": {strerror(exc.errno or 0)}') from None


# Inline: one procfs read that never waits on a device; the worker handoff
# would cost more than the read itself.
@command("guest-get-diskstats", order=41, group="info", inline=True, available=on_linux)
def get_diskstats(ctx: Context) -> Union[JsonText, List[Dict[str, Any]]]:
    """Every /proc/diskstats line."""
    try:
        text = diskstats.read_text(DISKSTATS)
    except OSError as exc:
        raise could_not_open(DISKSTATS, exc) from None
    lines = diskstats.plain_lines(text)
    if lines is None:
        return diskstats.parse_diskstats(text)
    # Written from the fields' text: one template per field count.
    objects = []
    for fields in lines:
        template, values = _diskstats_format(len(fields))
        objects.append(template % values(fields))
    return JsonText.array(objects)


#: Field index of the GuestDiskStatsInfo members other than stats.
_FIELD = {"major": 0, "minor": 1, "name": 2}


@functools.lru_cache(maxsize=None)
def _diskstats_format(n: int) -> Tuple[str, Callable[[Sequence[str]], Tuple[str, ...]]]:
    """The template of a GuestDiskStatsInfo from a plain line of ``n`` fields
    (see :func:`diskstats.plain_lines`), and the getter of its values from the fields."""
    names, indices = diskstats.counters(n)
    stats, stats_positions = object_template(names) if names else ("{}", ())
    keys = ("name", "major", "minor", "stats")
    template, positions = object_template(keys)
    slots: List[str] = []
    picks: List[int] = []
    for key in (keys[p] for p in positions):
        if key == "stats":
            slots.append(stats)
            picks.extend(indices[p] for p in stats_positions)
        else:
            slots.append('"%s"' if key == "name" else "%s")  # a plain name needs no escaping
            picks.append(_FIELD[key])
    return template % tuple(slots), operator.itemgetter(*picks)
