"""Disk readers on captured/constructed sysfs trees, diskstats, bounded statvfs, handlers.

``tests/data/blockdev/fake-multibus`` has one disk per bus kind (see
make_fake.py); the expected addresses below are written by hand from
qemu-ga 10.2's rules.  ``host-virtio`` was captured on the development
machine together with the system qemu-ga's replies.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

from qga.codec import dumps
from qga.commands import storage
from qga.errors import QgaError
from qga import fsstat
from qga.linux import blockdev, diskstats, disks, nvme
from qga.linux.mounts import Mount

DATA = Path(__file__).resolve().parents[1] / "data"
FAKE = DATA / "blockdev" / "fake-multibus"
HOST = DATA / "blockdev" / "host-virtio"


def pci(domain: int, bus: int, slot: int, function: int) -> Dict[str, int]:
    return {"domain": domain, "bus": bus, "slot": slot, "function": function}


def addr(pci_addr: Dict[str, int], bus_type: str, dev: str, serial: Optional[str] = None,
         bus: int = 0, target: int = 0, unit: int = 0, ccw: Optional[Dict[str, int]] = None) -> Dict[str, Any]:
    out: Dict[str, Any] = {"pci-controller": pci_addr, "bus-type": bus_type, "bus": bus,
                           "target": target, "unit": unit}
    if serial is not None:
        out["serial"] = serial
    out["dev"] = dev
    if ccw is not None:
        out["ccw-address"] = ccw
    return out


NO_PCI = pci(-1, -1, -1, -1)
VDA2 = addr(pci(0, 0, 4, 0), "virtio", "/dev/vda2", "vdaserial")
SDB = addr(pci(0, 0, 31, 2), "sata", "/dev/sdb", "QEMU_HARDDISK_QM00005", unit=2)
EXPECTED_FS = {
    (252, 0): ("vda", [addr(pci(0, 0, 4, 0), "virtio", "/dev/vda", "vdaserial")]),
    (252, 2): ("vda2", [VDA2]),
    (252, 16): ("vdb", [addr(pci(0, 1, 0, 0), "virtio", "/dev/vdb")]),  # behind a root port
    (8, 0): ("sda", [addr(pci(0, 0, 5, 0), "scsi", "/dev/sda", "0QEMU_QEMU_HARDDISK_drive-scsi0-0-0-3",
                          unit=3)]),
    (8, 16): ("sdb", [SDB]),  # ata3 among ata1..ata6 -> unit 2
    (8, 32): ("sdc", [addr(pci(0, 0, 1, 1), "ide", "/dev/sdc", "QEMU_HARDDISK_QM00004", bus=1, unit=1)]),
    (8, 48): ("sdd", [addr(pci(0, 0, 7, 0), "scsi", "/dev/sdd", unit=4)]),
    (259, 0): ("nvme0n1", [addr(pci(0, 0, 6, 0), "nvme", "/dev/nvme0n1", "QEMU NVMe Ctrl_deadbeef")]),
    (259, 1): ("nvme0n1p1", [addr(pci(0, 0, 6, 0), "nvme", "/dev/nvme0n1p1", "QEMU NVMe Ctrl_deadbeef")]),
    (252, 32): ("vdc", [addr(NO_PCI, "virtio", "/dev/vdc",
                             ccw={"cssid": 0, "ssid": 0, "subchno": 2, "devno": 10})]),
    (7, 0): ("loop0", []),
    (7, 1): ("loop1", []),
    (1, 99): ("1:99", []),  # no /sys/dev/block entry (container): name is MAJ:MIN
}


def fake_info(dev: Any) -> blockdev.DeviceInfo:
    return blockdev.Sysfs(str(FAKE / "sys"), str(FAKE / "udev")).device_info(dev)


@pytest.mark.parametrize("dev", sorted(EXPECTED_FS))
def test_fsinfo_address_per_bus(dev: Any) -> None:
    info = fake_info(dev)
    name, disk = EXPECTED_FS[dev]
    assert info.name == name
    assert info.disks == disk
    # member order is the schema's (the JSON writer relies on insertion order)
    for d in info.disks:
        assert list(d)[:5] == ["pci-controller", "bus-type", "bus", "target", "unit"]
        assert list(d["pci-controller"]) == ["domain", "bus", "slot", "function"]
        assert all(type(v) is int for v in d["pci-controller"].values())


def test_virtual_device_recurses_into_slaves_prepending() -> None:
    slaves = [e.name for e in os.scandir(FAKE / "sys/devices/virtual/block/dm-0/slaves")]
    by_name = {"vda2": VDA2, "sdb": SDB}
    info = fake_info((253, 0))
    assert info.name == "dm-0"
    assert info.disks == [by_name[n] for n in reversed(slaves)]


def test_device_disks_and_unknown_bus(tmp_path: Path) -> None:
    assert blockdev.Sysfs(str(FAKE / "sys"), str(FAKE / "udev")).device_info((8, 48)).disks == EXPECTED_FS[(8, 48)][1]
    # A platform device: no recognised bus, but dev is known -> kept with bus-type unknown.
    ddir = tmp_path / "sys/devices/platform/foo/block/xda"
    ddir.mkdir(parents=True)
    (ddir / "uevent").write_text("MAJOR=9\nMINOR=1\nDEVNAME=xda\n")
    (tmp_path / "sys/dev/block").mkdir(parents=True)
    os.symlink("../../devices/platform/foo/block/xda", tmp_path / "sys/dev/block/9:1")
    got = blockdev.Sysfs(str(tmp_path / "sys"), str(tmp_path / "udev")).device_info((9, 1)).disks
    assert got == [addr(NO_PCI, "unknown", "/dev/xda")]
    (ddir / "uevent").write_text("MAJOR=9\nMINOR=1\n")  # no devnode, no serial -> dropped
    assert blockdev.Sysfs(str(tmp_path / "sys"), str(tmp_path / "udev")).device_info((9, 1)).disks == []


def test_ata_host_not_found_keeps_pci_address(tmp_path: Path) -> None:
    """qemu-ga fills the PCI address before failing the host lookup; dev keeps the entry."""
    ctrl = tmp_path / "sys/devices/pci0000:00/0000:00:1f.2"
    ddir = ctrl / "ata9/host2/target2:0:0/2:0:0:0/block/sdz"
    ddir.mkdir(parents=True)
    (ddir / "uevent").write_text("MAJOR=65\nMINOR=0\nDEVNAME=sdz\n")
    os.symlink("../../../bus/pci/drivers/ahci", ctrl / "driver")
    (tmp_path / "sys/dev/block").mkdir(parents=True)
    os.symlink(os.path.relpath(ddir, tmp_path / "sys/dev/block"), tmp_path / "sys/dev/block/65:0")
    got = blockdev.Sysfs(str(tmp_path / "sys"), "/nonexistent").device_info((65, 0)).disks
    assert got == [addr(pci(0, 0, 31, 2), "sata", "/dev/sdz", unit=0)]  # only ata9 exists
    for i in range(1, 9):  # ata1..ata8 fill the 8 slots qemu-ga reads, in some readdir order
        (ctrl / f"ata{i}").mkdir()
    first8 = [int(e.name[3:]) for e in os.scandir(ctrl) if e.name.startswith("ata")][:8]
    got = blockdev.Sysfs(str(tmp_path / "sys"), "/nonexistent").device_info((65, 0)).disks
    if 9 in first8:
        assert got == [addr(pci(0, 0, 31, 2), "sata", "/dev/sdz", unit=sorted(first8).index(9))]
    else:
        assert got == [addr(pci(0, 0, 31, 2), "unknown", "/dev/sdz")]


def test_hard_sysfs_error_is_worded_like_qemu(tmp_path: Path) -> None:
    vdir = tmp_path / "sys/devices/virtual/block/dm-7"
    (vdir / "slaves").mkdir(parents=True)
    (tmp_path / "sys/dev/block").mkdir(parents=True)
    os.symlink("../../devices/virtual/block/dm-7", tmp_path / "sys/dev/block/253:7")
    os.symlink("loop", vdir / "slaves" / "loop")  # self-referencing link -> realpath ELOOP
    with pytest.raises(blockdev.SysfsError) as exc:
        blockdev.Sysfs(str(tmp_path / "sys"), "/nonexistent").device_info((253, 7))
    assert exc.value.desc == f'realpath("{vdir}/slaves/loop"): Too many levels of symbolic links'


def test_realpath_matches_os_and_fails_like_c(tmp_path: Path) -> None:
    for p in ("/sys/block", "/proc/self", str(FAKE / "sys/dev/block/252:0")):
        assert blockdev.realpath(p) == os.path.realpath(p)
    with pytest.raises(FileNotFoundError):
        blockdev.realpath(str(tmp_path / "missing"))
    os.symlink("nowhere", tmp_path / "dangling")
    with pytest.raises(FileNotFoundError):
        blockdev.realpath(str(tmp_path / "dangling"))


# --- guest-get-disks ---------------------------------------------------------------

def test_get_disks_on_multibus_tree() -> None:
    calls: List[str] = []

    def smart(node: str) -> Dict[str, Any]:
        calls.append(node)
        return {"type": "nvme", "critical-warning": 0}

    got = disks.list_disks(str(FAKE / "sys"), str(FAKE / "udev"), smart=smart)
    names = [d["name"] for d in got]
    assert "/dev/loop0" not in names  # size 0
    assert sorted(names) == sorted([
        "/dev/vda", "/dev/vda1", "/dev/vda2", "/dev/vdb", "/dev/sda", "/dev/sdb", "/dev/sdc", "/dev/sdd",
        "/dev/nvme0n1", "/dev/nvme0n1p1", "/dev/vdc", "/dev/dm-0", "/dev/loop1"])
    by_name = {d["name"]: d for d in got}
    # partitions come before (were prepended after) their disk
    assert names.index("/dev/vda1") < names.index("/dev/vda") and names.index("/dev/vda2") < names.index("/dev/vda")
    assert by_name["/dev/vda1"] == {"name": "/dev/vda1", "partition": True, "dependencies": ["/dev/vda"]}
    assert by_name["/dev/vda"]["address"] == EXPECTED_FS[(252, 0)][1][0]
    assert by_name["/dev/vda"]["dependencies"] == []
    dm = by_name["/dev/dm-0"]
    slaves = [e.name for e in os.scandir(FAKE / "sys/devices/virtual/block/dm-0/slaves")]
    assert dm == {"name": "/dev/dm-0", "partition": False,
                  "dependencies": ["/dev/" + n for n in reversed(slaves)], "alias": "vg-root"}
    assert by_name["/dev/loop1"] == {"name": "/dev/loop1", "partition": False, "dependencies": []}
    assert by_name["/dev/nvme0n1"]["smart"] == {"type": "nvme", "critical-warning": 0}
    assert calls == ["/dev/nvme0n1"]  # only NVMe disks, never partitions
    for d in got:
        assert list(d) == [k for k in ("name", "partition", "dependencies", "address", "alias", "smart") if k in d]
    # reverse discovery order: the last /sys/block entry comes first
    block_order = [e.name for e in os.scandir(FAKE / "sys/block")
                   if e.name != "loop0"]
    disk_names = [n[5:] for n in names if not by_name[n]["partition"]]
    assert disk_names == list(reversed(block_order))


def test_get_disks_and_fsinfo_match_qemu_ga_capture() -> None:
    """host-virtio: captured on the dev machine with qemu-ga 7.2's replies."""
    expected = json.loads((HOST / "expected-disks.json").read_text())
    got = disks.list_disks(str(HOST / "sys"), str(HOST / "udev"))
    key = lambda d: d["name"]  # noqa: E731  (readdir order of the checkout differs)
    assert sorted(got, key=key) == sorted(expected, key=key)
    for fs in json.loads((HOST / "expected-fsinfo.json").read_text()):
        if not fs["devno"] or fs["devno"].startswith("0:"):
            continue
        major, minor = (int(x) for x in fs["devno"].split(":"))
        info = blockdev.Sysfs(str(HOST / "sys"), str(HOST / "udev")).device_info((major, minor))
        assert (info.name, info.disks) == (fs["name"], fs["disk"])


