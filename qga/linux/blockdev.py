"""Disk addresses of block devices from sysfs, as qemu-ga 10.2 derives them.

The walk starts at ``/sys/dev/block/MAJ:MIN``.  Virtual devices
(``/devices/virtual/block/``: dm, md, loop) recurse into ``slaves/``; a real
device gets one GuestDiskAddress: udev's devnode and ``ID_SERIAL``, then the
PCI controller and bus/target/unit read off the sysfs path for the drivers
libvirt knows (ata_piix, sym53c8xx, virtio-pci, ahci, nvme, ehci/xhci), or the
s390 CCW address.  Addresses are prepended as found, so the list comes out in
reverse discovery order.

Every reader takes the sysfs root and the udev database directory, so tests
run it on captured trees.  Path analysis works on the path *as the guest sees
it* (``/sys/devices/...``), whatever directory the tree lives in.
"""
from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from qga.errors import InternalError, strerror
from qga.linux import udev
from qga.log import get_logger

log = get_logger(__name__)

_HEX = "([0-9a-fA-F]+)"
_FIRST_PCI = re.compile(r"[0-9a-fA-F]+:[0-9a-fA-F]+/%s:%s:%s\.%s" % (_HEX, _HEX, _HEX, _HEX))
_NEXT_PCI = re.compile(r"/%s:%s:%s\.%s" % (_HEX, _HEX, _HEX, _HEX))
_TARGET = re.compile(r"\d+:\d+:\d+/\d+:(\d+):(\d+):(\d+)")
_CCW = re.compile(r"[0-9a-fA-F]+/%s\.%s\.%s/[0-9a-fA-F]+\.[0-9a-fA-F]+\.%s/" % (_HEX, _HEX, _HEX, _HEX))
_LEADING_INT = re.compile(r"[+-]?\d+")
_KNOWN_DRIVERS = frozenset({"ata_piix", "sym53c8xx", "virtio-pci", "ahci", "nvme", "xhci_hcd", "ehci-pci"})
_MAX_HOSTS = 8  # qemu-ga looks at the first 8 hostN/ataN entries only


def realpath(path: str) -> str:
    """C ``realpath(3)`` in three syscalls: the kernel names what an O_PATH fd reached.

    ``os.path.realpath`` lstat()s every component (~100 us for a sysfs device
    path) and does not fail on a missing path; this raises OSError like C.
    """
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        return os.readlink("/proc/self/fd/%d" % fd)
    except OSError:  # no /proc
        return os.path.realpath(path)
    finally:
        os.close(fd)


class SysfsError(OSError, InternalError):
    """A hard sysfs error, worded as qemu-ga words it (``realpath("...")``)."""

    def __init__(self, what: str, path: str, err: int) -> None:
        super().__init__(err, f'{what}("{path}"): {strerror(err)}')
        self.desc = f'{what}("{path}"): {strerror(err)}' if err else f'{what}("{path}")'


@dataclass
class _Address:
    """A GuestDiskAddress being built."""

    pci: List[int] = field(default_factory=lambda: [-1, -1, -1, -1])
    bus_type: str = "unknown"
    bus: int = 0
    target: int = 0
    unit: int = 0
    serial: Optional[str] = None
    dev: Optional[str] = None
    ccw: Optional[Tuple[int, int, int, int]] = None

    def to_json(self) -> Dict[str, Any]:
        """Schema member order, optional members omitted when absent."""
        domain, bus, slot, function = self.pci
        out: Dict[str, Any] = {
            "pci-controller": {"domain": domain, "bus": bus, "slot": slot, "function": function},
            "bus-type": self.bus_type, "bus": self.bus, "target": self.target, "unit": self.unit,
        }
        if self.serial is not None:
            out["serial"] = self.serial
        if self.dev is not None:
            out["dev"] = self.dev
        if self.ccw is not None:
            out["ccw-address"] = dict(zip(("cssid", "ssid", "subchno", "devno"), self.ccw))
        return out


@dataclass
class DeviceInfo:
    """Result of walking one device: fsinfo's ``name`` and ``disk``."""

    name: Optional[str] = None
    disks: List[Dict[str, Any]] = field(default_factory=list)


