"""``guest-get-disks``: every non-empty ``/sys/block`` device with its partitions.

Entries are *prepended* as qemu-ga does, so the result is in reverse
discovery order and each disk's partitions come before the disk.  A disk
without a device node is skipped; ``dependencies`` is present (maybe empty)
exactly when ``slaves/`` can be listed; ``address`` only for non-virtual
disks; ``smart`` only for NVMe.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional

from qga.linux import udev
from qga.linux.blockdev import Sysfs
from qga.log import get_logger

log = get_logger(__name__)

SmartReader = Callable[[str], Optional[Dict[str, Any]]]


def _is_partition_name(disk: str, name: str) -> bool:
    """``<disk><digit>...`` or ``<disk>p<digit>...``."""
    if not name.startswith(disk):
        return False
    rest = name[len(disk):]
    if rest[:1] == "p":
        rest = rest[1:]
    return rest[:1].isdigit() and rest[:1].isascii()


def _dependencies(sysfs_dir: str) -> Optional[List[str]]:
    try:
        with os.scandir(sysfs_dir + "/slaves") as it:
            names = [e.name for e in it]
    except OSError:
        return None
    deps: List[str] = []
    for name in names:
        node = udev.devnode(f"{sysfs_dir}/slaves/{name}")
        if node is not None:
            deps.insert(0, node)
    return deps


def _partitions(disk_dir: str, disk_name: str, disk_dev: str) -> List[Dict[str, Any]]:
    """Partition entries in discovery order (the caller prepends them)."""
    found: List[Dict[str, Any]] = []
    try:
        with os.scandir(disk_dir) as it:
            names = [e.name for e in it if e.is_dir(follow_symlinks=False)
                     and _is_partition_name(disk_name, e.name)]
    except OSError as exc:
        log.debug("cannot list %s: %s", disk_dir, exc)
        return found
    for name in names:
        node = udev.devnode(f"{disk_dir}/{name}")
        if node is None:
            log.debug("failed to get device name for syspath: %s/%s", disk_dir, name)
            continue
        found.append({"name": node, "partition": True, "dependencies": [disk_dev]})
    return found


def _disk_entry(sysfs: Sysfs, disk_dir: str, node: str, uevent: Dict[str, str],
                smart: Optional[SmartReader]) -> Dict[str, Any]:
    alias = udev.properties(uevent, sysfs.udev_data).get("DM_NAME") or None
    try:
        virtual = sysfs.is_virtual(disk_dir)
    except OSError as exc:
        log.debug("failed to check disk path %s, ignoring: %s", disk_dir, exc)
        virtual = True
    address = None if virtual else sysfs.first_address(disk_dir)
    deps = _dependencies(disk_dir)
    entry: Dict[str, Any] = {"name": node, "partition": False}  # GuestDiskInfo schema order
    if deps is not None:
        entry["dependencies"] = deps
    if address is not None:
        entry["address"] = address
    if alias:
        entry["alias"] = alias
    if smart is not None and address is not None and address["bus-type"] == "nvme":
        data = smart(node)
        if data is not None:
            entry["smart"] = data
    return entry


def list_disks(sysfs_root: str = "/sys", udev_data: str = udev.UDEV_DATA,
               smart: Optional[SmartReader] = None) -> List[Dict[str, Any]]:
    """GuestDiskInfo list; ``smart(devnode)`` reads NVMe health (None: never).

    Raises OSError when ``<sysfs_root>/block`` cannot be listed.
    """
    sysfs = Sysfs(sysfs_root, udev_data)
    block = sysfs.root + "/block"
    with os.scandir(block) as it:
        names = [e.name for e in it if e.is_symlink()]
    result: List[Dict[str, Any]] = []
    for name in names:
        disk_dir = f"{block}/{name}"
        size = udev.read_small(disk_dir + "/size")
        if size is None or size == b"0\n":
            continue
        uevent = udev.read_uevent(disk_dir)
        node = udev.devnode_of(uevent)
        if uevent is None or node is None:
            log.debug("failed to get device name for syspath: %s", disk_dir)
            continue
        try:
            entry = _disk_entry(sysfs, disk_dir, node, uevent, smart)
        except Exception:  # one odd disk must not hide the others
            log.exception("skipping disk %s", disk_dir)
            continue
        result.insert(0, entry)
        for part in _partitions(disk_dir, name, node):
            result.insert(0, part)
    return result
