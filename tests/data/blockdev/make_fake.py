#!/usr/bin/env python3
"""Build ``fake-multibus/``: a hand-made sysfs + udev tree with one disk per bus.

The layouts are the kernel's (public sysfs paths of QEMU guests); the values
are invented.  Regenerate with ``python3 tests/data/blockdev/make_fake.py``.
tests/unit/test_storage.py holds the expected addresses, written by hand
from qemu-ga's rules, not computed by the code under test.

=========  =====================================================================
vda        virtio-blk, 0000:00:04.0, serial "vdaserial", partitions vda1 vda2
vdb        virtio-blk behind a PCIe root port (0000:00:1c.0 -> 0000:01:00.0)
sda        virtio-scsi 0000:00:05.0, host2 target2:0:0 lun 3
sdb        SATA (ahci) 0000:00:1f.2, port ata3 (ata1..ata6 exist)
sdc        IDE (ata_piix) 0000:00:01.1, second channel ata2, slave (target 1)
sdd        LSI (sym53c8xx) 0000:00:07.0, target 4
nvme0n1    NVMe 0000:00:06.0, partition nvme0n1p1
vdc        s390 virtio-ccw 0.0.000a (subchannel 0.0.0002)
dm-0       device mapper "vg-root" over vda2 and sdb
loop0      empty loop (size 0), loop1 backed loop (no slaves)
=========  =====================================================================
"""
from __future__ import annotations

import os
import shutil
import sys
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from capture import keep_empty_dirs  # noqa: E402

PCI = "devices/pci0000:00"
# name, major:minor, device dir (relative to sys), size, serial, partitions [(name, minor)]
DISKS: List[Tuple[str, str, str, str, Optional[str], List[Tuple[str, int]]]] = [
    ("vda", "252:0", f"{PCI}/0000:00:04.0/virtio1/block/vda", "41943040", "vdaserial",
     [("vda1", 1), ("vda2", 2)]),
    ("vdb", "252:16", f"{PCI}/0000:00:1c.0/0000:01:00.0/virtio4/block/vdb", "2097152", None, []),
    ("sda", "8:0", f"{PCI}/0000:00:05.0/virtio2/host2/target2:0:0/2:0:0:3/block/sda", "2097152",
     "0QEMU_QEMU_HARDDISK_drive-scsi0-0-0-3", []),
    ("sdb", "8:16", f"{PCI}/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0/block/sdb", "2097152",
     "QEMU_HARDDISK_QM00005", []),
    ("sdc", "8:32", f"{PCI}/0000:00:01.1/ata2/host1/target1:0:1/1:0:1:0/block/sdc", "2097152",
     "QEMU_HARDDISK_QM00004", []),
    ("sdd", "8:48", f"{PCI}/0000:00:07.0/host0/target0:0:4/0:0:4:0/block/sdd", "2097152", None, []),
    ("nvme0n1", "259:0", f"{PCI}/0000:00:06.0/nvme/nvme0/nvme0n1", "2097152", "QEMU NVMe Ctrl_deadbeef",
     [("nvme0n1p1", 1)]),
    ("vdc", "252:32", "devices/css0/0.0.0002/0.0.000a/virtio2/block/vdc", "2097152", None, []),
    ("dm-0", "253:0", "devices/virtual/block/dm-0", "4194304", None, []),
    ("loop0", "7:0", "devices/virtual/block/loop0", "0", None, []),
    ("loop1", "7:1", "devices/virtual/block/loop1", "204800", None, []),
]
DRIVERS: Dict[str, str] = {
    f"{PCI}/0000:00:04.0": "virtio-pci", f"{PCI}/0000:00:1c.0": "pcieport",
    f"{PCI}/0000:00:1c.0/0000:01:00.0": "virtio-pci", f"{PCI}/0000:00:05.0": "virtio-pci",
    f"{PCI}/0000:00:1f.2": "ahci", f"{PCI}/0000:00:01.1": "ata_piix", f"{PCI}/0000:00:07.0": "sym53c8xx",
    f"{PCI}/0000:00:06.0": "nvme",
}
HOST_DIRS: Dict[str, List[str]] = {
    f"{PCI}/0000:00:1f.2": [f"ata{i}" for i in range(1, 7)],
    f"{PCI}/0000:00:01.1": ["ata1", "ata2"],
    f"{PCI}/0000:00:05.0/virtio2": ["host2"],
    f"{PCI}/0000:00:07.0": ["host0"],
}
SLAVES = {"dm-0": ["vda2", "sdb"]}
UDEV_EXTRA = {"253:0": ["DM_NAME=vg-root", "DM_UUID=LVM-xyz"]}


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def link(path: str, target_abs: str) -> None:
    """A relative symlink ``path`` -> ``target_abs``, as sysfs makes them."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(os.path.relpath(target_abs, os.path.dirname(path)), path)


def build(out: str) -> None:
    if os.path.exists(out):
        shutil.rmtree(out)
    sys_root = os.path.join(out, "sys")
    where: Dict[str, str] = {}
    for name, devno, rel, size, serial, parts in DISKS:
        major, minor = devno.split(":")
        ddir = os.path.join(sys_root, rel)
        where[name] = ddir
        dtype = "disk"
        write(f"{ddir}/uevent", f"MAJOR={major}\nMINOR={minor}\nDEVNAME={name}\nDEVTYPE={dtype}\n")
        write(f"{ddir}/size", size + "\n")
        write(f"{ddir}/dev", devno + "\n")
        os.makedirs(f"{ddir}/slaves", exist_ok=True)
        os.makedirs(f"{ddir}/holders", exist_ok=True)
        os.makedirs(f"{ddir}/queue", exist_ok=True)
        link(f"{sys_root}/block/{name}", ddir)
        link(f"{sys_root}/dev/block/{devno}", ddir)
        props = [f"ID_SERIAL={serial}"] if serial else []
        write(f"{out}/udev/b{devno}", "".join(f"E:{p}\n" for p in props + UDEV_EXTRA.get(devno, [])))
        for pname, pminor in parts:
            pdir = f"{ddir}/{pname}"
            where[pname] = pdir
            pdev = f"{major}:{int(minor) + pminor}"
            write(f"{pdir}/uevent", f"MAJOR={major}\nMINOR={int(minor) + pminor}\nDEVNAME={pname}\n"
                  f"DEVTYPE=partition\nPARTN={pminor}\n")
            write(f"{pdir}/size", "1024000\n")
            write(f"{pdir}/dev", pdev + "\n")
            write(f"{pdir}/partition", f"{pminor}\n")
            link(f"{sys_root}/dev/block/{pdev}", pdir)
            write(f"{out}/udev/b{pdev}", f"E:ID_SERIAL={serial}\n" if serial else "")
    for dm, slaves in SLAVES.items():
        for slave in slaves:
            link(f"{where[dm]}/slaves/{slave}", where[slave])
    for dev, driver in DRIVERS.items():
        link(f"{sys_root}/{dev}/driver", f"{sys_root}/bus/pci/drivers/{driver}")
    for parent, names in HOST_DIRS.items():
        for name in names:
            os.makedirs(f"{sys_root}/{parent}/{name}", exist_ok=True)
    keep_empty_dirs(out)


if __name__ == "__main__":
    build(os.path.join(HERE, "fake-multibus"))