class Sysfs:
    """Block-device lookups under one sysfs root and udev database."""

    def __init__(self, sysfs_root: str = "/sys", udev_data: str = udev.UDEV_DATA) -> None:
        self.root = sysfs_root if sysfs_root == "/sys" else realpath(sysfs_root)
        self.udev_data = udev_data

    # --- paths ------------------------------------------------------------------
    def guest_view(self, real: str) -> str:
        """``real`` as the guest names it (``/sys/...``), for path analysis."""
        if self.root != "/sys" and (real == self.root or real.startswith(self.root + "/")):
            return "/sys" + real[len(self.root):]
        return real

    def real_path(self, view: str) -> str:
        """Inverse of :meth:`guest_view` (for a prefix of an analysed path)."""
        if self.root != "/sys" and view.startswith("/sys"):
            return self.root + view[4:]
        return view

    def resolve(self, path: str) -> str:
        """C ``realpath``: fails (ENOENT...) when the path or its target is missing."""
        return realpath(path)

    # --- fsinfo walk -------------------------------------------------------------
    def device_info(self, dev: Tuple[int, int], info: Optional[DeviceInfo] = None) -> DeviceInfo:
        """fsinfo's ``name`` and ``disk`` for a device number, filled into ``info`` (or a new one).

        Raises SysfsError; what was found before the error stays in ``info``.
        """
        if info is None:
            info = DeviceInfo()
        self.walk("%s/dev/block/%d:%d" % (self.root, dev[0], dev[1]), info)
        return info

    def walk(self, devpath: str, info: DeviceInfo) -> None:
        """qemu-ga's build_guest_fsinfo_for_device; raises SysfsError on hard errors."""
        try:
            syspath = self.resolve(devpath)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise SysfsError("realpath", devpath, exc.errno or 0) from None
            # e.g. a container without this /sys/dev/block entry
            if info.name is None:
                info.name = os.path.basename(devpath)
            return
        if info.name is None:
            info.name = os.path.basename(syspath)
        view = self.guest_view(syspath)
        if "/devices/virtual/block/" in view:
            self._walk_virtual(syspath, info)
        else:
            addr = self.real_device_address(syspath, view)
            if addr is not None:
                info.disks.insert(0, addr)

    def _walk_virtual(self, syspath: str, info: DeviceInfo) -> None:
        dirpath = syspath + "/slaves"
        try:
            with os.scandir(dirpath) as it:
                slaves = [e.name for e in it if e.is_symlink()]
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return
            raise SysfsError("opendir", dirpath, exc.errno or 0) from None
        for name in slaves:
            self.walk(f"{dirpath}/{name}", info)

    def real_device_address(self, syspath: str, view: str) -> Optional[Dict[str, Any]]:
        """The GuestDiskAddress of a non-virtual device, or None if nothing is known."""
        addr = _Address()
        uevent = udev.read_uevent(syspath)
        if uevent is not None:
            addr.dev = udev.devnode_of(uevent)
            serial = udev.properties(uevent, self.udev_data).get("ID_SERIAL")
            if serial:
                addr.serial = serial
        if "/devices/pci" in view:
            known = self._pci(view, addr)
        elif "/devices/css" in view:
            known = self._ccw(view, addr)
        elif "/virtio" in view:
            known = _nonpci_virtio(view, addr)
        else:
            log.debug("unsupported device type for '%s'", view)
            known = False
        if known or addr.dev or addr.serial:
            return addr.to_json()
        return None

    def _driver(self, view_prefix: str) -> Optional[str]:
        try:
            return os.path.basename(os.readlink(self.real_path(view_prefix) + "/driver"))
        except OSError:
            return None

    def _hosts(self, view_prefix: str, ata: bool) -> List[int]:
        path = self.real_path(view_prefix)
        prefix = "ata" if ata else "host"
        found: List[int] = []
        try:
            with os.scandir(path) as it:
                for entry in it:
                    if len(found) >= _MAX_HOSTS:
                        break
                    if entry.name.startswith(prefix):
                        m = _LEADING_INT.match(entry.name, len(prefix))
                        if m:
                            found.append(int(m.group(0)))
        except OSError as exc:
            raise SysfsError("opendir", path, exc.errno or 0) from None
        return sorted(found)

    def _pci(self, view: str, addr: _Address) -> bool:
        p = view.find("/devices/pci")
        m = _FIRST_PCI.match(view, p + 12)
        if not m:
            log.debug("only pci device is supported: sysfs path '%s'", view)
            return False
        pci = [int(g, 16) for g in m.groups()]
        pos = m.end()
        while True:
            driver = self._driver(view[:pos])
            if driver in _KNOWN_DRIVERS:
                break
            m = _NEXT_PCI.match(view, pos)
            if not m:
                log.debug("unsupported driver or sysfs path '%s'", view)
                return False
            pci = [int(g, 16) for g in m.groups()]
            pos = m.end()

        tgt = _target(view)
        host: Optional[int] = None
        hosts: List[int] = []
        p = view.find("/ata")
        ata, offset = p >= 0, 4
        if not ata:
            p, offset = view.find("/host"), 5
        if p >= 0:
            m = _LEADING_INT.match(view, p + offset)
            if m:
                host = int(m.group(0))
                hosts = self._hosts(view[:p], ata)

        addr.pci = pci
        if driver in ("ata_piix", "ahci"):
            # ata_piix: one host per IDE bus, target*:0:<unit>:0; ahci: one host per unit
            if host is None or tgt is None or host not in hosts:
                log.debug("no host for '%s' (driver '%s')", view, driver)
                return False
            if driver == "ata_piix":
                addr.bus_type, addr.bus, addr.unit = "ide", hosts.index(host), tgt[1]
            else:
                addr.bus_type, addr.unit = "sata", hosts.index(host)
        elif driver == "sym53c8xx":
            if tgt is None:
                return False
            addr.bus_type, addr.unit = "scsi", tgt[1]
        elif driver == "virtio-pci":
            if tgt is not None:  # virtio-scsi: target*:0:0:<unit>
                addr.bus_type, addr.unit = "scsi", tgt[2]
            else:  # virtio-blk: one disk per device
                addr.bus_type = "virtio"
        elif driver == "nvme":
            addr.bus_type = "nvme"
        else:
            addr.bus_type = "usb"
        return True

    def _ccw(self, view: str, addr: _Address) -> bool:
        p = view.find("/devices/css")
        m = _CCW.match(view, p + 12)
        if not m:
            log.debug("could not parse ccw device sysfs path: %s", view)
            return False
        cssid, ssid, subchno, devno = (int(g, 16) for g in m.groups())
        addr.ccw = (cssid, ssid, subchno, devno)
        if "/virtio" in view[p:]:
            _nonpci_virtio(view, addr)
        return True

    # --- helpers used by guest-get-disks ------------------------------------------
    def first_address(self, syspath: str) -> Optional[Dict[str, Any]]:
        """get-disks' address: the first (last found) address of a walk; errors only logged."""
        info = DeviceInfo()
        try:
            self.walk(syspath, info)
        except OSError as exc:
            log.debug("failed to get device info for %s, ignoring: %s", syspath, exc)
        return info.disks[0] if info.disks else None

    def is_virtual(self, path: str) -> bool:
        """True for dm/md/loop...; raises OSError when the path cannot be resolved."""
        return "/devices/virtual/block/" in self.guest_view(self.resolve(path))


def _target(view: str) -> Optional[Tuple[int, int, int]]:
    p = view.find("/target")
    if p < 0:
        return None
    m = _TARGET.match(view, p + 7)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def _nonpci_virtio(view: str, addr: _Address) -> bool:
    if "/virtio" not in view or "/block" not in view:
        log.debug("unsupported virtio device '%s'", view)
        return False
    tgt = _target(view)
    if tgt is not None:  # virtio-scsi: target*:0:<target>:<unit>
        addr.bus_type, addr.bus, addr.target, addr.unit = "scsi", tgt[0], tgt[1], tgt[2]
    else:
        addr.bus_type = "virtio"
    return True