def test_get_disks_missing_sys_block(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        disks.list_disks(str(tmp_path), str(tmp_path))


# --- NVMe SMART ---------------------------------------------------------------------

def test_nvme_admin_command_layout() -> None:
    assert nvme.NVME_IOCTL_ADMIN_CMD == 0xC0484E41
    cmd = nvme.build_get_log_page(0x1234)
    assert len(cmd) == 72
    opcode, _flags, _r, nsid = struct.unpack_from("=BBHI", cmd, 0)
    assert (opcode, nsid) == (0x02, 0xFFFFFFFF)
    assert struct.unpack_from("=Q", cmd, 24)[0] == 0x1234  # addr
    assert struct.unpack_from("=I", cmd, 36)[0] == 512  # data_len
    assert struct.unpack_from("=I", cmd, 40)[0] == 0x02 | (1 << 15) | (127 << 16)  # cdw10


def test_nvme_smart_log_parsing() -> None:
    log_page = bytearray(512)
    struct.pack_into("<BHBBB", log_page, 0, 1, 310, 100, 10, 3)
    for i in range(10):
        struct.pack_into("<QQ", log_page, 32 + 16 * i, 1000 + i, i)
    got = nvme.parse_smart_log(bytes(log_page))
    assert list(got)[:6] == ["type", "critical-warning", "temperature", "available-spare",
                             "available-spare-threshold", "percentage-used"]
    assert got["temperature"] == 310 and got["percentage-used"] == 3
    assert got["data-units-read-lo"] == 1000 and got["data-units-read-hi"] == 0
    assert got["number-of-error-log-entries-lo"] == 1009 and got["number-of-error-log-entries-hi"] == 9
    assert len(got) == 1 + 5 + 20


def test_nvme_smart_on_non_nvme_device_is_absent() -> None:
    assert nvme.read_smart("/dev/null") is None  # ENOTTY: logged, no member
    assert nvme.read_smart("/nonexistent") is None


# --- diskstats ------------------------------------------------------------------------

def test_diskstats_field_counts() -> None:
    got = diskstats.read_diskstats(str(DATA / "diskstats/mixed-formats"))
    by = {e["name"]: e for e in got}
    assert [e["name"] for e in got] == ["loop0", "sda", "sda1", "sdb", "dm-0", "sdd", "vda"]  # sdc: 6 fields
    assert by["sda1"]["stats"] == {"read-sectors": 22, "read-ios": 21, "write-sectors": 24, "write-ios": 23}
    assert set(by["loop0"]["stats"]) == set(diskstats.SCHEMA_ORDER) - {
        "discard-sectors", "discard-ios", "discard-merges", "discard-ticks", "flush-ios", "flush-ticks"}
    assert by["sda"]["stats"]["discard-ticks"] == 15 and "flush-ios" not in by["sda"]["stats"]  # 18 fields
    assert by["dm-0"]["stats"]["discard-ticks"] == 65 and "flush-ios" not in by["dm-0"]["stats"]  # 19
    assert by["sdb"]["stats"]["weight-ticks"] == 41 and "discard-ios" not in by["sdb"]["stats"]  # 14
    assert by["vda"]["stats"]["flush-ios"] == 116 and by["vda"]["stats"]["flush-ticks"] == 117
    assert by["sdd"]["stats"] == {}  # 10 fields: qemu-ga reports an empty stats object
    assert by["sdb"]["stats"]["read-merges"] == 32
    for e in got:
        assert list(e) == ["name", "major", "minor", "stats"]
        assert list(e["stats"]) == [k for k in diskstats.SCHEMA_ORDER if k in e["stats"]]


@pytest.mark.parametrize("edit", [
    None, ("sda1", "sd\\a\"1"), ("sda1", "sd\u00e91"), ("sda1", "sd\x011"), (" 21 ", " 021 "),
    (" 21 ", " +21 "), (" 21 ", " 2x1 "), ("vda", "07vda"),
])
def test_diskstats_reply_is_what_the_writer_makes_of_the_entries(
        tmp_path: Path, ctx: Any, monkeypatch: pytest.MonkeyPatch, edit: Optional[Tuple[str, str]]) -> None:
    """Plain lines are written from their text, the others through the entries:
    the same bytes either way (quotes, non-ASCII, control characters, leading zeros, signs)."""
    text = (DATA / "diskstats/mixed-formats").read_text()
    if edit is not None:
        assert edit[0] in text
        text = text.replace(edit[0], edit[1], 1)
    (tmp_path / "diskstats").write_text(text)
    monkeypatch.setattr(storage, "DISKSTATS", str(tmp_path / "diskstats"))
    assert (diskstats.plain_lines(text) is not None) == (edit is None)
    assert dumps(storage.get_diskstats(ctx)) == dumps(diskstats.parse_diskstats(text))
    host = (DATA / "diskstats/host-diskstats").read_text()
    assert diskstats.plain_lines(host) is not None
    monkeypatch.setattr(storage, "DISKSTATS", str(DATA / "diskstats/host-diskstats"))
    assert dumps(storage.get_diskstats(ctx)) == dumps(diskstats.parse_diskstats(host))


def test_diskstats_host_capture_and_live() -> None:
    host = diskstats.read_diskstats(str(DATA / "diskstats/host-diskstats"))
    assert host and all(len(e["stats"]) == 17 for e in host)


#: /proc/diskstats columns after major, minor, name (Documentation/admin-guide/iostats.rst).
PROC_DISKSTATS_COLUMNS = (
    "read-ios", "read-merges", "read-sectors", "read-ticks", "write-ios", "write-merges",
    "write-sectors", "write-ticks", "ios-pgr", "total-ticks", "weight-ticks", "discard-ios",
    "discard-merges", "discard-sectors", "discard-ticks", "flush-ios", "flush-ticks")


def _proc_diskstats() -> Dict[Tuple[str, int, int], Dict[str, int]]:
    """(name, major, minor) -> the counters of each full (20-field) /proc/diskstats line."""
    out = {}
    with open("/proc/diskstats") as f:
        for line in f:
            fields = line.split()
            if len(fields) == 20:
                out[(fields[2], int(fields[0]), int(fields[1]))] = dict(
                    zip(PROC_DISKSTATS_COLUMNS, map(int, fields[3:])))
    return out


def test_diskstats_live_between_two_reads() -> None:
    """Each live counter lies between /proc/diskstats read before and after the call."""
    before = _proc_diskstats()
    live = {(e["name"], e["major"], e["minor"]): e["stats"] for e in diskstats.read_diskstats()}
    after = _proc_diskstats()
    # ios-pgr is the number in flight now, not a counter; a device detached and
    # re-attached meanwhile (other tests use loop devices) restarts at 0.
    monotonic = [k for k in PROC_DISKSTATS_COLUMNS if k != "ios-pgr"]
    stable = [dev for dev in before.keys() & after.keys()
              if all(before[dev][k] <= after[dev][k] for k in monotonic)]
    assert any(any(before[dev].values()) for dev in stable), "no live block device has counters"
    assert [dev for dev in live if dev in stable] == [dev for dev in before if dev in stable]  # file order
    for dev in stable:
        assert live[dev].keys() == before[dev].keys(), dev
        for key in monotonic:
            assert before[dev][key] <= live[dev][key] <= after[dev][key], (dev, key)


def test_diskstats_open_error_text(tmp_path: Path, ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError):
        diskstats.read_diskstats(str(tmp_path / "nope"))
    monkeypatch.setattr(storage, "DISKSTATS", str(tmp_path / "nope"))
    with pytest.raises(QgaError) as exc:
        storage.get_diskstats(ctx)
    assert exc.value.desc == f"Could not open '{tmp_path / 'nope'}': No such file or directory"


# --- bounded statvfs ------------------------------------------------------------------

def _returns(call: Callable[[], Any], what: str) -> Any:
    """``call()``'s result; fails if it is still running after a generous deadline."""
    result: List[Any] = []
    caller = threading.Thread(target=lambda: result.append(call()), daemon=True)
    caller.start()
    caller.join(60)
    assert not caller.is_alive(), what
    return result[0]


def test_bounded_statvfs_skips_hung_path_until_it_returns() -> None:
    release = threading.Event()
    calls: List[str] = []

    def fake(path: str) -> Any:
        calls.append(path)
        if path == "/hung":
            release.wait(600)  # far longer than the deadline of _returns
        return os.statvfs("/")

    def helpers() -> int:
        return sum(t.name == "qga-statvfs" for t in threading.enumerate())

    before = helpers()
    b = fsstat.BoundedStatvfs(timeout=0.2, func=fake)
    got = _returns(lambda: b.statvfs_many(["/a", "/hung", "/b"]), "statvfs_many waited for the hung call")
    # The call on /hung is still blocked: its helper was abandoned and a fresh one did /b.
    assert got["/hung"] is None and got["/a"] is not None and got["/b"] is not None
    stuck = b.hung["/hung"]
    assert stuck[0].progress == stuck[1] == 1
    assert calls == ["/a", "/hung", "/b"] and helpers() == before + 2
    calls.clear()
    b.timeout = 3600.0  # any wait on the hung path would now last an hour
    got = _returns(lambda: b.statvfs_many(["/hung", "/a"]), "statvfs_many waited on the path known to hang")
    # Not retried: the same hang is remembered, no helper was abandoned.
    assert calls == ["/a"] and got["/hung"] is None and got["/a"] is not None
    assert b.hung == {"/hung": stuck} and helpers() == before + 2
    release.set()
    deadline = time.monotonic() + 60
    while stuck[0].progress <= stuck[1]:
        assert time.monotonic() < deadline, "the released statvfs never finished"
        time.sleep(0.01)
    got = b.statvfs_many(["/hung"])
    assert got["/hung"] is not None and not b.hung
    b.close()


def test_bounded_statvfs_errors_and_single() -> None:
    b = fsstat.BoundedStatvfs()
    assert b.statvfs("/nonexistent-mountpoint") is None
    st = b.statvfs("/")
    assert st is not None and st.f_blocks == os.statvfs("/").f_blocks
    b.close()


# --- handlers -----------------------------------------------------------------------

class _St:
    f_blocks, f_bfree, f_bavail, f_frsize = 1000, 300, 250, 4096


def test_fsinfo_entry_formulas_and_order() -> None:
    sysfs = blockdev.Sysfs(str(FAKE / "sys"), str(FAKE / "udev"))
    entry = storage.fsinfo_entry(sysfs, Mount("/data", "xfs", 8, 16, "/dev/sdb"), _St())  # type: ignore[arg-type]
    assert entry == {"name": "sdb", "mountpoint": "/data", "type": "xfs", "used-bytes": 700 * 4096,
                     "total-bytes": 950 * 4096, "total-bytes-privileged": 1000 * 4096, "disk": [SDB]}
    assert list(entry) == ["name", "mountpoint", "type", "used-bytes", "total-bytes",
                           "total-bytes-privileged", "disk"]
    bare = storage.fsinfo_entry(sysfs, Mount("/x", "ext4", 1, 99, "/dev/x"), None)
    assert bare == {"name": "1:99", "mountpoint": "/x", "type": "ext4", "disk": []}


def test_fsinfo_entry_survives_sysfs_error(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    sysfs = blockdev.Sysfs(str(FAKE / "sys"), str(FAKE / "udev"))

    def broken(devpath: str, info: blockdev.DeviceInfo) -> None:
        info.name = "dm-3"
        raise blockdev.SysfsError("opendir", "/sys/x/slaves", 13)

    monkeypatch.setattr(sysfs, "walk", broken)
    with caplog.at_level(logging.WARNING):
        entry = storage.fsinfo_entry(sysfs, Mount("/srv", "ext4", 253, 3, "/dev/dm-3"), None)
    assert entry == {"name": "dm-3", "mountpoint": "/srv", "type": "ext4", "disk": []}
    assert 'opendir("/sys/x/slaves"): Permission denied' in caplog.text


def test_handlers_live(ctx: Any) -> None:
    fsinfo = storage.get_fsinfo(ctx)
    from qga.linux.mounts import list_mounts
    assert [e["mountpoint"] for e in fsinfo] == [m.dirname for m in reversed(list_mounts())]
    for e in fsinfo:
        assert isinstance(e["disk"], list)
        for k in ("used-bytes", "total-bytes", "total-bytes-privileged"):
            assert type(e.get(k, 0)) is int and e.get(k, 0) >= 0
    got = storage.get_disks(ctx)
    assert all(isinstance(d["name"], str) and isinstance(d["partition"], bool) for d in got)
    assert storage.get_diskstats(ctx)


@pytest.fixture
def ctx(tmp_path: Path) -> Any:
    from qga.config import Config
    from qga.context import Context
    from qga.loop import Loop
    from qga.registry import Registry
    from qga.state import StateDir
    return Context(Config(), StateDir(str(tmp_path)), Loop(), Registry([]))
