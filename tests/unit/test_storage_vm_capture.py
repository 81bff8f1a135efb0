"""The disk readers on sysfs/udev trees captured in real QEMU guests.

``tests/data/blockdev/vm-<bus>/`` were captured by ``python3 -m
tests.vm.test_vm_disks capture``: a TCG guest with a disk on each bus
(virtio-scsi, AHCI/SATA, piix IDE master+slave, NVMe, LSI 53c895a with the
sym53c8xx driver, plus the tier's virtio-blk disks), where
``tests/data/blockdev/capture.py`` copied what the readers look at and
Debian's qemu-ga 7.2 answered guest-get-disks / guest-get-fsinfo
(``expected-*.json``) on the same guest.  The udev database entries are the
ones the VM tier writes the way 60-persistent-storage.rules would (udev's own
ata_id/scsi_id; model_serial_nsid for NVMe).  ``smart-log-*.bin`` is the raw
NVMe SMART/health log page read right after qemu-ga 7.2's reply
(``expected-smart.json``).

So the real-hardware layouts (ataN/hostN numbering, virtio-scsi LUNs,
``nvme/nvme0/nvme0n1`` nesting, ``p``-named partitions) stay covered
without booting a VM.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from qga.linux import blockdev, disks, nvme

DATA = Path(__file__).resolve().parents[1] / "data" / "blockdev"
CAPTURES = sorted(p.name for p in DATA.glob("vm-*") if p.is_dir())

# What each capture must show, independently of qemu-ga 7.2's replies:
# bus -> {disk name: (bus-type, pci slot.function, bus, target, unit, serial)}
TRUTH = {
    "vm-virtio-scsi": {"sda": ("scsi", (0x10, 0), 0, 0, 2, "0QEMU_QEMU_HARDDISK_qga-vscsi")},
    "vm-sata": {"sdb": ("sata", (0x11, 0), 0, 0, 2, "QEMU_HARDDISK_qga-sata")},
    "vm-ide": {"sdc": ("ide", (1, 1), 1, 0, 0, "QEMU_HARDDISK_qga-ide-m"),
               "sdd": ("ide", (1, 1), 1, 0, 1, "QEMU_HARDDISK_qga-ide-s")},
    "vm-nvme": {"nvme0n1": ("nvme", (0x12, 0), 0, 0, 0, "QEMU_NVMe_Ctrl_qga-nvme_1")},
    "vm-lsi": {"sde": ("scsi", (0x13, 0), 0, 0, 3, "0QEMU_QEMU_HARDDISK_qga-lsi")},
    "vm-virtio-blk": {"vda": ("virtio", (6, 0), 0, 0, 0, "qga-data-ext4"),
                      "vdb": ("virtio", (7, 0), 0, 0, 0, "qga-data-xfs")},
}


def _load(cap: str, name: str) -> Any:
    return json.loads((DATA / cap / name).read_text())


def _roots(cap: str) -> Dict[str, str]:
    return {"sysfs_root": str(DATA / cap / "sys"), "udev_data": str(DATA / cap / "udev")}


def test_every_bus_was_captured() -> None:
    assert set(CAPTURES) >= set(TRUTH), CAPTURES


@pytest.mark.parametrize("cap", CAPTURES)
def test_get_disks_matches_qemu_ga_7_2(cap: str) -> None:
    expected: List[Dict[str, Any]] = _load(cap, "expected-disks.json")
    got = disks.list_disks(**_roots(cap))
    key = lambda d: d["name"]  # noqa: E731  (readdir order of the checkout differs)
    assert sorted(got, key=key) == sorted(expected, key=key)
    # Partitions come right before their disk (prepending in discovery order).
    names = [d["name"] for d in got]
    for d in got:
        if d["partition"]:
            assert names.index(d["name"]) < names.index(d["dependencies"][0])


@pytest.mark.parametrize("cap", CAPTURES)
def test_fsinfo_disk_matches_qemu_ga_7_2(cap: str) -> None:
    entries = _load(cap, "expected-fsinfo.json")
    assert entries, "every capture has a mounted filesystem"
    for fs in entries:
        major, minor = (int(x) for x in fs["devno"].split(":"))
        info = blockdev.Sysfs(**_roots(cap)).device_info((major, minor))
        assert (info.name, info.disks) == (fs["name"], fs["disk"])


@pytest.mark.parametrize("cap", sorted(TRUTH))
def test_addresses_are_the_emulated_hardware(cap: str) -> None:
    for name, (bus_type, (slot, fn), bus, target, unit, serial) in TRUTH[cap].items():
        sysfs = blockdev.Sysfs(_roots(cap)["sysfs_root"], _roots(cap)["udev_data"])
        addr = sysfs.first_address(f"{sysfs.root}/block/{name}")
        assert addr == {"pci-controller": {"domain": 0, "bus": 0, "slot": slot, "function": fn},
                        "bus-type": bus_type, "bus": bus, "target": target, "unit": unit,
                        "serial": serial, "dev": f"/dev/{name}"}


# Counters the guest's own I/O (ext4's lazy init, journal) may advance between
# qemu-ga 7.2's reply and the raw read that followed it.
_MOVING = ("data-units-read", "data-units-written", "host-read-commands", "host-write-commands",
           "controller-busy-time")


def test_nvme_smart_log_from_real_controller_matches_qemu_ga_7_2() -> None:
    expected = _load("vm-nvme", "expected-smart.json")["/dev/nvme0n1"]
    got = nvme.parse_smart_log((DATA / "vm-nvme" / "smart-log-nvme0n1.bin").read_bytes())
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        if key.rsplit("-", 1)[0] in _MOVING:
            assert got[key] >= value, key
        else:
            assert got[key] == value, key
    assert 273 <= got["temperature"] <= 373  # kelvin: QEMU's controller reports 323 K
    assert got["host-read-commands-lo"] > 0  # the guest had mounted it
