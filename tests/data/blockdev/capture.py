#!/usr/bin/env python3
"""Capture the sysfs/udev subset the disk readers look at, plus qemu-ga's answers.

Run inside a guest (as root, with qemu-ga running on a unix socket if you
want the expected answers recorded)::

    python3 tests/data/blockdev/capture.py --out tests/data/blockdev/<name> \\
        [--agent /path/to/qemu-ga.sock]

It copies, for every /sys/block device, its partitions and (recursively) its
slaves: the ``/sys/block`` and ``/sys/dev/block`` links, each device
directory's ``uevent``/``size``/``dev`` files and ``slaves/`` links, the
``driver`` link of every ancestor, the ``hostN``/``ataN`` sibling names the
SCSI/ATA numbering needs, and the udev database entries.  With ``--agent``
it stores qemu-ga's guest-get-disks and guest-get-fsinfo replies as
``expected-disks.json`` / ``expected-fsinfo.json`` (plus the mounts'
device numbers) so tests can compare the readers with the C agent.

In a VM the agent listens on virtio-serial, not a socket: there the host
asks the agent and writes the expected files itself
(``python3 -m tests.vm.test_vm_disks capture``).  ``--only sda,sdb`` keeps
just those ``/sys/block`` entries (one tree per bus), and ``--smart-log DEV``
stores the raw 512-byte NVMe SMART/health log page of DEV as
``smart-log-<name>.bin`` (read with qemu-ga-py's own ioctl code).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
from typing import Any, Dict, List, Optional, Set

_HOSTLIKE = re.compile(r"^(host|ata)\d+$")


def _copy_file(src: str, dst: str) -> None:
    try:
        with open(src, "rb") as f:
            data = f.read()
    except OSError:
        return
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, "wb") as f:
        f.write(data)


def _link(src: str, dst: str) -> None:
    if os.path.lexists(dst):
        return
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.symlink(os.readlink(src), dst)


class Capture:
    """Copies the reader-relevant part of one sysfs tree into ``out``."""

    def __init__(self, sys_root: str, udev: str, out: str, only: Optional[Set[str]] = None) -> None:
        self.sys = os.path.realpath(sys_root)
        self.udev = udev
        self.out = out
        self.only = only
        self.done: Set[str] = set()

    def dst(self, path: str) -> str:
        return os.path.join(self.out, "sys", os.path.relpath(path, self.sys))

    def device(self, real: str) -> None:
        if real in self.done or not real.startswith(self.sys + "/devices/"):
            return
        self.done.add(real)
        for name in ("uevent", "size", "dev"):
            _copy_file(os.path.join(real, name), os.path.join(self.dst(real), name))
        os.makedirs(self.dst(real), exist_ok=True)
        slaves = os.path.join(real, "slaves")
        if os.path.isdir(slaves):
            os.makedirs(os.path.join(self.dst(real), "slaves"), exist_ok=True)
            for name in sorted(os.listdir(slaves)):
                _link(os.path.join(slaves, name), os.path.join(self.dst(real), "slaves", name))
                self.device(os.path.realpath(os.path.join(slaves, name)))
        for name in sorted(os.listdir(real)):
            sub = os.path.join(real, name)
            if name.startswith(os.path.basename(real)) and os.path.isfile(os.path.join(sub, "partition")):
                self.device(sub)
        self.ancestors(real)
        self.udev_entry(real)

    def ancestors(self, real: str) -> None:
        parent = os.path.dirname(real)
        while parent.startswith(self.sys + "/devices"):
            drv = os.path.join(parent, "driver")
            if os.path.islink(drv):
                _link(drv, os.path.join(self.dst(parent), "driver"))
            if _HOSTLIKE.match(os.path.basename(parent)):
                grand = os.path.dirname(parent)
                for name in os.listdir(grand):
                    if _HOSTLIKE.match(name):
                        os.makedirs(os.path.join(self.dst(grand), name), exist_ok=True)
            parent = os.path.dirname(parent)

    def udev_entry(self, real: str) -> None:
        try:
            with open(os.path.join(real, "dev")) as f:
                devno = f.read().strip()
        except OSError:
            return
        _copy_file(os.path.join(self.udev, "b" + devno), os.path.join(self.out, "udev", "b" + devno))
        dev_link = os.path.join(self.sys, "dev", "block", devno)
        if os.path.islink(dev_link):
            _link(dev_link, self.dst(dev_link))

    def run(self) -> None:
        block = os.path.join(self.sys, "block")
        for name in sorted(os.listdir(block)):
            if self.only is not None and name not in self.only:
                continue
            _link(os.path.join(block, name), self.dst(os.path.join(block, name)))
            self.device(os.path.realpath(os.path.join(block, name)))
        os.makedirs(os.path.join(self.out, "udev"), exist_ok=True)
        keep_empty_dirs(self.out)


def keep_empty_dirs(top: str) -> None:
    """git drops empty directories; an empty ``slaves/`` still means "no dependencies".

    A ``.keep`` regular file is invisible to the readers (they follow links
    and read ``uevent`` files only).
    """
    for dirpath, dirnames, filenames in os.walk(top):
        if not dirnames and not filenames:
            open(os.path.join(dirpath, ".keep"), "w").close()


def _ask(sock_path: str, command: str) -> Any:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock_path)
        s.sendall(json.dumps({"execute": command}).encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)["return"]


def _smart_log(dev: str) -> bytes:
    """The raw SMART/health log page, through qemu-ga-py's admin-command layout."""
    import array
    import fcntl
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
    from qga.linux import nvme
    buf = array.array("B", bytes(512))
    fd = os.open(dev, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, nvme.NVME_IOCTL_ADMIN_CMD, nvme.build_get_log_page(buf.buffer_info()[0]), True)
    finally:
        os.close(fd)
    return buf.tobytes()


def _mount_devices() -> Dict[str, str]:
    devs: Dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            devs.setdefault(fields[4], fields[2])
    return devs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--sys", default="/sys")
    ap.add_argument("--udev", default="/run/udev/data")
    ap.add_argument("--agent", help="qemu-ga unix socket: record its disks/fsinfo replies")
    ap.add_argument("--only", help="comma-separated /sys/block names to keep (default: all)")
    ap.add_argument("--smart-log", action="append", default=[], metavar="DEV",
                    help="store the raw NVMe SMART log page of DEV (e.g. /dev/nvme0n1)")
    opts = ap.parse_args()
    if os.path.exists(opts.out):
        shutil.rmtree(opts.out)
    only = set(opts.only.split(",")) if opts.only else None
    Capture(opts.sys, opts.udev, opts.out, only).run()
    for dev in opts.smart_log:
        with open(os.path.join(opts.out, "smart-log-%s.bin" % os.path.basename(dev)), "wb") as f:
            f.write(_smart_log(dev))
    if opts.agent:
        disks = _ask(opts.agent, "guest-get-disks")
        fsinfo = _ask(opts.agent, "guest-get-fsinfo")
        devs = _mount_devices()
        expected: List[Dict[str, Any]] = [
            {"devno": devs.get(fs["mountpoint"]), "name": fs["name"], "disk": fs["disk"]} for fs in fsinfo]
        for name, data in (("expected-disks.json", disks), ("expected-fsinfo.json", expected)):
            with open(os.path.join(opts.out, name), "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.write("\n")


if __name__ == "__main__":
    main()
